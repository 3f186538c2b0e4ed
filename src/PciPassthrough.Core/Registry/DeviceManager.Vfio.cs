using Microsoft.Extensions.Logging;
using PciPassthrough.Devices;
using PciPassthrough.Discovery;
using PciPassthrough.Errors;
using PciPassthrough.Journal;
using PciPassthrough.Sysfs;
using PciPassthrough.Vfio;

namespace PciPassthrough.Registry;

public sealed partial class DeviceManager
{
    /// <summary>
    /// Binds a device (with <see cref="VfioRequest.Group"/>, every endpoint of its IOMMU group) to
    /// vfio-pci. Idempotent: functions already on vfio-pci are left alone. Checks come before any
    /// write, in this order: quarantine, presence, identity, VFIO availability, group safety, holders.
    /// </summary>
    public async Task<VfioResult> BindToVfioAsync(string idOrName, VfioRequest request, CancellationToken cancellationToken = default)
    {
        var record = Find(idOrName);
        using var held = await _locks.AcquireAsync(LockSet(record), cancellationToken);
        record = Reload(record);
        ThrowIfStuck(record, LockSet(record));
        var plan = PlanBind(record, request);
        if (request.DryRun)
        {
            return new VfioResult(null, plan);
        }

        Preconditions.Check(record, request.IfMatch);
        ThrowIfRefused(record, plan);
        if (plan.Functions.Count > 0)
        {
            record = await RunBindAsync(record, plan, "bind", cancellationToken);
            LogBound(logger, record.Id, record.PciAddress, plan.Functions.Count, request.Group);
        }

        return new VfioResult(ToDevice(record), null);
    }

    /// <summary>
    /// Returns a device (and every function bound with it) to the driver and override it had
    /// before the daemon bound it. Idempotent; refused while attached.
    /// </summary>
    public async Task<VfioResult> UnbindFromVfioAsync(string idOrName, VfioRequest request, CancellationToken cancellationToken = default)
    {
        var record = Find(idOrName);
        using var held = await _locks.AcquireAsync(LockSet(record), cancellationToken);
        record = Reload(record);
        ThrowIfStuck(record, LockSet(record));
        var plan = PlanUnbind(record, request);
        if (request.DryRun)
        {
            return new VfioResult(null, plan);
        }

        Preconditions.Check(record, request.IfMatch);
        ThrowIfRefused(record, plan);
        record = await RunRestoreAsync(record, plan, "unbind", cancellationToken);
        return new VfioResult(ToDevice(record), null);
    }

