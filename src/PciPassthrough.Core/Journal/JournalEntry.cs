using PciPassthrough.Devices;
using PciPassthrough.Registry;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Journal;

/// <summary>
/// The intent of an operation in flight, written durably before each kernel write: enough to
/// finish or undo it after a crash (which device, which functions and what they had before).
/// </summary>
public sealed record JournalEntry
{
    public required string OperationId { get; init; }

    /// <summary>bind, unbind, attach, detach, delete or reset.</summary>
    public required string Operation { get; init; }

    public required string DeviceId { get; init; }

    public required PciAddress PciAddress { get; init; }

    public bool Group { get; init; }

    /// <summary>Every function the operation changes, with its driver and override before the operation.</summary>
    public required IReadOnlyList<BoundFunction> Functions { get; init; }

    /// <summary>The instance an attach is for (attach binds first when needed).</summary>
    public string? InstanceId { get; init; }

    /// <summary>Services the operation stopped and must start again, however it ends.</summary>
    public IReadOnlyList<string> StoppedServices { get; init; } = [];

    /// <summary>A reset with a chosen method: the device's <c>reset_method</c> before, to put back.</summary>
    public string? PreviousResetMethods { get; init; }

    /// <summary>1-based number of the step about to run; 0 before the first.</summary>
    public int Step { get; init; }

    public string? StepDescription { get; init; }

    public required DateTime StartedAt { get; init; }

    public DateTime UpdatedAt { get; init; }

    /// <summary>
    /// Whether an interrupted bind or attach got far enough to be finished rather than undone:
    /// every function on vfio-pci and, for an attach, its instance on record (short of that,
    /// nobody was told the device is theirs).
    /// </summary>
    public bool BindReachedItsEnd(Func<PciAddress, string?> driverOf, AttachmentRecord? attachment) =>
        Functions.Count > 0 &&
        Functions.All(f => driverOf(f.PciAddress) == SysfsPaths.VfioPciDriver) &&
        (Operation != "attach" || attachment?.InstanceId == InstanceId);
}
