using PciPassthrough.Devices;

namespace PciPassthrough.Registry;

/// <summary>
/// What the daemon knows about a registered device and must never lose: identity (address plus
/// vendor/device id, never the IOMMU group number, which can change across reboots), what it must
/// restore (the original driver and override), and who holds the device. One JSON file per record.
/// </summary>
public sealed record DeviceRecord
{
    public const int CurrentSchema = 1;

    public int Schema { get; init; } = CurrentSchema;

    public required string Id { get; init; }

    public required string Name { get; init; }

    public required PciAddress PciAddress { get; init; }

    /// <summary>Four lowercase hex digits, as read at registration.</summary>
    public required string VendorId { get; init; }

    public required string DeviceId { get; init; }

    /// <summary>Six lowercase hex digits.</summary>
    public required string ClassCode { get; init; }

    public required DeviceType Type { get; init; }

    /// <summary>The IOMMU group last seen (-1 without an IOMMU).</summary>
    public required int IommuGroup { get; init; }

    public required DateTime CreatedAt { get; init; }

    public DateTime UpdatedAt { get; init; }

    /// <summary>Bumped on every change; the device's ETag.</summary>
    public long Revision { get; init; } = 1;

    /// <summary>The host driver to give the device back to; null when it had none.</summary>
    public string? OriginalDriver { get; init; }

    /// <summary>Set while the daemon has the device (and maybe its group) on vfio-pci.</summary>
    public BindingRecord? Binding { get; init; }

    /// <summary>Set while an instance holds the device.</summary>
    public AttachmentRecord? Attachment { get; init; }

    /// <summary>Set after an operation failed half-way and the device needs a reset or reconcile.</summary>
    public QuarantineRecord? Quarantine { get; init; }
}

/// <summary>What the daemon changed to bind a device, so that unbind can undo exactly that.</summary>
public sealed record BindingRecord
{
    public required DateTime BoundAt { get; init; }

    /// <summary>True when the whole IOMMU group was bound with the device.</summary>
    public bool Group { get; init; }

    /// <summary>Every function the daemon moved to vfio-pci (the device first), with what to restore.</summary>
    public required IReadOnlyList<BoundFunction> Functions { get; init; }
}

public sealed record BoundFunction
{
    public required PciAddress PciAddress { get; init; }

    /// <summary>The driver before the bind; null when the function had none.</summary>
    public string? OriginalDriver { get; init; }

    /// <summary>The <c>driver_override</c> before the bind; null when unset.</summary>
    public string? OriginalDriverOverride { get; init; }

    /// <summary>
    /// The function was on vfio-pci before the daemon knew it, so its host driver is unknown:
    /// restoring it lets the kernel's probe choose.
    /// </summary>
    public bool OriginalUnknown { get; init; }
}

public sealed record AttachmentRecord
{
    public required string InstanceId { get; init; }

    public int? Pid { get; init; }

    /// <summary>Start time of <see cref="Pid"/> (field 22 of /proc/pid/stat), so a reused pid is not mistaken for it.</summary>
    public long? PidStartTime { get; init; }

    public required DateTime AttachedAt { get; init; }
}

public sealed record QuarantineRecord
{
    public required string Reason { get; init; }

    public required string Code { get; init; }

    public required DateTime Since { get; init; }
}
