using Microsoft.Extensions.Logging;
using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Journal;
using PciPassthrough.Vfio;

namespace PciPassthrough.Registry;

/// <summary>What start-up recovery (or a reset) did about an unfinished operation.</summary>
/// <remarks>Kind is <c>journal_completed</c>, <c>journal_rolled_back</c> or <c>quarantined</c>.</remarks>
public sealed record RecoveryAction(string DeviceId, string PciAddress, string Operation, string Kind, string Detail);

public sealed partial class DeviceManager
{
    public const string JournalCompleted = "journal_completed";
    public const string JournalRolledBack = "journal_rolled_back";
    public const string QuarantinedKind = "quarantined";

    /// <summary>
    /// Finishes or undoes every operation the journal shows unfinished, so that records and the
    /// kernel agree and no function is left without a driver it had. An interrupted bind whose
    /// every function reached vfio-pci is finished; any other interrupted bind is undone; an
    /// interrupted unbind (or delete, or release) is finished. Safe to run again after a crash
    /// during recovery itself: an entry is removed only once its device is consistent.
    /// </summary>
    public async Task<IReadOnlyList<RecoveryAction>> RecoverJournalAsync(CancellationToken cancellationToken = default)
    {
        var actions = new List<RecoveryAction>();
        foreach (var entry in journal.Pending())
        {
            if (await RecoverEntryAsync(entry, cancellationToken) is { } action)
            {
                actions.Add(action);
            }
        }

        return actions;
    }

    /// <summary>
    /// Recovers one unfinished operation under its devices' locks; null when it ended meanwhile
    /// (an operation still running holds those locks, and removes its entry before letting go).
    /// </summary>
    public async Task<RecoveryAction?> RecoverEntryAsync(JournalEntry entry, CancellationToken cancellationToken = default)
    {
        var lockSet = entry.Functions.Select(f => f.PciAddress).Append(entry.PciAddress).ToList();
        if (registry.Find(entry.DeviceId) is { } record)
        {
            lockSet.AddRange(LockSet(record));
        }

        using var held = await _locks.AcquireAsync(lockSet, cancellationToken);
        return journal.IsPending(entry.OperationId) ? await RecoverLockedAsync(entry, cancellationToken) : null;
    }

    private async Task<RecoveryAction> RecoverLockedAsync(JournalEntry entry, CancellationToken cancellationToken)
    {
        var record = registry.Find(entry.DeviceId);
        var where = $"step {entry.Step} ({entry.StepDescription ?? "before the first step"})";
        try
        {
            RecoveryAction action;
            if (entry.Operation is "bind" or "attach")
            {
                action = await RecoverBindAsync(entry, record, where, cancellationToken);
            }
            else if (entry.Operation is "unbind" or "delete" or "detach")
            {
                action = await RecoverRestoreAsync(entry, record, where, cancellationToken);
            }
            else if (entry.Operation == "reset" && entry.PreviousResetMethods is { Length: > 0 } methods)
            {
                await binder.RestoreResetMethodAsync(entry.PciAddress, methods, NoStepJournal.Instance, cancellationToken);
                action = Action(entry, JournalCompleted, $"reset interrupted at {where}; reset methods put back to '{methods}'");
            }
            else
            {
                action = Action(entry, JournalCompleted, $"{entry.Operation} interrupted at {where}; nothing to undo");
            }

            if (entry.StoppedServices.Count > 0 && services is not null)
            {
                // The interrupted operation had stopped them: they run again either way.
                await StartServicesAsync(entry.StoppedServices, NoStepJournal.Instance);
                action = action with { Detail = action.Detail + $"; started {string.Join(", ", entry.StoppedServices)} again" };
            }

            journal.Complete(entry);
            LogRecovered(logger, entry.Operation, entry.PciAddress, action.Kind, action.Detail);
            return action;
        }
        catch (KernelWriteTimeoutException e)
        {
            // Leave the entry: the next reconcile or a reset finishes the job once the kernel lets go.
            if (record is not null)
            {
                Quarantine(record, $"recovery of an interrupted {entry.Operation} hung: {e.Message}", ErrorCodes.UnbindTimeout);
            }

            return Action(entry, QuarantinedKind, $"recovery of the interrupted {entry.Operation} hung in the kernel: {e.Message}");
        }
    }

