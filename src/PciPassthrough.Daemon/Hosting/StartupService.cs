using PciPassthrough.Registry;
using PciPassthrough.Storage;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>
/// Loads every device record before the server accepts requests (records are small and served
/// from memory afterwards), creating the state directory on first start.
/// </summary>
public sealed partial class StartupService(
    StateDirectory state,
    DeviceRegistry registry,
    StartupState startup,
    ILogger<StartupService> logger) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        state.EnsureCreated();
        registry.Load();
        LogLoaded(logger, registry.Count, state.Root, registry.Quarantined.Count);
        startup.MarkRegistryLoaded();
        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    [LoggerMessage(EventId = 4001, Level = LogLevel.Information,
        Message = "Loaded {DeviceCount} device records from {StateDirectory} ({QuarantinedCount} quarantined)")]
    private static partial void LogLoaded(ILogger logger, int deviceCount, string stateDirectory, int quarantinedCount);
}
