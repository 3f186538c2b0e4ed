using PciPassthrough.Diagnostics;
using PciPassthrough.Registry;
using PciPassthrough.Vfio;
using Prometheus;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>
/// <c>/metrics</c> in Prometheus text format: the daemon's meter, HTTP metrics and .NET runtime
/// statistics, in a registry of this host's own (no process-wide static state, so several hosts
/// in one process — tests — never mix their numbers).
/// </summary>
public static class MetricsSetup
{
    private static readonly double[] DurationBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    public static IServiceCollection AddPassthroughMetrics(this IServiceCollection services)
    {
        services.AddMetrics();
        services.AddSingleton<PassthroughMetrics>();
        services.AddSingleton(_ =>
        {
            var registry = Metrics.NewCustomRegistry();
            DotNetStats.Register(registry);
            return registry;
        });
        return services;
    }

    public static WebApplication UsePassthroughHttpMetrics(this WebApplication app)
    {
        var registry = app.Services.GetRequiredService<CollectorRegistry>();
        app.UseHttpMetrics(o =>
        {
            o.RequestCount.Registry = registry;
            o.RequestDuration.Registry = registry;
            o.InProgress.Registry = registry;
        });
        return app;
    }

    public static WebApplication MapPassthroughMetrics(this WebApplication app)
    {
        var registry = app.Services.GetRequiredService<CollectorRegistry>();
        var metrics = app.Services.GetRequiredService<PassthroughMetrics>();
        metrics.ObserveDevices(
            () => app.Services.GetRequiredService<IDeviceManager>().ListDevices().GroupBy(d => d.State).Select(g => (g.Key, g.Count())),
            () => app.Services.GetRequiredService<BoundedKernelWriter>().StuckWrites);
        // Listening starts now, not at the first scrape, so nothing that happens before it is lost.
        var adapter = MeterAdapter.StartListening(new MeterAdapterOptions
        {
            Registry = registry,
            MetricFactory = Metrics.WithCustomRegistry(registry),
            InstrumentFilterPredicate = instrument => instrument.Meter == metrics.Meter,
            ResolveHistogramBuckets = _ => DurationBuckets,
        });
        app.Lifetime.ApplicationStopping.Register(adapter.Dispose);
        app.MapMetrics("/metrics", registry);
        return app;
    }
}
