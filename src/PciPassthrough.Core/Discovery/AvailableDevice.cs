using PciPassthrough.Devices;

namespace PciPassthrough.Discovery;

/// <summary>A PCI function as the host shows it right now (sysfs plus pci.ids names).</summary>
public sealed record AvailableDevice
{
    public required PciAddress PciAddress { get; init; }

    public required int VendorId { get; init; }

    public required int DeviceId { get; init; }

    public int? SubsystemVendorId { get; init; }

    public int? SubsystemDeviceId { get; init; }

    public required PciClassCode ClassCode { get; init; }

    public string? VendorName { get; init; }

    public string? DeviceName { get; init; }

    public string? SubsystemName { get; init; }

    public string? ClassName { get; init; }

    /// <summary>The kernel's IOMMU group, or -1 when the host has no IOMMU.</summary>
    public required int IommuGroup { get; init; }

    /// <summary>Every function in the group (this one and bridges included), ordered by address.</summary>
    public required IReadOnlyList<PciAddress> IommuGroupMembers { get; init; }

    /// <summary>The driver bound now, or null when none is.</summary>
    public string? CurrentDriver { get; init; }

    public int? NumaNode { get; init; }

    public DeviceType Type => DeviceTypes.FromClassCode(ClassCode);

    public bool IsBridge => ClassCode.IsBridge;
}