    /// <summary>
    /// Resets the function through the kernel (on whatever driver it is), then finishes or undoes
    /// any operation of the device left unfinished, and lifts a quarantine.
    /// </summary>
    public async Task<Device> ResetAsync(string idOrName, string? method, bool force, CancellationToken cancellationToken = default)
    {
        var record = Find(idOrName);
        using var held = await _locks.AcquireAsync(LockSet(record), cancellationToken);
        record = Reload(record);
        if (record.Attachment is { } attachment)
        {
            throw VfioErrors.Attached(attachment.InstanceId);
        }

        ThrowIfStuck(record, LockSet(record));
        var info = discovery.GetDeviceInfo(record.PciAddress) ?? throw DeviceErrors.DeviceNotFound(record.PciAddress.ToString());
        if (!SameIdentity(record, info))
        {
            throw VfioErrors.Changed(record.PciAddress, record.VendorId, record.DeviceId, PciId.Format(info.VendorId), PciId.Format(info.DeviceId));
        }

        var holders = binder.FindHolders([record.PciAddress]);
        if (holders.Count > 0 && !force)
        {
            throw VfioErrors.Held(holders);
        }

        // Checked before the journal starts, so a refused method leaves nothing behind.
        var previousMethods = binder.CheckResetMethod(record.PciAddress, method);
        var entry = journal.Begin(NewEntry("reset", record, []) with { PreviousResetMethods = method is null ? null : previousMethods });
        try
        {
            // Once the first write is made the operation runs to its end: a caller who gives up
            // must not leave the device half-done (the lock wait above is what can be cancelled).
            await binder.ResetAsync(record.PciAddress, method, new JournalStepper(journal, entry), CancellationToken.None);
        }
        catch (KernelWriteTimeoutException)
        {
            journal.Complete(entry);
            Quarantine(record, "the kernel did not finish a reset", ErrorCodes.UnbindTimeout);
            throw VfioErrors.Timeout("the reset", binder.FindHolders([record.PciAddress]), vfioOptions.Value.OperationTimeout);
        }
        catch (VfioStepException e)
        {
            journal.Complete(entry);
            throw VfioErrors.Failed($"Reset of {record.PciAddress} failed: {e.Message}", rolledBack: true, []);
        }

        journal.Complete(entry);
        LogReset(logger, record.Id, record.PciAddress, method);

        // A reset is the operator's way out of a quarantine: first make record and kernel agree
        // again by finishing or undoing what was left half-done. The quarantine is lifted only
        // when that worked: a write still stuck in the kernel keeps the device quarantined.
        var recovered = true;
        foreach (var pending in journal.Pending().Where(p => p.DeviceId == record.Id))
        {
            recovered &= (await RecoverLockedAsync(pending, CancellationToken.None)).Kind != QuarantinedKind;
        }

        record = Reload(record);
        if (recovered && record.Quarantine is not null && !journal.Pending().Any(p => p.DeviceId == record.Id))
        {
            record = registry.Update(record with { Quarantine = null, UpdatedAt = Now() });
        }

        return ToDevice(record);
    }

    public async Task DeleteDeviceAsync(string idOrName, bool force, CancellationToken cancellationToken) =>
        await DeleteDeviceAsync(idOrName, force, null, cancellationToken);

    public async Task DeleteDeviceAsync(string idOrName, bool force, IReadOnlyCollection<string>? ifMatch, CancellationToken cancellationToken)
    {
        var record = Find(idOrName);
        using var held = await _locks.AcquireAsync(LockSet(record), cancellationToken);
        // Re-read under the lock: the record may have changed (or gone) while we waited.
        record = Reload(record);
        Preconditions.Check(record, ifMatch);
        if (record.Attachment is { } attachment)
        {
            throw VfioErrors.Attached(attachment.InstanceId);
        }

        if (record.Quarantine is { } quarantine)
        {
            throw VfioErrors.Quarantined(quarantine.Reason);
        }

        var info = discovery.GetDeviceInfo(record.PciAddress);
        // Only a device that is still the one registered is given back; a missing or different
        // device is not ours to touch.
        if (record.Binding is not null && info is not null && SameIdentity(record, info))
        {
            var plan = PlanUnbind(record, new VfioRequest(Force: force));
            ThrowIfRefused(record, plan);
            record = await RunRestoreAsync(record, plan, "delete", cancellationToken);
        }

        registry.Remove(record);
        LogDeleted(logger, record.Id, record.Name, record.PciAddress);
    }

