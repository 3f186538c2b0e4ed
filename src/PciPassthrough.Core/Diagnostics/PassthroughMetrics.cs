using System.Diagnostics;
using System.Diagnostics.Metrics;
using PciPassthrough.Devices;

namespace PciPassthrough.Diagnostics;

/// <summary>
/// The daemon's own metrics (System.Diagnostics.Metrics, meter <c>PciPassthrough</c>); the host
/// exports them in Prometheus text format at <c>/metrics</c>.
/// </summary>
public sealed class PassthroughMetrics : IDisposable
{
    public const string MeterName = "PciPassthrough";

    private readonly Meter _meter;
    private readonly Counter<long> _operations;
    private readonly Histogram<double> _operationSeconds;
    private readonly Counter<long> _reconcileActions;

    /// <summary>This daemon's meter (exporters listen to exactly this instance).</summary>
    public Meter Meter => _meter;

    public PassthroughMetrics(IMeterFactory meterFactory)
    {
        _meter = meterFactory.Create(MeterName);
        _operations = _meter.CreateCounter<long>("operations",
            description: "VFIO operations (bind, unbind, attach, detach, reset, delete) by outcome");
        _operationSeconds = _meter.CreateHistogram<double>("operation_duration", unit: "s",
            description: "Duration of VFIO operations, locks and kernel writes included");
        _reconcileActions = _meter.CreateCounter<long>("reconcile_actions",
            description: "Reconcile actions by kind and whether they were applied");
    }

    /// <summary>Registers gauges read at scrape time.</summary>
    public void ObserveDevices(Func<IEnumerable<(DeviceState State, int Count)>> devicesByState, Func<int> stuckWrites)
    {
        _meter.CreateObservableGauge("devices",
            () => devicesByState().Select(d => new Measurement<int>(d.Count,
                new KeyValuePair<string, object?>("state", d.State.ToString().ToLowerInvariant()))),
            description: "Registered devices by state");
        _meter.CreateObservableGauge("kernel_writes_stuck", stuckWrites,
            description: "Kernel writes that timed out and have not returned");
    }

    public void OperationFinished(string operation, string outcome, TimeSpan elapsed)
    {
        var tags = new TagList { { "operation", operation }, { "outcome", outcome } };
        _operations.Add(1, tags);
        _operationSeconds.Record(elapsed.TotalSeconds, new KeyValuePair<string, object?>("operation", operation));
    }

    public void ReconcileAction(string kind, bool applied) =>
        _reconcileActions.Add(1, new TagList { { "kind", kind }, { "applied", applied ? "true" : "false" } });

    public void Dispose() => _meter.Dispose();
}
