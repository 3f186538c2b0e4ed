using PciPassthrough.Registry;

namespace PciPassthrough.Lifecycle;

/// <summary>
/// Whether instances holding devices still exist (the seed's InstanceLivenessChecker). The
/// implementation is chosen by <c>Liveness:Mode</c>.
/// </summary>
public interface IInstanceLivenessChecker
{
    /// <summary>Running, gone, or unknown (no way to tell: never a reason to clear anything).</summary>
    Task<InstanceState> IsInstanceRunningAsync(AttachmentRecord attachment, CancellationToken cancellationToken);

    /// <summary>Ids of the devices attached to an instance; empty when it holds none.</summary>
    IReadOnlyList<string> GetInstanceDevices(string instanceId);

    /// <summary>Every instance holding devices, with the ids of its devices.</summary>
    IReadOnlyDictionary<string, IReadOnlyList<string>> ListAllInstanceDevices();

    /// <summary>
    /// Processes holding a <c>/dev/vfio/N</c> that no attachment explains: a group of devices not
    /// attached, or attached to another pid. Reported, never killed.
    /// </summary>
    IReadOnlyList<SuspiciousProcess> DetectSuspiciousVmmProcesses();
}

public sealed record SuspiciousProcess(int Pid, string Command, string VfioGroup, string Reason);