    private OperationPlan PlanBind(DeviceRecord record, VfioRequest request)
    {
        var address = record.PciAddress;
        var info = discovery.GetDeviceInfo(address);
        var members = info is { IommuGroup: >= 0 } ? discovery.GetIommuGroupDevices(info.IommuGroup) : [address];
        var infos = members.ToDictionary(m => m, m => m == address ? info : discovery.GetDeviceInfo(m));
        var endpoints = members.Where(m => infos[m] is { IsBridge: false }).ToList();
        var functions = request.Group ? endpoints.OrderBy(m => m == address ? 0 : 1).ToList() : [address];
        var toBind = functions.Where(f => infos.GetValueOrDefault(f)?.CurrentDriver != SysfsPaths.VfioPciDriver).ToList();

        string? failure = null;
        IReadOnlyList<BlockingDevice> blockers = [];
        IReadOnlyList<DeviceHolder> holders = [];
        IReadOnlyList<string> stoppable = [];
        if (record.Quarantine is not null)
        {
            failure = ErrorCodes.Quarantined;
        }
        else if (info is null)
        {
            failure = ErrorCodes.DeviceNotFound;
        }
        else if (!SameIdentity(record, info))
        {
            failure = ErrorCodes.DeviceChanged;
        }
        else if (toBind.Count > 0)
        {
            blockers = binder.FindGroupBlockers(address, functions);
            holders = binder.FindHolders(toBind);
            // Holders that are services the daemon may stop do not refuse the bind: they are
            // stopped for its length. Any other holder refuses it unless forced.
            stoppable = StoppableUnits(holders);
            var others = holders.Where(h => !stoppable.Contains(SystemdUnits.UnitOf(sysfs, h.Pid) ?? "")).ToList();
            failure = !binder.CheckVfioAvailable().Available ? ErrorCodes.VfioNotAvailable
                : blockers.Count > 0 ? ErrorCodes.IommuGroupConflict
                : others.Count > 0 && !request.Force ? ErrorCodes.InUse
                : null;
            holders = failure == ErrorCodes.InUse ? others : holders;
        }

        var bound = failure is null ? toBind : [];
        return new OperationPlan
        {
            Operation = "bind",
            DeviceId = record.Id,
            PciAddress = address.ToString(),
            IommuGroup = info?.IommuGroup ?? record.IommuGroup,
            Group = request.Group,
            Steps = failure is null ? WithServices(binder.PlanBind(toBind), stoppable) : [],
            ServicesToStop = failure is null ? stoppable : [],
            Members = members.Select(m => Member(m, infos[m], toBind.Contains(m) ? "bind to vfio-pci" : null,
                blockers.FirstOrDefault(b => b.PciAddress == m.ToString()))).ToList(),
            Blockers = blockers,
            Holders = holders,
            WouldFailWith = failure,
            Functions = bound.Select(f => new BoundFunction
            {
                PciAddress = f,
                OriginalDriver = infos[f]?.CurrentDriver,
                OriginalDriverOverride = binder.ReadOverride(f),
            }).ToList(),
        };
    }

    private OperationPlan PlanUnbind(DeviceRecord record, VfioRequest request)
    {
        var address = record.PciAddress;
        var info = discovery.GetDeviceInfo(address);
        IReadOnlyList<BoundFunction> functions = record.Binding?.Functions ?? (info?.CurrentDriver == SysfsPaths.VfioPciDriver
            ? [new BoundFunction { PciAddress = address, OriginalDriver = record.OriginalDriver, OriginalUnknown = record.OriginalDriver is null }]
            : []);
        var steps = binder.PlanRestore(functions);
        var toRestore = functions.Where(f => steps.Any(s => s.PciAddress == f.PciAddress.ToString())).ToList();

        string? failure = null;
        IReadOnlyList<DeviceHolder> holders = [];
        if (record.Quarantine is not null)
        {
            failure = ErrorCodes.Quarantined;
        }
        else if (record.Attachment is not null)
        {
            failure = ErrorCodes.InUse;
        }
        else if (info is null)
        {
            failure = ErrorCodes.DeviceNotFound;
        }
        else if (!SameIdentity(record, info))
        {
            failure = ErrorCodes.DeviceChanged;
        }
        else if (toRestore.Count > 0)
        {
            holders = binder.FindHolders(toRestore.Select(f => f.PciAddress));
            failure = holders.Count > 0 && !request.Force ? ErrorCodes.InUse : null;
        }

        var members = info is { IommuGroup: >= 0 } ? discovery.GetIommuGroupDevices(info.IommuGroup) : [address];
        return new OperationPlan
        {
            Operation = "unbind",
            DeviceId = record.Id,
            PciAddress = address.ToString(),
            IommuGroup = info?.IommuGroup ?? record.IommuGroup,
            Group = record.Binding?.Group ?? false,
            Steps = failure is null ? steps : [],
            Members = members.Select(m =>
            {
                var f = toRestore.FirstOrDefault(t => t.PciAddress == m);
                var action = f is null ? null
                    : f.OriginalUnknown ? "release from vfio-pci (the kernel picks a driver)"
                    : f.OriginalDriver is { } d ? $"restore to {d}" : "release from vfio-pci (had no driver)";
                return Member(m, m == address ? info : discovery.GetDeviceInfo(m), action, null);
            }).ToList(),
            Blockers = [],
            Holders = holders,
            WouldFailWith = failure,
            Functions = failure is null ? toRestore : [],
        };
    }

