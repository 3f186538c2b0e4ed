using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Vfio;

namespace PciPassthrough.Registry;

/// <summary>Options of a bind, unbind or reset.</summary>
/// <param name="Group">Bind every endpoint of the IOMMU group with the device.</param>
/// <param name="Force">Go ahead although processes hold the device (each write still bounded by the timeout).</param>
/// <param name="DryRun">Return the plan and write nothing.</param>
/// <param name="IfMatch">Version tokens the caller expects the record to be at (If-Match); null: no precondition.</param>
public sealed record VfioRequest(bool Group = false, bool Force = false, bool DryRun = false,
    IReadOnlyCollection<string>? IfMatch = null);

/// <summary>What a VFIO operation returns: the device afterwards, or the plan of a dry run.</summary>
public sealed record VfioResult(Device? Device, OperationPlan? Plan);

/// <summary>Attach a device to an instance (the seed's MarkAttached, made exclusive and retry-safe).</summary>
/// <param name="InstanceId">The instance (VM) taking the device.</param>
/// <param name="Pid">The VMM process, when known: liveness then follows it (with its start time).</param>
/// <param name="IfMatch">Version tokens the caller expects (If-Match); null: no precondition.</param>
public sealed record AttachCommand(string InstanceId, int? Pid = null, IReadOnlyCollection<string>? IfMatch = null);

/// <summary>Detach a device from an instance (the seed's MarkDetached, owner-checked).</summary>
/// <param name="InstanceId">The instance giving the device back.</param>
/// <param name="Release">Also return the device to its original driver.</param>
/// <param name="IfMatch">Version tokens the caller expects (If-Match); null: no precondition.</param>
public sealed record DetachCommand(string InstanceId, bool Release = false, IReadOnlyCollection<string>? IfMatch = null);

public static class Preconditions
{
    /// <summary>The version token of a record (its ETag without quotes): id and revision, so a re-created device never matches.</summary>
    public static string VersionOf(string id, long revision) => $"{id}-{revision.ToString(System.Globalization.CultureInfo.InvariantCulture)}";

    /// <summary>Throws <c>precondition_failed</c> when the record is not at a version the caller named.</summary>
    public static void Check(DeviceRecord record, IReadOnlyCollection<string>? ifMatch)
    {
        if (ifMatch is not null && !ifMatch.Contains(VersionOf(record.Id, record.Revision), StringComparer.Ordinal))
        {
            throw new PassthroughException(ErrorCodes.PreconditionFailed,
                "The device changed since the ETag given in If-Match; read it again and retry",
                new Dictionary<string, object?> { ["current_etag"] = $"\"{VersionOf(record.Id, record.Revision)}\"" });
        }
    }
}
