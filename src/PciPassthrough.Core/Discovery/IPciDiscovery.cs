using PciPassthrough.Devices;

namespace PciPassthrough.Discovery;

/// <summary>Reads PCI devices and IOMMU groups from sysfs.</summary>
public interface IPciDiscovery
{
    /// <summary>Every PCI function except bridges (class 0x06), ordered by address.</summary>
    IReadOnlyList<AvailableDevice> DiscoverAvailableDevices();

    /// <summary>One function (bridges included), or null when no such device exists.</summary>
    AvailableDevice? GetDeviceInfo(PciAddress address);

    /// <summary>The members of an IOMMU group, ordered; empty for a group that does not exist.</summary>
    IReadOnlyList<PciAddress> GetIommuGroupDevices(int iommuGroup);

    /// <summary>The IOMMU group of a device, -1 without an IOMMU, null when the device does not exist.</summary>
    int? GetIommuGroup(PciAddress address);

    /// <summary>The driver bound to a device, or null.</summary>
    string? GetCurrentDriver(PciAddress address);

    /// <summary>The device's sysfs directory as the kernel names it (what a VMM takes as <c>path=</c>).</summary>
    string GetDeviceSysfsPath(PciAddress address);
}
