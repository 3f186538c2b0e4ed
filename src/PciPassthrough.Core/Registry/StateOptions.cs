namespace PciPassthrough.Registry;

/// <summary>Where the daemon keeps its records (configuration section <c>State</c>).</summary>
public sealed class StateOptions
{
    public const string Section = "State";

    public const string DefaultDirectory = "/var/lib/pci-passthrough";

    /// <summary>
    /// Device records, journal and quarantine. When not configured: <see cref="DefaultDirectory"/>,
    /// or, for a user who cannot write there, <c>$XDG_STATE_HOME/pci-passthrough</c>
    /// (<c>~/.local/state/pci-passthrough</c>).
    /// </summary>
    public string? Directory { get; set; }
}
