using System.Globalization;
using PciPassthrough.Discovery;
using PciPassthrough.Registry;
using PciPassthrough.Sysfs;
using PciPassthrough.Vfio;

namespace PciPassthrough.Lifecycle;

/// <summary>What every liveness mode shares: the registry's view of who holds what, and the holder scan.</summary>
public abstract class InstanceLivenessChecker(DeviceRegistry registry, IPciDiscovery discovery, ISysfs sysfs) : IInstanceLivenessChecker
{
    public abstract Task<InstanceState> IsInstanceRunningAsync(AttachmentRecord attachment, CancellationToken cancellationToken);

    public IReadOnlyList<string> GetInstanceDevices(string instanceId) =>
        registry.All().Where(r => r.Attachment?.InstanceId == instanceId).Select(r => r.Id).ToList();

    public IReadOnlyDictionary<string, IReadOnlyList<string>> ListAllInstanceDevices() =>
        registry.All()
            .Where(r => r.Attachment is not null)
            .GroupBy(r => r.Attachment!.InstanceId, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<string>)g.Select(r => r.Id).ToList(), StringComparer.Ordinal);

    public IReadOnlyList<SuspiciousProcess> DetectSuspiciousVmmProcesses()
    {
        // Expected holders per VFIO group: the pids of the attachments of devices in the group;
        // null when an attachment has no pid (then nobody can be told apart from the VMM).
        var expected = new Dictionary<string, HashSet<int>?>(StringComparer.Ordinal);
        foreach (var record in registry.All())
        {
            if (discovery.GetIommuGroup(record.PciAddress) is not (>= 0 and var group))
            {
                continue;
            }

            var node = SysfsPaths.VfioGroup(group);
            if (record.Attachment is { } attachment)
            {
                if (attachment.Pid is { } pid && expected.GetValueOrDefault(node, []) is { } pids)
                {
                    pids.Add(pid);
                    expected[node] = pids;
                }
                else
                {
                    expected[node] = null;
                }
            }
            else
            {
                expected.TryAdd(node, []);
            }
        }

        var nodes = sysfs.ListDirectory(SysfsPaths.DevVfio)
            .Where(e => int.TryParse(e, NumberStyles.None, CultureInfo.InvariantCulture, out _))
            .Select(e => $"{SysfsPaths.DevVfio}/{e}")
            .ToHashSet(StringComparer.Ordinal);
        var suspicious = new List<SuspiciousProcess>();
        foreach (var holder in ProcessScanner.FindHolders(sysfs, nodes))
        {
            if (!expected.TryGetValue(holder.Path, out var pids))
            {
                suspicious.Add(new SuspiciousProcess(holder.Pid, holder.Command, holder.Path, "holds a VFIO group of no registered device"));
            }
            else if (pids is { Count: 0 })
            {
                suspicious.Add(new SuspiciousProcess(holder.Pid, holder.Command, holder.Path, "holds a VFIO group whose devices are not attached"));
            }
            else if (pids is not null && !pids.Contains(holder.Pid))
            {
                suspicious.Add(new SuspiciousProcess(holder.Pid, holder.Command, holder.Path,
                    $"holds a VFIO group attached to pid {string.Join(", ", pids)}"));
            }
        }

        return suspicious;
    }
}

/// <summary>
/// <c>process</c>: an attachment made with a pid is alive while <c>/proc/PID</c> exists with the
/// start time recorded at attach; a pid reused by another process is gone. Without a pid: unknown.
/// </summary>
public sealed class ProcessLivenessChecker(DeviceRegistry registry, IPciDiscovery discovery, ISysfs sysfs)
    : InstanceLivenessChecker(registry, discovery, sysfs)
{
    private readonly ISysfs _sysfs = sysfs;

    public override Task<InstanceState> IsInstanceRunningAsync(AttachmentRecord attachment, CancellationToken cancellationToken)
    {
        if (attachment.Pid is not { } pid)
        {
            return Task.FromResult(InstanceState.Unknown);
        }

        var start = ProcessInfo.StartTime(_sysfs, pid);
        var state = start is null ? InstanceState.Gone
            : attachment.PidStartTime is { } recorded && recorded != start ? InstanceState.Gone
            : InstanceState.Running;
        return Task.FromResult(state);
    }
}

/// <summary><c>none</c>: nothing is known, so nothing is ever cleared automatically.</summary>
public sealed class NoLivenessChecker(DeviceRegistry registry, IPciDiscovery discovery, ISysfs sysfs)
    : InstanceLivenessChecker(registry, discovery, sysfs)
{
    public override Task<InstanceState> IsInstanceRunningAsync(AttachmentRecord attachment, CancellationToken cancellationToken) =>
        Task.FromResult(InstanceState.Unknown);
}

/// <summary>
/// <c>http</c>: asks the orchestrator <c>GET {Liveness:Url}/instances/{instance_id}</c>: 200 running,
/// 404 gone, anything else (or no answer in time) unknown. Timeouts and retries come from the
/// HttpClient's resilience pipeline.
/// </summary>
public sealed class HttpLivenessChecker(IHttpClientFactory clients, DeviceRegistry registry, IPciDiscovery discovery, ISysfs sysfs)
    : InstanceLivenessChecker(registry, discovery, sysfs)
{
    /// <summary>The named HttpClient (base address and resilience pipeline configured by the host).</summary>
    public const string ClientName = "liveness";

    public override async Task<InstanceState> IsInstanceRunningAsync(AttachmentRecord attachment, CancellationToken cancellationToken)
    {
        try
        {
            using var http = clients.CreateClient(ClientName);
            using var response = await http.GetAsync(
                new Uri($"instances/{Uri.EscapeDataString(attachment.InstanceId)}", UriKind.Relative), cancellationToken);
            return response.StatusCode switch
            {
                System.Net.HttpStatusCode.OK => InstanceState.Running,
                System.Net.HttpStatusCode.NotFound => InstanceState.Gone,
                _ => InstanceState.Unknown,
            };
        }
        catch (Exception) when (!cancellationToken.IsCancellationRequested)
        {
            // No answer (refused, timed out, retries exhausted) says nothing about the instance.
            return InstanceState.Unknown;
        }
    }
}
