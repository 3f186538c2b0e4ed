using System.ComponentModel.DataAnnotations;

namespace PciPassthrough.Sysfs;

/// <summary>Where the host is and how to reach it (configuration section <c>Host</c>).</summary>
public sealed class HostSystemOptions
{
    public const string Section = "Host";

    /// <summary>The directory that stands for <c>/</c> when reading or writing sys/, dev/ and proc/.</summary>
    [Required]
    public string Root { get; set; } = "/";

    /// <summary><c>Real</c> (the kernel under <see cref="Root"/>) or <c>Simulated</c> (a built-in simulated kernel).</summary>
    public HostMode Mode { get; set; } = HostMode.Real;

    /// <summary>Path of the pci.ids database; null picks the first of the usual locations that exists.</summary>
    public string? PciIds { get; set; }
}

public enum HostMode
{
    Real,
    Simulated,
}
