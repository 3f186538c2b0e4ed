using System.Globalization;
using System.Text.RegularExpressions;
using PciPassthrough.Devices;

namespace PciPassthrough.Sysfs;

/// <summary>
/// Every kernel path the daemon uses, built only from validated values (<see cref="PciAddress"/>,
/// group numbers, driver names that passed <see cref="IsValidDriverName"/>, process ids).
/// </summary>
public static partial class SysfsPaths
{
    public const string PciDevices = "/sys/bus/pci/devices";
    public const string PciDrivers = "/sys/bus/pci/drivers";
    public const string DriversProbe = "/sys/bus/pci/drivers_probe";
    public const string IommuGroups = "/sys/kernel/iommu_groups";
    public const string IommuClass = "/sys/class/iommu";
    public const string DevVfio = "/dev/vfio";
    public const string VfioContainer = "/dev/vfio/vfio";
    public const string Proc = "/proc";
    public const string KernelCmdline = "/proc/cmdline";
    public const string VfioPciDriver = "vfio-pci";

    private static readonly string[] AllowedPrefixes = ["/sys/", "/dev/", "/proc/"];

    [GeneratedRegex(@"\A[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}\z", RegexOptions.CultureInvariant)]
    private static partial Regex DriverNameRegex();

    public static string Device(PciAddress address) => $"{PciDevices}/{address}";

    public static string DeviceAttribute(PciAddress address, DeviceAttribute attribute) =>
        $"{PciDevices}/{address}/{AttributeName(attribute)}";

    public static string Driver(string driver) => $"{PciDrivers}/{CheckedDriver(driver)}";

    public static string DriverBind(string driver) => $"{PciDrivers}/{CheckedDriver(driver)}/bind";

    public static string DriverUnbind(string driver) => $"{PciDrivers}/{CheckedDriver(driver)}/unbind";

    public static string IommuGroup(int group) => $"{IommuGroups}/{CheckedGroup(group)}";

    public static string IommuGroupDevices(int group) => $"{IommuGroups}/{CheckedGroup(group)}/devices";

    public static string VfioGroup(int group) => $"{DevVfio}/{CheckedGroup(group)}";

    public static string ProcessDirectory(int pid) => $"{Proc}/{CheckedPid(pid)}";

    public static string ProcessFds(int pid) => $"{Proc}/{CheckedPid(pid)}/fd";

    public static string ProcessFd(int pid, int fd) =>
        $"{Proc}/{CheckedPid(pid)}/fd/{fd.ToString(CultureInfo.InvariantCulture)}";

    public static string ProcessStat(int pid) => $"{Proc}/{CheckedPid(pid)}/stat";

    public static string ProcessComm(int pid) => $"{Proc}/{CheckedPid(pid)}/comm";

    public static string ProcessCmdline(int pid) => $"{Proc}/{CheckedPid(pid)}/cmdline";

    /// <summary>Kernel driver names: module-like words, never a path.</summary>
    public static bool IsValidDriverName(string? driver) => driver is not null && DriverNameRegex().IsMatch(driver);

    /// <summary>The last component of a link target such as <c>../../../bus/pci/drivers/e1000e</c>.</summary>
    public static string LastSegment(string linkTarget) =>
        linkTarget.TrimEnd('/')[(linkTarget.TrimEnd('/').LastIndexOf('/') + 1)..];

    /// <summary>Refuses any path that is not a plain absolute path under /sys, /dev or /proc.</summary>
    public static void EnsureSafe(string path)
    {
        if (!AllowedPrefixes.Any(p => path.StartsWith(p, StringComparison.Ordinal) || path == p[..^1]) ||
            path.Contains("/../", StringComparison.Ordinal) || path.EndsWith("/..", StringComparison.Ordinal) ||
            path.Contains("/./", StringComparison.Ordinal) || path.Contains("//", StringComparison.Ordinal) ||
            path.Contains('\0', StringComparison.Ordinal))
        {
            throw new ArgumentException("Refusing a kernel path that is not a plain path under /sys, /dev or /proc",
                nameof(path));
        }
    }

    private static string AttributeName(DeviceAttribute attribute) => attribute switch
    {
        Sysfs.DeviceAttribute.Vendor => "vendor",
        Sysfs.DeviceAttribute.Device => "device",
        Sysfs.DeviceAttribute.Class => "class",
        Sysfs.DeviceAttribute.SubsystemVendor => "subsystem_vendor",
        Sysfs.DeviceAttribute.SubsystemDevice => "subsystem_device",
        Sysfs.DeviceAttribute.NumaNode => "numa_node",
        Sysfs.DeviceAttribute.Driver => "driver",
        Sysfs.DeviceAttribute.DriverOverride => "driver_override",
        Sysfs.DeviceAttribute.IommuGroup => "iommu_group",
        Sysfs.DeviceAttribute.Reset => "reset",
        Sysfs.DeviceAttribute.ResetMethod => "reset_method",
        Sysfs.DeviceAttribute.Revision => "revision",
        Sysfs.DeviceAttribute.Modalias => "modalias",
        Sysfs.DeviceAttribute.BootVga => "boot_vga",
        _ => throw new ArgumentOutOfRangeException(nameof(attribute)),
    };

    private static string CheckedDriver(string driver) =>
        IsValidDriverName(driver) ? driver : throw new ArgumentException("Invalid driver name", nameof(driver));

    private static string CheckedGroup(int group) => group >= 0
        ? group.ToString(CultureInfo.InvariantCulture)
        : throw new ArgumentOutOfRangeException(nameof(group));

    private static string CheckedPid(int pid) => pid > 0
        ? pid.ToString(CultureInfo.InvariantCulture)
        : throw new ArgumentOutOfRangeException(nameof(pid));
}

/// <summary>The per-device sysfs attributes the daemon reads or writes.</summary>
public enum DeviceAttribute
{
    Vendor,
    Device,
    Class,
    SubsystemVendor,
    SubsystemDevice,
    NumaNode,
    Driver,
    DriverOverride,
    IommuGroup,
    Reset,
    ResetMethod,
    Revision,
    Modalias,
    BootVga,
}
