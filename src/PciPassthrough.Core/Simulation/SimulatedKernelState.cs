using System.Text.Json.Serialization;

namespace PciPassthrough.Simulation;

/// <summary>
/// What the simulated kernel knows that is not visible in sysfs (the drivers' id tables, dynamic
/// ids, reset counters). Kept next to the tree, in <c>.pcipt-sim/state.json</c>, so it survives
/// a daemon crash like a real kernel's state does.
/// </summary>
internal sealed class SimulatedKernelState
{
    /// <summary>Per device: the driver whose id table matches it (null: none does).</summary>
    public Dictionary<string, string?> NativeDrivers { get; set; } = [];

    /// <summary>Per driver: ids added through <c>new_id</c>, as "vvvv dddd".</summary>
    public Dictionary<string, List<string>> DynamicIds { get; set; } = [];

    /// <summary>Per device: the reset methods it supports, in the kernel's order.</summary>
    public Dictionary<string, List<string>> SupportedResetMethods { get; set; } = [];

    /// <summary>
    /// Per device: what its native driver creates while bound (DRM and NVMe class directories,
    /// NVIDIA's /proc entry), as paths under the root with their contents; gone while it is not bound.
    /// </summary>
    public Dictionary<string, Dictionary<string, string>> DriverTraces { get; set; } = [];

    /// <summary>Simulated services (from <c>service=</c> faults) that are stopped.</summary>
    public HashSet<string> StoppedServices { get; set; } = [];

    /// <summary>Per device: how many times <c>reset</c> succeeded.</summary>
    public Dictionary<string, int> ResetCounts { get; set; } = [];
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(SimulatedKernelState))]
internal sealed partial class SimulationJsonContext : JsonSerializerContext;
