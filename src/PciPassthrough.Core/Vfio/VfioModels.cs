using System.Text.Json.Serialization;
using PciPassthrough.Devices;

namespace PciPassthrough.Vfio;

/// <summary>What the host needs for vfio-pci, and which part is missing.</summary>
public sealed record VfioAvailability(bool VfioPciDriver, bool DevVfio, bool IommuGroups)
{
    public bool Available => VfioPciDriver && DevVfio && IommuGroups;

    public IReadOnlyList<string> Missing =>
    [
        .. VfioPciDriver ? Array.Empty<string>() : ["vfio-pci driver (modprobe vfio-pci)"],
        .. DevVfio ? Array.Empty<string>() : ["/dev/vfio/vfio"],
        .. IommuGroups ? Array.Empty<string>() : ["IOMMU groups (enable the IOMMU: intel_iommu=on or amd_iommu=on)"],
    ];
}

/// <summary>A function of the IOMMU group that keeps the group from being passed through.</summary>
public sealed record BlockingDevice(string PciAddress, string? Driver, string ClassCode, string Reason);

/// <summary>A process holding a device node of a function.</summary>
public sealed record DeviceHolder(int Pid, string Command, string Path);

/// <summary>One kernel write of an operation, in order.</summary>
public sealed record KernelStep(int Order, string PciAddress, string Action, string Path, string Value, string Description);

/// <summary>A function of the IOMMU group and what the operation does to it.</summary>
public sealed record PlanMember(string PciAddress, string? CurrentDriver, string ClassCode, string Action);

/// <summary>The plan of a bind or unbind: what a dry run returns, and what the real run executes.</summary>
public sealed record OperationPlan
{
    public required string Operation { get; init; }

    public required string DeviceId { get; init; }

    public required string PciAddress { get; init; }

    public required int IommuGroup { get; init; }

    public required bool Group { get; init; }

    public required IReadOnlyList<KernelStep> Steps { get; init; }

    public required IReadOnlyList<PlanMember> Members { get; init; }

    public required IReadOnlyList<BlockingDevice> Blockers { get; init; }

    public required IReadOnlyList<DeviceHolder> Holders { get; init; }

    /// <summary>Services stopped for the length of the operation (they hold the device) and started again after it.</summary>
    public IReadOnlyList<string> ServicesToStop { get; init; } = [];

    /// <summary>The error code the real run would fail with before writing anything, or null.</summary>
    public string? WouldFailWith { get; init; }

    public bool WouldSucceed => WouldFailWith is null;

    /// <summary>The functions the run changes, with what to restore them to.</summary>
    [JsonIgnore]
    public IReadOnlyList<Registry.BoundFunction> Functions { get; init; } = [];
}

/// <summary>The outcome for one function of a restore.</summary>
public sealed record RestoreOutcome(PciAddress PciAddress, string? Expected, string? Actual, bool Restored, string? Problem);
