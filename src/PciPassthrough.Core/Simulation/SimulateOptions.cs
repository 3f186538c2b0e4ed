namespace PciPassthrough.Simulation;

/// <summary>Simulated host only (configuration section <c>Simulate</c>).</summary>
public sealed class SimulateOptions
{
    public const string Section = "Simulate";

    /// <summary>JSON object keyed by PCI address, each value a list of faults (see <see cref="SimulatedFault.Parse"/>).</summary>
    public string? FaultsFile { get; set; }

    /// <summary><c>&lt;operation&gt;:&lt;n&gt;</c>: exit with status 86 right before step n of the first such operation.</summary>
    public string? CrashAt { get; set; }
}