    private static PlanMember Member(PciAddress address, AvailableDevice? info, string? action, BlockingDevice? blocker) =>
        new(address.ToString(), info?.CurrentDriver, info?.ClassCode.ToString() ?? "",
            action ?? (info is null ? "gone from the host"
                : info.IsBridge ? "ignored (bridge)"
                : blocker is not null ? $"blocks: {blocker.Reason}"
                : info.CurrentDriver == SysfsPaths.VfioPciDriver ? "already on vfio-pci"
                : info.CurrentDriver is null ? "left alone (no driver)"
                : $"left on {info.CurrentDriver}"));

    /// <summary>Turns a plan's refusal into its domain error.</summary>
    private void ThrowIfRefused(DeviceRecord record, OperationPlan plan)
    {
        switch (plan.WouldFailWith)
        {
            case null:
                return;
            case ErrorCodes.Quarantined:
                throw VfioErrors.Quarantined(record.Quarantine!.Reason);
            case ErrorCodes.DeviceNotFound:
                throw DeviceErrors.DeviceNotFound(record.PciAddress.ToString());
            case ErrorCodes.DeviceChanged:
                var info = discovery.GetDeviceInfo(record.PciAddress)!;
                throw VfioErrors.Changed(record.PciAddress, record.VendorId, record.DeviceId, PciId.Format(info.VendorId), PciId.Format(info.DeviceId));
            case ErrorCodes.VfioNotAvailable:
                throw VfioErrors.NotAvailable(binder.CheckVfioAvailable());
            case ErrorCodes.IommuGroupConflict:
                throw VfioErrors.GroupConflict(record.PciAddress, plan.Blockers);
            case ErrorCodes.InUse when record.Attachment is { } attachment:
                throw VfioErrors.Attached(attachment.InstanceId);
            case ErrorCodes.InUse:
                throw VfioErrors.Held(plan.Holders);
            default:
                throw new PassthroughException(plan.WouldFailWith, "The operation was refused");
        }
    }

    /// <summary>
    /// Runs a bind plan: journal first, then the originals into the record (both durable before
    /// the first kernel write), then the steps. A failed step is rolled back; a hung write
    /// quarantines the device and leaves the journal entry for recovery. <paramref name="onBound"/>
    /// (an attach recording its instance) runs once every function is on vfio-pci, still inside
    /// the journaled operation, so a crash before it lands is undone like any unfinished bind.
    /// </summary>
    private async Task<DeviceRecord> RunBindAsync(DeviceRecord record, OperationPlan plan, string operation,
        CancellationToken cancellationToken, string? instanceId = null, Func<DeviceRecord, IStepJournal, Task<DeviceRecord>>? onBound = null)
    {
        _ = cancellationToken; // started operations run to their end (see ResetAsync)
        return await RunBindCoreAsync(record, plan, operation, instanceId, onBound);
    }

