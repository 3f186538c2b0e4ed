using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using PciPassthrough.Devices;

namespace PciPassthrough.Tests.TestDoubles;

/// <summary>One function as <c>lspci -D -nn [-k]</c> prints it.</summary>
public sealed record LspciDevice(
    PciAddress Address,
    int ClassCode16,
    string Names,
    int VendorId,
    int DeviceId,
    string? Driver,
    string? SubsystemNames,
    int? SubsystemVendorId,
    int? SubsystemDeviceId,
    int? IommuGroup)
{
    public bool IsBridge => (ClassCode16 >> 8) == 0x06;
}

/// <summary>Runs pciutils' lspci, the reference the daemon's discovery is compared with.</summary>
public static partial class Lspci
{
    public const string PciIdsPath = "/usr/share/misc/pci.ids";

    private static readonly string[] SearchPath = ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin", "/usr/local/sbin"];

    [GeneratedRegex(@"^(?<addr>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) (?<class>.*?) \[(?<cc>[0-9a-f]{4})\]: (?<names>.*) \[(?<v>[0-9a-f]{4}):(?<d>[0-9a-f]{4})\](?: \(rev [0-9a-f]{2}\))?(?: \(prog-if .*\))?$")]
    private static partial Regex DeviceLine();

    [GeneratedRegex(@"^\tSubsystem: (?<names>.*) \[(?<v>[0-9a-f]{4}):(?<d>[0-9a-f]{4})\]$")]
    private static partial Regex SubsystemLine();

    [GeneratedRegex(@"^\tKernel driver in use: (?<driver>\S+)$")]
    private static partial Regex DriverLine();

    [GeneratedRegex(@"^\tIOMMU group: (?<group>\d+)$")]
    private static partial Regex IommuLine();

    /// <summary>The lspci executable; fails the test (never skips it) when pciutils is not installed.</summary>
    public static string Executable()
    {
        var path = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Concat(SearchPath)
            .Select(dir => Path.Combine(dir, "lspci"))
            .FirstOrDefault(File.Exists);
        if (path is null)
        {
            Assert.Fail("lspci was not found: install pciutils (apt-get install pciutils) to run this test.");
        }

        return path;
    }

    public static string Run(params string[] arguments)
    {
        var start = new ProcessStartInfo(Executable())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start) ?? throw new InvalidOperationException("lspci did not start");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"lspci {string.Join(' ', arguments)} exited with {process.ExitCode}: {stderr.Result}");
        return stdout.Result;
    }

    /// <summary>Parses the output of <c>lspci -D -nn</c>, with <c>-k</c> and <c>-v</c> lines when present.</summary>
    public static IReadOnlyList<LspciDevice> Parse(string output)
    {
        var devices = new List<LspciDevice>();
        foreach (var line in output.Split('\n'))
        {
            if (line.Length == 0)
            {
                continue;
            }

            if (DeviceLine().Match(line) is { Success: true } m)
            {
                devices.Add(new LspciDevice(PciAddress.Parse(m.Groups["addr"].Value), Hex(m.Groups["cc"].Value),
                    m.Groups["names"].Value, Hex(m.Groups["v"].Value), Hex(m.Groups["d"].Value), null, null, null, null, null));
                continue;
            }

            Assert.True(line[0] == '\t', $"unexpected lspci line: {line}");
            Assert.NotEmpty(devices);
            var last = devices[^1];
            if (SubsystemLine().Match(line) is { Success: true } s)
            {
                devices[^1] = last with
                {
                    SubsystemNames = s.Groups["names"].Value,
                    SubsystemVendorId = Hex(s.Groups["v"].Value),
                    SubsystemDeviceId = Hex(s.Groups["d"].Value),
                };
            }
            else if (DriverLine().Match(line) is { Success: true } k)
            {
                devices[^1] = last with { Driver = k.Groups["driver"].Value };
            }
            else if (IommuLine().Match(line) is { Success: true } g)
            {
                devices[^1] = last with { IommuGroup = int.Parse(g.Groups["group"].Value, System.Globalization.CultureInfo.InvariantCulture) };
            }
        }

        return devices;
    }

    /// <summary>
    /// What lspci prints for a vendor/device pair: "vendor device", "vendor Device" when the device is
    /// not listed, "Device" when the vendor is not listed (libpci's fallbacks).
    /// </summary>
    public static string NamesText(string? vendorName, string? deviceName) =>
        vendorName is null ? "Device" : deviceName is null ? $"{vendorName} Device" : $"{vendorName} {deviceName}";

    private static int Hex(string text) => int.Parse(text, System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture);
}
