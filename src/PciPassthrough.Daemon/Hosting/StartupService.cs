using PciPassthrough.Reconcile;
using PciPassthrough.Registry;
using PciPassthrough.Storage;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>
/// Loads every device record before the server accepts requests (records are small and served
/// from memory afterwards), then, with the server already answering health checks, runs the
/// start-up reconcile, which first finishes or undoes the operations a crash left unfinished.
/// Only then is the daemon ready.
/// </summary>
public sealed partial class StartupService(
    StateDirectory state,
    DeviceRegistry registry,
    ReconcileRunner reconcile,
    StartupState startup,
    IHostApplicationLifetime lifetime,
    ILogger<StartupService> logger) : IHostedService
{
    private Task? _recovery;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        state.EnsureCreated();
        registry.Load();
        LogLoaded(logger, registry.Count, state.Root, registry.Quarantined.Count);
        startup.MarkRegistryLoaded();
        _recovery = Task.Run(() => RecoverAsync(lifetime.ApplicationStopping), CancellationToken.None);
        return Task.CompletedTask;
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_recovery is not null)
        {
            await _recovery.WaitAsync(cancellationToken).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private async Task RecoverAsync(CancellationToken stopping)
    {
        try
        {
            var report = await reconcile.RunAsync(dryRun: false, startup: true, stopping);
            startup.MarkReconciled(report);
            LogReady(logger, report.Actions.Count);
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            // Shutting down before recovery finished: the journal still holds everything.
        }
        catch (Exception e)
        {
            startup.MarkFailed(e.Message);
            LogRecoveryFailed(logger, e);
        }
    }

    [LoggerMessage(EventId = 4001, Level = LogLevel.Information,
        Message = "Loaded {DeviceCount} device records from {StateDirectory} ({QuarantinedCount} quarantined)")]
    private static partial void LogLoaded(ILogger logger, int deviceCount, string stateDirectory, int quarantinedCount);

    [LoggerMessage(EventId = 4002, Level = LogLevel.Information,
        Message = "Start-up reconcile done ({ActionCount} actions); ready")]
    private static partial void LogReady(ILogger logger, int actionCount);

    [LoggerMessage(EventId = 4003, Level = LogLevel.Critical,
        Message = "Start-up reconcile failed; the daemon stays not ready and refuses changes")]
    private static partial void LogRecoveryFailed(ILogger logger, Exception exception);
}