    private async Task<DeviceRecord> RunBindCoreAsync(DeviceRecord record, OperationPlan plan, string operation, string? instanceId,
        Func<DeviceRecord, IStepJournal, Task<DeviceRecord>>? onBound)
    {
        var previous = record.Binding;
        var entry = journal.Begin(NewEntry(operation, record, plan.Functions, plan.Group, instanceId) with { StoppedServices = plan.ServicesToStop });
        record = registry.Update(record with { Binding = Merge(previous, plan.Functions, plan.Group), UpdatedAt = Now() });
        var stepper = new JournalStepper(journal, entry);
        var settled = new Settled();
        try
        {
            record = await RunBindStepsAsync(record, plan, previous, stepper, settled);
            return onBound is null ? record : await RunOnBoundAsync(record, onBound, stepper, settled);
        }
        finally
        {
            // However the bind ended, the services it stopped run again (they let go of the
            // devices that left their driver, and keep serving the others); then the journal
            // entry ends, unless the device is left for recovery (a write stuck in the kernel).
            await StartServicesAsync(plan.ServicesToStop, stepper);
            if (settled.Value)
            {
                journal.Complete(entry);
            }
        }
    }

    private async Task<DeviceRecord> RunBindStepsAsync(DeviceRecord record, OperationPlan plan, BindingRecord? previous,
        JournalStepper stepper, Settled settled)
    {
        try
        {
            await StopServicesAsync(plan, stepper);
        }
        catch (KernelWriteTimeoutException)
        {
            // Nothing was written to the device: forget the bind and say who still holds it.
            registry.Update(record with { Binding = previous, UpdatedAt = Now() });
            settled.Value = true;
            throw VfioErrors.Timeout("stopping the services that hold the device", binder.FindHolders(plan.Functions.Select(f => f.PciAddress)),
                vfioOptions.Value.OperationTimeout);
        }

        try
        {
            // Started operations finish (or roll back) whatever the caller does meanwhile.
            await binder.BindAsync(plan.Functions.Select(f => f.PciAddress).ToList(), stepper, CancellationToken.None);
        }
        catch (KernelWriteTimeoutException)
        {
            Quarantine(record, "the kernel did not finish a write while binding to vfio-pci", ErrorCodes.UnbindTimeout);
            throw VfioErrors.Timeout("the bind", binder.FindHolders(plan.Functions.Select(f => f.PciAddress)),
                vfioOptions.Value.OperationTimeout);
        }
        catch (VfioStepException e)
        {
            LogBindFailed(logger, e, record.PciAddress);
            IReadOnlyList<RestoreOutcome> outcomes;
            try
            {
                outcomes = await binder.RestoreAsync(plan.Functions.Reverse().ToList(), stepper, CancellationToken.None);
            }
            catch (KernelWriteTimeoutException)
            {
                Quarantine(record, "the kernel did not finish a write while undoing a failed bind", ErrorCodes.UnbindTimeout);
                throw VfioErrors.Timeout("undoing the failed bind", binder.FindHolders(plan.Functions.Select(f => f.PciAddress)),
                    vfioOptions.Value.OperationTimeout);
            }

            var notUndone = outcomes.Where(o => !o.Restored).ToList();
            record = registry.Update(record with
            {
                Binding = notUndone.Count == 0 ? previous : Merge(previous, plan.Functions.Where(f => notUndone.Any(o => o.PciAddress == f.PciAddress)).ToList(), plan.Group),
                Quarantine = notUndone.Count == 0 ? record.Quarantine : NewQuarantine("a failed bind could not be fully undone", ErrorCodes.OperationFailed),
                UpdatedAt = Now(),
            });
            settled.Value = true;
            throw VfioErrors.Failed($"Binding {record.PciAddress} to vfio-pci failed: {e.Message}", notUndone.Count == 0, notUndone);
        }

        settled.Value = true;
        return registry.Find(record.Id) ?? record;
    }

    /// <summary>
    /// The last part of a bind that goes on (an attach's claim). A refusal ends the operation with
    /// the device bound and consistent; anything else (a crash, a failed write) leaves the entry
    /// for recovery, which undoes the bind.
    /// </summary>
    private static async Task<DeviceRecord> RunOnBoundAsync(DeviceRecord record,
        Func<DeviceRecord, IStepJournal, Task<DeviceRecord>> onBound, IStepJournal stepper, Settled settled)
    {
        settled.Value = false;
        try
        {
            record = await onBound(record, stepper);
        }
        catch (PassthroughException)
        {
            settled.Value = true;
            throw;
        }

        settled.Value = true;
        return record;
    }

