using PciPassthrough.Devices;
using PciPassthrough.Simulation;

namespace PciPassthrough.Tests.TestDoubles;

/// <summary>
/// Hand edits of sysfs-shaped trees, for shapes <see cref="SysfsTreeBuilder"/> does not make:
/// missing links, dangling links, junk entries, unreadable attributes, devices that went away.
/// </summary>
public static class SysfsTrees
{
    public static string PciDevices(string root) => Path.Combine(root, "sys", "bus", "pci", "devices");

    /// <summary>The real directory behind <c>sys/bus/pci/devices/&lt;address&gt;</c>.</summary>
    public static string DeviceDirectory(string root, string address)
    {
        var link = Path.Combine(PciDevices(root), address);
        var target = new FileInfo(link).LinkTarget ?? throw new InvalidOperationException($"{link} is not a link");
        return Path.GetFullPath(Path.Combine(Path.GetDirectoryName(link)!, target));
    }

    public static string Attribute(string root, string address, string attribute) =>
        Path.Combine(DeviceDirectory(root, address), attribute);

    public static void WriteAttribute(string root, string address, string attribute, string value) =>
        File.WriteAllText(Attribute(root, address, attribute), value);

    /// <summary>Removes a device the way a hot unplug does: its directory and its bus link go away.</summary>
    public static void Unplug(string root, string address)
    {
        var directory = DeviceDirectory(root, address);
        File.Delete(Path.Combine(PciDevices(root), address));
        Directory.Delete(directory, recursive: true);
    }

    /// <summary>Replaces (or creates) a relative symbolic link, as sysfs makes them.</summary>
    public static void Link(string linkPath, string target)
    {
        if (new FileInfo(linkPath).LinkTarget is not null || File.Exists(linkPath))
        {
            File.Delete(linkPath);
        }

        File.CreateSymbolicLink(linkPath, Path.GetRelativePath(Path.GetDirectoryName(linkPath)!, target));
    }

    public static SimulatedDeviceSpec Function(string address, int vendor = 0x8086, int device = 0x1533, int classCode = 0x020000,
        string? driver = null, int? group = null, int numa = -1, string? parent = null) => new()
        {
            Address = PciAddress.Parse(address),
            VendorId = vendor,
            DeviceId = device,
            ClassCode = classCode,
            SubsystemVendorId = vendor,
            SubsystemDeviceId = device,
            Driver = driver,
            IommuGroup = group,
            NumaNode = numa,
            Parent = parent is null ? null : PciAddress.Parse(parent),
        };
}
