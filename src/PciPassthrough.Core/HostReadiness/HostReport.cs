namespace PciPassthrough.HostReadiness;

/// <summary>Whether this host can pass devices through, and what to fix when it cannot.</summary>
public sealed record HostReport
{
    /// <summary>True when nothing of severity error was found.</summary>
    public required bool Ready { get; init; }

    public required IommuStatus Iommu { get; init; }

    public required VfioStatus Vfio { get; init; }

    public required string KernelCmdline { get; init; }

    public required IReadOnlyList<Finding> Findings { get; init; }
}

/// <param name="Enabled">The kernel made IOMMU groups.</param>
/// <param name="Groups">How many.</param>
/// <param name="InterruptRemapping">Whether interrupt remapping is on; null when it cannot be told.</param>
public sealed record IommuStatus(bool Enabled, int Groups, bool? InterruptRemapping);

public sealed record VfioStatus(bool VfioPciAvailable, bool DevVfio);

/// <param name="Code">Stable name of the finding.</param>
/// <param name="Severity">info, warning or error.</param>
/// <param name="Message">What was found.</param>
/// <param name="Remedy">What to do about it.</param>
public sealed record Finding(string Code, string Severity, string Message, string Remedy);