    /// <summary>Whether an operation reached a state its journal entry may end in.</summary>
    private sealed class Settled
    {
        public bool Value { get; set; }
    }

    /// <summary>
    /// Runs a restore plan (unbind, delete, release on detach) under the journal.
    /// <paramref name="first"/> (a detach dropping its instance's claim) changes the record once the
    /// operation is journaled and before the first kernel write, so recovery finishes both halves.
    /// </summary>
    private async Task<DeviceRecord> RunRestoreAsync(DeviceRecord record, OperationPlan plan, string operation,
        CancellationToken cancellationToken, Func<DeviceRecord, IStepJournal, Task<DeviceRecord>>? first = null, string? instanceId = null)
    {
        if (plan.Functions.Count == 0)
        {
            // Nothing on the host to change; forget a binding the kernel no longer shows.
            record = first is null ? record : await first(record, NoStepJournal.Instance);
            return record.Binding is null ? record : registry.Update(record with { Binding = null, UpdatedAt = Now() });
        }

        var entry = journal.Begin(NewEntry(operation, record, plan.Functions, plan.Group, instanceId));
        var stepper = new JournalStepper(journal, entry);
        record = first is null ? record : await first(record, stepper);
        var onVfioBefore = plan.Functions.Where(f => discovery.GetCurrentDriver(f.PciAddress) == SysfsPaths.VfioPciDriver)
            .Select(f => f.PciAddress).ToHashSet();
        IReadOnlyList<RestoreOutcome> outcomes;
        try
        {
            outcomes = await binder.RestoreAsync(plan.Functions, stepper, CancellationToken.None);
        }
        catch (KernelWriteTimeoutException)
        {
            Quarantine(record, "the kernel did not finish a write while returning the device to its driver", ErrorCodes.UnbindTimeout);
            throw VfioErrors.Timeout("the unbind", binder.FindHolders(plan.Functions.Select(f => f.PciAddress)),
                vfioOptions.Value.OperationTimeout);
        }

        var notRestored = outcomes.Where(o => !o.Restored).ToList();
        if (notRestored.Count == 0)
        {
            record = registry.Update(record with { Binding = null, UpdatedAt = Now() });
            journal.Complete(entry);
            LogRestored(logger, record.Id, record.PciAddress, plan.Functions.Count);
            return record;
        }

        // A function taken off vfio-pci that its original driver would not take is left with no
        // driver at all: put it back on vfio-pci (it was there a moment ago), so it is parked,
        // not stranded, and the record that still shows it bound tells the truth.
        var parked = new List<PciAddress>();
        foreach (var outcome in notRestored.Where(o => o.Actual is null && onVfioBefore.Contains(o.PciAddress)))
        {
            try
            {
                await binder.BindAsync([outcome.PciAddress], stepper, CancellationToken.None);
                parked.Add(outcome.PciAddress);
            }
            catch (VfioStepException e)
            {
                LogParkFailed(logger, e, outcome.PciAddress);
            }
        }

        notRestored = notRestored
            .Select(o => parked.Contains(o.PciAddress)
                ? o with { Actual = SysfsPaths.VfioPciDriver, Problem = o.Problem + "; put back on vfio-pci" }
                : o)
            .ToList();

        // Keep what could not be returned on record, so a retry after a reset knows what to restore.
        record = registry.Update(record with
        {
            Binding = record.Binding is { } b
                ? b with { Functions = b.Functions.Where(f => notRestored.Any(o => o.PciAddress == f.PciAddress)).ToList() }
                : null,
            Quarantine = NewQuarantine("the device could not be returned to its original driver", ErrorCodes.OperationFailed),
            UpdatedAt = Now(),
        });
        journal.Complete(entry);
        throw VfioErrors.Failed($"Returning {record.PciAddress} to its driver failed", rolledBack: false, notRestored);
    }

