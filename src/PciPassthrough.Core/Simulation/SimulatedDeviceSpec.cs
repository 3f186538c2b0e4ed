using PciPassthrough.Devices;

namespace PciPassthrough.Simulation;

/// <summary>One PCI function of a synthetic or simulated host.</summary>
public sealed record SimulatedDeviceSpec
{
    public required PciAddress Address { get; init; }

    public required int VendorId { get; init; }

    public required int DeviceId { get; init; }

    /// <summary>24-bit class code, e.g. 0x030000 for a VGA controller.</summary>
    public required int ClassCode { get; init; }

    public int SubsystemVendorId { get; init; }

    public int SubsystemDeviceId { get; init; }

    public int Revision { get; init; } = 0xa1;

    /// <summary>The driver bound at boot, null for none.</summary>
    public string? Driver { get; init; }

    /// <summary>IOMMU group, null when the host has no IOMMU.</summary>
    public int? IommuGroup { get; init; }

    /// <summary>-1 for no NUMA affinity, as the kernel reports it.</summary>
    public int NumaNode { get; init; } = -1;

    /// <summary>The bridge this function sits behind; null for a function on a root bus.</summary>
    public PciAddress? Parent { get; init; }

    /// <summary>The VGA device the firmware booted with (the host console): sysfs shows <c>boot_vga</c> = 1.</summary>
    public bool BootVga { get; init; }

    /// <summary>Reset methods the function supports, in the kernel's order; empty for none.</summary>
    public IReadOnlyList<string> ResetMethods { get; init; } = ["flr", "bus"];

    /// <summary>Device nodes the driver creates for this function (e.g. <c>/dev/nvidia0</c>), for holder scans.</summary>
    public IReadOnlyList<string> DriverDeviceNodes { get; init; } = [];

    public bool IsBridge => ((ClassCode >> 16) & 0xff) == 0x06;

    public bool IsPciToPciBridge => (ClassCode >> 8) == 0x0604;
}
