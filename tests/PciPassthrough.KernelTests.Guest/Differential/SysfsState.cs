using System.Text.Json.Serialization;
using PciPassthrough.Devices;
using PciPassthrough.Sysfs;

namespace PciPassthrough.KernelTests.Guest.Differential;

/// <summary>What the kernel shows for one PCI function after a write.</summary>
/// <param name="Driver">The name the <c>driver</c> link points to, or null when unbound.</param>
/// <param name="DriverOverride"><c>driver_override</c> as read, without its trailing newline.</param>
/// <param name="ResetMethod"><c>reset_method</c> as read, without its trailing newline; null when the file is absent.</param>
public sealed record FunctionState(string? Driver, string? DriverOverride, string? ResetMethod);

/// <summary>
/// The driver-related state of every PCI function plus the entries of <c>/dev/vfio</c>, read
/// through <see cref="ISysfs"/>: the same code reads the guest's real kernel and, on the host,
/// the simulated kernel, so the two are compared field by field.
/// </summary>
public sealed record SysfsState
{
    public required SortedDictionary<string, FunctionState> Devices { get; init; }

    [JsonPropertyName("dev_vfio")]
    public required IReadOnlyList<string> DevVfio { get; init; }

    public static SysfsState Capture(ISysfs sysfs)
    {
        var devices = new SortedDictionary<string, FunctionState>(StringComparer.Ordinal);
        foreach (var entry in sysfs.ListDirectory(SysfsPaths.PciDevices))
        {
            if (!PciAddress.TryParse(entry, out var address) || entry != address.ToString())
            {
                continue;
            }

            var driver = sysfs.ReadLink(SysfsPaths.DeviceAttribute(address, DeviceAttribute.Driver)) is { } link
                ? SysfsPaths.LastSegment(link)
                : null;
            devices[entry] = new FunctionState(
                driver,
                Chomp(sysfs.ReadText(SysfsPaths.DeviceAttribute(address, DeviceAttribute.DriverOverride))),
                Chomp(sysfs.ReadText(SysfsPaths.DeviceAttribute(address, DeviceAttribute.ResetMethod))));
        }

        var vfio = sysfs.ListDirectory(SysfsPaths.DevVfio).Order(StringComparer.Ordinal).ToList();
        return new SysfsState { Devices = devices, DevVfio = vfio };
    }

    /// <summary>Every field that differs, as "device field: left=… right=…" lines.</summary>
    public IReadOnlyList<string> Differences(SysfsState other, string left, string right)
    {
        var differences = new List<string>();
        foreach (var address in Devices.Keys.Union(other.Devices.Keys).Order(StringComparer.Ordinal))
        {
            var a = Devices.GetValueOrDefault(address);
            var b = other.Devices.GetValueOrDefault(address);
            if (a is null || b is null)
            {
                differences.Add($"{address}: present in {(a is null ? right : left)} only");
                continue;
            }

            Compare(differences, $"{address} driver", a.Driver, b.Driver, left, right);
            Compare(differences, $"{address} driver_override", a.DriverOverride, b.DriverOverride, left, right);
            Compare(differences, $"{address} reset_method", a.ResetMethod, b.ResetMethod, left, right);
        }

        Compare(differences, "/dev/vfio", string.Join(" ", DevVfio), string.Join(" ", other.DevVfio), left, right);
        return differences;
    }

    /// <summary>The file's text without the one trailing newline the kernel adds; null when absent.</summary>
    public static string? Chomp(string? text) => text is null ? null : text.EndsWith('\n') ? text[..^1] : text;

    private static void Compare(List<string> differences, string field, string? a, string? b, string left, string right)
    {
        if (!string.Equals(a, b, StringComparison.Ordinal))
        {
            differences.Add($"{field}: {left}={Show(a)} {right}={Show(b)}");
        }
    }

    private static string Show(string? value) =>
        value is null ? "(absent)" : "\"" + value.Replace("\n", "\\n", StringComparison.Ordinal).Replace("\0", "\\0", StringComparison.Ordinal) + "\"";
}