    /// <summary>The services (allowed to be stopped) whose processes are among the holders.</summary>
    private List<string> StoppableUnits(IReadOnlyList<DeviceHolder> holders) =>
        holders.Select(h => SystemdUnits.UnitOf(sysfs, h.Pid))
            .OfType<string>()
            .Where(u => services is not null && vfioOptions.Value.StoppableServices.Contains(u, StringComparer.Ordinal))
            .Distinct(StringComparer.Ordinal)
            .ToList();

    private static IReadOnlyList<KernelStep> WithServices(IReadOnlyList<KernelStep> steps, IReadOnlyList<string> units)
    {
        if (units.Count == 0)
        {
            return steps;
        }

        var all = new List<KernelStep>();
        all.AddRange(units.Select(u => new KernelStep(0, "", "stop_service", u, "", $"stop {u} (it holds the device)")));
        all.AddRange(steps);
        all.AddRange(units.Select(u => new KernelStep(0, "", "start_service", u, "", $"start {u} again")));
        return all.Select((s, i) => s with { Order = i + 1 }).ToList();
    }

    /// <summary>Stops the plan's services and waits until their processes have let go of the device.</summary>
    private async Task StopServicesAsync(OperationPlan plan, JournalStepper stepper)
    {
        foreach (var unit in plan.ServicesToStop)
        {
            await stepper.StepAsync($"stop {unit} (it holds the device)", CancellationToken.None);
            await services!.StopAsync(unit, CancellationToken.None);
        }

        if (plan.ServicesToStop.Count == 0)
        {
            return;
        }

        var deadline = time.GetUtcNow() + vfioOptions.Value.OperationTimeout;
        var functions = plan.Functions.Select(f => f.PciAddress).ToList();
        while (binder.FindHolders(functions).Any(h => plan.ServicesToStop.Contains(SystemdUnits.UnitOf(sysfs, h.Pid) ?? "")))
        {
            if (time.GetUtcNow() >= deadline)
            {
                throw new KernelWriteTimeoutException($"{string.Join(", ", plan.ServicesToStop)} to let go of the device",
                    vfioOptions.Value.OperationTimeout);
            }

            await Task.Delay(vfioOptions.Value.VerifyPollInterval, time);
        }
    }

    private async Task StartServicesAsync(IReadOnlyList<string> units, IStepJournal stepper)
    {
        foreach (var unit in units)
        {
            try
            {
                await stepper.StepAsync($"start {unit} again", CancellationToken.None);
                await services!.StartAsync(unit, CancellationToken.None);
            }
            catch (Exception e) when (e is IOException or KernelWriteTimeoutException)
            {
                LogServiceStartFailed(logger, e, unit);
            }
        }
    }

    private BindingRecord Merge(BindingRecord? existing, IReadOnlyList<BoundFunction> added, bool group)
    {
        var functions = (existing?.Functions ?? []).ToList();
        foreach (var f in added)
        {
            // The first record of a function's original driver wins: a re-bind must not forget it.
            if (functions.All(e => e.PciAddress != f.PciAddress))
            {
                functions.Add(f);
            }
        }

        return new BindingRecord
        {
            BoundAt = existing?.BoundAt ?? Now(),
            Group = group || (existing?.Group ?? false),
            Functions = functions,
        };
    }

    private void Quarantine(DeviceRecord record, string reason, string code)
    {
        var current = registry.Find(record.Id) ?? record;
        registry.Update(current with { Quarantine = NewQuarantine(reason, code), UpdatedAt = Now() });
        LogQuarantined(logger, record.Id, record.PciAddress, reason);
    }

    private QuarantineRecord NewQuarantine(string reason, string code) => new() { Reason = reason, Code = code, Since = Now() };

    private JournalEntry NewEntry(string operation, DeviceRecord record, IReadOnlyList<BoundFunction> functions, bool group = false,
        string? instanceId = null) => new()
        {
            OperationId = Cuid2Generator.Shared.Next(),
            Operation = operation,
            DeviceId = record.Id,
            PciAddress = record.PciAddress,
            Group = group,
            Functions = functions,
            InstanceId = instanceId,
            StartedAt = Now(),
        };

