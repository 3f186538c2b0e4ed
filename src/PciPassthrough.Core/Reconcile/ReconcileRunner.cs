using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using PciPassthrough.Devices;
using PciPassthrough.Diagnostics;
using PciPassthrough.Discovery;
using PciPassthrough.Journal;
using PciPassthrough.Lifecycle;
using PciPassthrough.Registry;
using PciPassthrough.Sysfs;
using PciPassthrough.Vfio;

namespace PciPassthrough.Reconcile;

/// <summary>
/// One reconcile: observe records, sysfs, the journal and liveness; let <see cref="Reconciler"/>
/// decide; carry out each action (one failing device never stops the others); report. Runs are
/// serialized; an operation in flight is never touched (its devices' locks are taken first).
/// </summary>
public sealed partial class ReconcileRunner(
    DeviceRegistry registry,
    IPciDiscovery discovery,
    SysfsVfioBinder binder,
    OperationJournal journal,
    DeviceManager devices,
    IInstanceLivenessChecker liveness,
    PassthroughMetrics metrics,
    IOptions<ReconcileOptions> options,
    TimeProvider time,
    ILogger<ReconcileRunner> logger) : IDisposable
{
    private readonly SemaphoreSlim _gate = new(1, 1);
    private volatile ReconcileReport? _last;

    /// <summary>The report of the last run that applied its actions.</summary>
    public ReconcileReport? Last => _last;

    public async Task<ReconcileReport> RunAsync(bool dryRun, bool startup = false, CancellationToken cancellationToken = default)
    {
        await _gate.WaitAsync(cancellationToken);
        try
        {
            var startedAt = time.GetUtcNow().UtcDateTime;
            var input = await ObserveAsync(startup, cancellationToken);
            var planned = Reconciler.Plan(input);
            var reports = new List<ReconcileActionReport>(planned.Count);
            foreach (var action in planned)
            {
                reports.Add(dryRun || action.Remedy == Remedy.None
                    ? new ReconcileActionReport(action.DeviceId, action.PciAddress.ToString(), action.Kind, action.Detail, false)
                    : await ApplyAsync(action, cancellationToken));
            }

            var suspicious = liveness.DetectSuspiciousVmmProcesses()
                .Select(s => new SuspiciousProcessReport(s.Pid, s.Command, s.VfioGroup, s.Reason))
                .ToList();
            foreach (var process in suspicious)
            {
                LogSuspicious(logger, process.Pid, process.Command, process.VfioGroup, process.Reason);
            }

            var report = new ReconcileReport
            {
                StartedAt = startedAt,
                FinishedAt = time.GetUtcNow().UtcDateTime,
                DryRun = dryRun,
                Actions = reports,
                SuspiciousProcesses = suspicious,
            };
            if (!dryRun)
            {
                _last = report;
            }

            var appliedCount = reports.Count(r => r.Applied);
            LogDone(logger, dryRun, reports.Count, appliedCount, suspicious.Count);
            return report;
        }
        finally
        {
            _gate.Release();
        }
    }

    public void Dispose() => _gate.Dispose();

    private async Task<ReconcileInput> ObserveAsync(bool startup, CancellationToken cancellationToken)
    {
        var pending = journal.Pending();
        var drivers = new Dictionary<PciAddress, string?>();
        void Note(PciAddress address) => drivers.TryAdd(address, discovery.GetCurrentDriver(address));

        var observations = new List<DeviceObservation>();
        foreach (var record in registry.All())
        {
            var live = discovery.GetDeviceInfo(record.PciAddress);
            Note(record.PciAddress);
            foreach (var function in record.Binding?.Functions ?? [])
            {
                Note(function.PciAddress);
            }

            InstanceState? state = null;
            if (record.Attachment is { } attachment)
            {
                try
                {
                    state = await liveness.IsInstanceRunningAsync(attachment, cancellationToken);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    state = InstanceState.Unknown;
                    LogLivenessFailed(logger, e, attachment.InstanceId);
                }
            }

            var holders = live?.CurrentDriver == SysfsPaths.VfioPciDriver ? binder.FindHolders([record.PciAddress]) : [];
            observations.Add(new DeviceObservation(record, live, state, holders));
        }

        foreach (var function in pending.SelectMany(e => e.Functions))
        {
            Note(function.PciAddress);
        }

        return new ReconcileInput(observations, pending, drivers, options.Value.RestoreStranded, startup);
    }

    private async Task<ReconcileActionReport> ApplyAsync(PlannedAction action, CancellationToken cancellationToken)
    {
        var kind = action.Kind;
        var detail = action.Detail;
        var applied = false;
        try
        {
            switch (action.Remedy)
            {
                case Remedy.RecoverJournal:
                    if (await devices.RecoverEntryAsync(action.Entry!, cancellationToken) is { } recovered)
                    {
                        // The real outcome decides the kind: a bind can turn out finished after all.
                        (kind, detail, applied) = (recovered.Kind, recovered.Detail, recovered.Kind != ReconcileKinds.Quarantined);
                    }
                    else
                    {
                        detail += "; the operation ended on its own meanwhile";
                    }

                    break;
                case Remedy.ClearAttachment:
                    applied = await devices.ClearAttachmentAsync(action.DeviceId, action.Attachment!, cancellationToken);
                    if (!applied)
                    {
                        detail += "; the attachment changed meanwhile and was kept";
                    }

                    break;
                case Remedy.RestoreDriver:
                    detail += "; now " + await devices.RestoreDriverAsync(action.DeviceId, cancellationToken);
                    applied = true;
                    break;
                case Remedy.UpdateGroup:
                    await devices.UpdateIommuGroupAsync(action.DeviceId, action.IommuGroup!.Value, cancellationToken);
                    applied = true;
                    break;
                default:
                    break;
            }
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            detail += $"; not applied: {e.Message}";
            LogApplyFailed(logger, e, action.Kind, action.PciAddress);
        }

        LogAction(logger, kind, action.PciAddress, applied, detail);
        metrics.ReconcileAction(kind, applied);
        return new ReconcileActionReport(action.DeviceId, action.PciAddress.ToString(), kind, detail, applied);
    }

    [LoggerMessage(EventId = 8001, Level = LogLevel.Warning,
        Message = "Reconcile {Kind} for {PciAddress} (applied {Applied}): {Detail}")]
    private static partial void LogAction(ILogger logger, string kind, PciAddress pciAddress, bool applied, string detail);

    [LoggerMessage(EventId = 8002, Level = LogLevel.Information,
        Message = "Reconcile done (dry run {DryRun}): {ActionCount} actions, {AppliedCount} applied, {SuspiciousCount} suspicious processes")]
    private static partial void LogDone(ILogger logger, bool dryRun, int actionCount, int appliedCount, int suspiciousCount);

    [LoggerMessage(EventId = 8003, Level = LogLevel.Warning,
        Message = "Suspicious process {Pid} ({Command}) holds {VfioGroup}: {Reason}")]
    private static partial void LogSuspicious(ILogger logger, int pid, string command, string vfioGroup, string reason);

    [LoggerMessage(EventId = 8004, Level = LogLevel.Error,
        Message = "Reconcile could not apply {Kind} to {PciAddress}")]
    private static partial void LogApplyFailed(ILogger logger, Exception exception, string kind, PciAddress pciAddress);

    [LoggerMessage(EventId = 8005, Level = LogLevel.Warning,
        Message = "Liveness of instance {InstanceId} could not be determined")]
    private static partial void LogLivenessFailed(ILogger logger, Exception exception, string instanceId);
}
