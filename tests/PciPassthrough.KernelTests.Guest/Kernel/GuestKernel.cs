using System.Diagnostics;
using System.Globalization;
using PciPassthrough.KernelTests.Guest.Differential;
using PciPassthrough.Sysfs;

namespace PciPassthrough.KernelTests.Guest.Kernel;

/// <summary>
/// Direct access to the guest's real kernel, independent of the daemon: what cases compare the
/// daemon's answers with, and the raw sysfs writes that put devices back where they booted.
/// </summary>
public sealed class GuestKernel
{
    private const string Devices = "/sys/bus/pci/devices";

    /// <summary>The daemon's own sysfs primitive over the real root: one write(2), never O_CREAT.</summary>
    public LinuxSysfs Sysfs { get; } = new("/");

    /// <summary>The state at agent start: what every case is restored to.</summary>
    public SysfsState Boot { get; private set; } = null!;

    public void CaptureBoot() => Boot = Capture();

    public SysfsState Capture() => SysfsState.Capture(Sysfs);

    public static string DevicePath(string address) => $"{Devices}/{address}";

    public string? DriverOf(string address) =>
        Sysfs.ReadLink($"{Devices}/{address}/driver") is { } link ? SysfsPaths.LastSegment(link) : null;

    /// <summary><c>driver_override</c> as read (<c>(null)</c> when unset), without the trailing newline.</summary>
    public string? OverrideOf(string address) => SysfsState.Chomp(Sysfs.ReadText($"{Devices}/{address}/driver_override"));

    public int GroupOf(string address)
    {
        var link = Sysfs.ReadLink($"{Devices}/{address}/iommu_group")
            ?? throw new InvalidOperationException($"{address} has no iommu_group link");
        return int.Parse(SysfsPaths.LastSegment(link), CultureInfo.InvariantCulture);
    }

    public IReadOnlyList<string> GroupMembers(int group) =>
        Sysfs.ListDirectory($"/sys/kernel/iommu_groups/{group}/devices").Order(StringComparer.Ordinal).ToList();

    public IReadOnlyList<string> DevVfio() => Sysfs.ListDirectory("/dev/vfio").Order(StringComparer.Ordinal).ToList();

    public static bool VfioGroupNodeExists(int group) => Path.Exists($"/dev/vfio/{group}");

    /// <summary>Entries of /sys/class/net whose <c>device</c> link resolves to the function's directory.</summary>
    public static IReadOnlyList<string> NetInterfacesOf(string address)
    {
        var function = Libc.RealPath(DevicePath(address));
        var names = new List<string>();
        if (function is null || !Directory.Exists("/sys/class/net"))
        {
            return names;
        }

        foreach (var entry in Directory.EnumerateFileSystemEntries("/sys/class/net"))
        {
            if (Libc.RealPath(Path.Combine(entry, "device")) == function)
            {
                names.Add(Path.GetFileName(entry));
            }
        }

        names.Sort(StringComparer.Ordinal);
        return names;
    }

    /// <summary>The kernel log (dmesg) as lines; the evidence of what the kernel did during a case.</summary>
    public static IReadOnlyList<string> KernelLog()
    {
        try
        {
            var start = new ProcessStartInfo("dmesg") { RedirectStandardOutput = true, UseShellExecute = false };
            using var process = Process.Start(start);
            if (process is null)
            {
                return [];
            }

            var lines = process.StandardOutput.ReadToEnd().Split('\n', StringSplitOptions.RemoveEmptyEntries);
            process.WaitForExit();
            return lines;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return ["(dmesg is not available)"];
        }
    }

    /// <summary>Waits until the function's driver is <paramref name="driver"/> (null: none).</summary>
    public async Task<bool> WaitForDriverAsync(string address, string? driver, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            if (DriverOf(address) == driver)
            {
                return true;
            }

            if (clock.Elapsed > timeout)
            {
                return false;
            }

            await Task.Delay(20);
        }
    }

    /// <summary>
    /// Puts every function back on the driver, override and reset methods it booted with, with
    /// raw sysfs writes (the daemon is not involved). Returns what had to be done; throws when a
    /// function cannot be restored.
    /// </summary>
    public async Task<IReadOnlyList<string>> RestoreBootStateAsync()
    {
        var done = new List<string>();
        var now = Capture();
        foreach (var (address, boot) in Boot.Devices)
        {
            if (Topology.HarnessDevices.Contains(address) || now.Devices.GetValueOrDefault(address) is not { } current)
            {
                continue;
            }

            var path = DevicePath(address);
            if (current.DriverOverride != boot.DriverOverride)
            {
                Sysfs.Write($"{path}/driver_override", "\n");
                done.Add($"{address}: cleared driver_override ({current.DriverOverride})");
            }

            if (current.ResetMethod is not null && boot.ResetMethod is not null && current.ResetMethod != boot.ResetMethod)
            {
                Sysfs.Write($"{path}/reset_method", "default");
                done.Add($"{address}: reset_method back to default (was \"{current.ResetMethod}\")");
            }

            if (current.Driver == boot.Driver)
            {
                continue;
            }

            if (current.Driver is { } other)
            {
                Sysfs.Write($"/sys/bus/pci/drivers/{other}/unbind", address);
                done.Add($"{address}: unbound from {other}");
            }

            if (boot.Driver is not { } original)
            {
                continue;
            }

            Sysfs.Write(SysfsPaths.DriversProbe, address);
            if (!await WaitForDriverAsync(address, original, TimeSpan.FromSeconds(5)))
            {
                if (DriverOf(address) is { } wrong)
                {
                    Sysfs.Write($"/sys/bus/pci/drivers/{wrong}/unbind", address);
                }

                Sysfs.Write($"/sys/bus/pci/drivers/{original}/bind", address);
                if (!await WaitForDriverAsync(address, original, TimeSpan.FromSeconds(5)))
                {
                    throw new InvalidOperationException($"{address} could not be returned to {original} (on {DriverOf(address) ?? "no driver"})");
                }
            }

            done.Add($"{address}: back on {original}");
        }

        return done;
    }
}