    /// <summary>Every function an operation on the device may touch: its IOMMU group, and anything bound with it.</summary>
    private List<PciAddress> LockSet(DeviceRecord record)
    {
        var set = new List<PciAddress> { record.PciAddress };
        if (discovery.GetIommuGroup(record.PciAddress) is >= 0 and var group)
        {
            set.AddRange(discovery.GetIommuGroupDevices(group));
        }

        set.AddRange(record.Binding?.Functions.Select(f => f.PciAddress) ?? []);
        return set;
    }

    private DeviceRecord Reload(DeviceRecord record) => registry.Find(record.Id) ?? throw DeviceErrors.NotFound();

    /// <summary>
    /// Refuses to touch a device while a write about one of its functions is still stuck in the
    /// kernel: anything more would pile up behind it (reads of the function can block too).
    /// </summary>
    private void ThrowIfStuck(DeviceRecord record, IEnumerable<PciAddress> functions)
    {
        if (functions.Where(binder.IsStuck).Select(a => (PciAddress?)a).FirstOrDefault() is { } stuck)
        {
            throw new PassthroughException(ErrorCodes.Quarantined,
                $"A kernel write about {stuck} has not returned yet; the device is left alone until it does " +
                "(stop whatever holds it), then reset it",
                new Dictionary<string, object?> { ["quarantine_reason"] = record.Quarantine?.Reason, ["holders"] = binder.FindHolders([record.PciAddress]) });
        }
    }

    private DateTime Now() => time.GetUtcNow().UtcDateTime;

    /// <summary>Journals each step of a running operation, entry by entry.</summary>
    private sealed class JournalStepper(OperationJournal journal, JournalEntry entry) : IStepJournal
    {
        private JournalEntry _entry = entry;

        public Task StepAsync(string description, CancellationToken cancellationToken)
        {
            _entry = journal.Step(_entry, description);
            return Task.CompletedTask;
        }
    }

    [LoggerMessage(EventId = 3101, Level = LogLevel.Information,
        Message = "Bound device {DeviceId} at {PciAddress} to vfio-pci ({FunctionCount} functions, group bind {Group})")]
    private static partial void LogBound(ILogger logger, string deviceId, PciAddress pciAddress, int functionCount, bool group);

    [LoggerMessage(EventId = 3102, Level = LogLevel.Information,
        Message = "Returned device {DeviceId} at {PciAddress} to its original driver ({FunctionCount} functions)")]
    private static partial void LogRestored(ILogger logger, string deviceId, PciAddress pciAddress, int functionCount);

    [LoggerMessage(EventId = 3103, Level = LogLevel.Warning,
        Message = "Binding {PciAddress} to vfio-pci failed; rolling back")]
    private static partial void LogBindFailed(ILogger logger, Exception exception, PciAddress pciAddress);

    [LoggerMessage(EventId = 3104, Level = LogLevel.Error,
        Message = "Quarantined device {DeviceId} at {PciAddress}: {Reason}")]
    private static partial void LogQuarantined(ILogger logger, string deviceId, PciAddress pciAddress, string reason);

    [LoggerMessage(EventId = 3107, Level = LogLevel.Error,
        Message = "Could not start {Unit} again after a bind; start it by hand")]
    private static partial void LogServiceStartFailed(ILogger logger, Exception exception, string unit);

    [LoggerMessage(EventId = 3106, Level = LogLevel.Error,
        Message = "{PciAddress} could not go back to its driver nor to vfio-pci; it has no driver")]
    private static partial void LogParkFailed(ILogger logger, Exception exception, PciAddress pciAddress);

    [LoggerMessage(EventId = 3105, Level = LogLevel.Information,
        Message = "Reset device {DeviceId} at {PciAddress} (method {Method})")]
    private static partial void LogReset(ILogger logger, string deviceId, PciAddress pciAddress, string? method);
}