    private async Task<RecoveryAction> RecoverBindAsync(JournalEntry entry, DeviceRecord? record, string where,
        CancellationToken cancellationToken)
    {
        var finished = entry.BindReachedItsEnd(discovery.GetCurrentDriver, record?.Attachment) &&
            binder.GetVfioGroupPath(entry.Functions[0].PciAddress) is not null;
        if (finished)
        {
            if (record is not null)
            {
                // Record and kernel agree again: whatever quarantined the device is over.
                registry.Update(record with { Binding = Merge(record.Binding, entry.Functions, entry.Group), Quarantine = null, UpdatedAt = Now() });
            }

            return Action(entry, JournalCompleted,
                $"{entry.Operation} interrupted at {where}; every function had reached vfio-pci, so the bind was recorded");
        }

        var outcomes = await binder.RestoreAsync(entry.Functions.Reverse().ToList(), NoStepJournal.Instance, cancellationToken);
        var notRestored = outcomes.Where(o => !o.Restored).ToList();
        if (record is not null)
        {
            var remaining = record.Binding?.Functions
                .Where(f => entry.Functions.All(e => e.PciAddress != f.PciAddress) || notRestored.Any(o => o.PciAddress == f.PciAddress))
                .ToList() ?? [];
            registry.Update(record with
            {
                Binding = remaining.Count == 0 ? null : record.Binding! with { Functions = remaining },
                Quarantine = notRestored.Count == 0 ? null
                    : NewQuarantine("an interrupted bind could not be undone", ErrorCodes.OperationFailed),
                UpdatedAt = Now(),
            });
        }

        return notRestored.Count == 0
            ? Action(entry, JournalRolledBack,
                $"{entry.Operation} interrupted at {where}; every function was returned to its original driver")
            : Action(entry, QuarantinedKind,
                $"{entry.Operation} interrupted at {where}; could not undo: {string.Join("; ", notRestored.Select(o => o.Problem))}");
    }

    private async Task<RecoveryAction> RecoverRestoreAsync(JournalEntry entry, DeviceRecord? record, string where,
        CancellationToken cancellationToken)
    {
        var outcomes = await binder.RestoreAsync(entry.Functions, NoStepJournal.Instance, cancellationToken);
        var notRestored = outcomes.Where(o => !o.Restored).ToList();
        if (record is not null && entry.Operation == "detach" && record.Attachment is { } claim && claim.InstanceId == entry.InstanceId)
        {
            // The detach stopped before it dropped the instance's claim: finish that half too.
            record = registry.Update(record with { Attachment = null, UpdatedAt = Now() });
        }

        if (notRestored.Count > 0)
        {
            if (record is not null)
            {
                registry.Update(record with
                {
                    Quarantine = NewQuarantine($"an interrupted {entry.Operation} could not be finished", ErrorCodes.OperationFailed),
                    UpdatedAt = Now(),
                });
            }

            return Action(entry, QuarantinedKind,
                $"{entry.Operation} interrupted at {where}; could not finish: {string.Join("; ", notRestored.Select(o => o.Problem))}");
        }

        if (record is not null)
        {
            if (entry.Operation == "delete")
            {
                registry.Remove(record);
            }
            else
            {
                registry.Update(record with { Binding = null, Quarantine = null, UpdatedAt = Now() });
            }
        }

        return Action(entry, JournalCompleted,
            $"{entry.Operation} interrupted at {where}; finished: every function is back on its original driver" +
            (entry.Operation == "delete" && record is not null ? " and the record was deleted" : ""));
    }

    private static RecoveryAction Action(JournalEntry entry, string kind, string detail) =>
        new(entry.DeviceId, entry.PciAddress.ToString(), entry.Operation, kind, detail);

    [LoggerMessage(EventId = 3201, Level = LogLevel.Warning,
        Message = "Recovered an interrupted {Operation} of {PciAddress}: {Kind} ({Detail})")]
    private static partial void LogRecovered(ILogger logger, string operation, PciAddress pciAddress, string kind, string detail);
}
