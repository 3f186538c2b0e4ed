using System.ComponentModel.DataAnnotations;

namespace PciPassthrough.Vfio;

/// <summary>How the daemon drives vfio-pci (configuration section <c>Vfio</c>).</summary>
public sealed class VfioOptions
{
    public const string Section = "Vfio";

    /// <summary>Bound on each kernel write that can block (unbind, bind, probe, reset) and on verifying its effect.</summary>
    [Range(typeof(TimeSpan), "00:00:00.050", "01:00:00")]
    public TimeSpan OperationTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How often the driver link is re-read while waiting for a bind or restore to show.</summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "00:00:05")]
    public TimeSpan VerifyPollInterval { get; set; } = TimeSpan.FromMilliseconds(10);

    /// <summary>Attach binds the whole IOMMU group when the device is not bound yet.</summary>
    public bool GroupBindOnAttach { get; set; }

    /// <summary>
    /// Services the daemon may stop for the length of a bind when their processes hold the
    /// device (and starts again afterwards). Holders outside these services refuse the bind
    /// (<c>in_use</c>) unless it is forced.
    /// </summary>
    public string[] StoppableServices { get; set; } = ["nvidia-persistenced.service"];
}
