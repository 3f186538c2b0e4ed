using PciPassthrough.Devices;
using PciPassthrough.Discovery;
using PciPassthrough.Journal;
using PciPassthrough.Lifecycle;
using PciPassthrough.Registry;
using PciPassthrough.Vfio;

namespace PciPassthrough.Reconcile;

/// <summary>The kinds of reconcile actions (the contract's list).</summary>
public static class ReconcileKinds
{
    public const string OrphanCleared = "orphan_cleared";
    public const string DriverRestored = "driver_restored";
    public const string JournalRolledBack = "journal_rolled_back";
    public const string JournalCompleted = "journal_completed";
    public const string Missing = "missing";
    public const string Changed = "changed";
    public const string GroupRenumbered = "group_renumbered";
    public const string Quarantined = "quarantined";
    public const string StrandedOnVfio = "stranded_on_vfio";
}

/// <summary>How a planned action is carried out.</summary>
public enum Remedy
{
    /// <summary>Report only.</summary>
    None,

    /// <summary>Finish or undo an unfinished operation from its journal entry.</summary>
    RecoverJournal,

    /// <summary>Forget an attachment whose instance is gone.</summary>
    ClearAttachment,

    /// <summary>Return the device (and what was bound with it) to its original driver.</summary>
    RestoreDriver,

    /// <summary>Record the IOMMU group number the kernel shows now.</summary>
    UpdateGroup,
}

/// <summary>What the host and the records say about one registered device, read at one moment.</summary>
/// <param name="Record">The device's record.</param>
/// <param name="Live">The function at the address now; null when nothing is there.</param>
/// <param name="Liveness">What liveness says about the instance holding it; null when not attached.</param>
/// <param name="VfioHolders">Processes holding the device's <c>/dev/vfio/N</c>.</param>
public sealed record DeviceObservation(
    DeviceRecord Record,
    AvailableDevice? Live,
    InstanceState? Liveness,
    IReadOnlyList<DeviceHolder> VfioHolders);

/// <summary>Everything a reconcile decides from.</summary>
/// <param name="Devices">Every registered device, observed.</param>
/// <param name="Journal">Operations a crash (or a hung write) left unfinished.</param>
/// <param name="Drivers">The driver of every function the devices and the journal name (null: none).</param>
/// <param name="RestoreStranded">Reconcile:RestoreStranded.</param>
/// <param name="Startup">The start-up reconcile: unfinished operations of quarantined devices are recovered too.</param>
public sealed record ReconcileInput(
    IReadOnlyList<DeviceObservation> Devices,
    IReadOnlyList<JournalEntry> Journal,
    IReadOnlyDictionary<PciAddress, string?> Drivers,
    bool RestoreStranded,
    bool Startup);

/// <summary>One thing a reconcile found, and what it does about it.</summary>
public sealed record PlannedAction(string DeviceId, PciAddress PciAddress, string Kind, string Detail, Remedy Remedy)
{
    /// <summary>The journal entry to recover, for <see cref="Remedy.RecoverJournal"/>.</summary>
    public JournalEntry? Entry { get; init; }

    /// <summary>The attachment to clear (so a newer one is never cleared by mistake), for <see cref="Remedy.ClearAttachment"/>.</summary>
    public AttachmentRecord? Attachment { get; init; }

    /// <summary>The group number to record, for <see cref="Remedy.UpdateGroup"/>.</summary>
    public int? IommuGroup { get; init; }
}

/// <summary>The reconcile report (the contract's shape).</summary>
public sealed record ReconcileReport
{
    public required DateTime StartedAt { get; init; }

    public required DateTime FinishedAt { get; init; }

    public required bool DryRun { get; init; }

    public required IReadOnlyList<ReconcileActionReport> Actions { get; init; }

    public required IReadOnlyList<SuspiciousProcessReport> SuspiciousProcesses { get; init; }
}

public sealed record ReconcileActionReport(string DeviceId, string PciAddress, string Kind, string Detail, bool Applied);

public sealed record SuspiciousProcessReport(int Pid, string Command, string VfioGroup, string Reason);
