using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace PciPassthrough.Reconcile;

/// <summary>
/// Reconciles every <see cref="ReconcileOptions.Interval"/> once start-up is done. A failed run is
/// logged and the loop goes on: the next run sees the host afresh.
/// </summary>
public sealed partial class ReconcileService(
    ReconcileRunner runner,
    IStartupGate startup,
    IOptions<ReconcileOptions> options,
    TimeProvider time,
    ILogger<ReconcileService> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = options.Value.Interval;
        if (interval <= TimeSpan.Zero)
        {
            LogDisabled(logger);
            return;
        }

        await startup.WaitReadyAsync(stoppingToken);
        using var timer = new PeriodicTimer(interval, time);
        while (await timer.WaitForNextTickAsync(stoppingToken))
        {
            try
            {
                await runner.RunAsync(dryRun: false, startup: false, stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                LogFailed(logger, e);
            }
        }
    }

    [LoggerMessage(EventId = 8101, Level = LogLevel.Information, Message = "Periodic reconcile is off (Reconcile:Interval is zero)")]
    private static partial void LogDisabled(ILogger logger);

    [LoggerMessage(EventId = 8102, Level = LogLevel.Error, Message = "Periodic reconcile failed; retrying at the next interval")]
    private static partial void LogFailed(ILogger logger, Exception exception);
}

/// <summary>Completes when start-up (registry load and the start-up reconcile) is done.</summary>
public interface IStartupGate
{
    Task WaitReadyAsync(CancellationToken cancellationToken);
}
