using PciPassthrough.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using PciPassthrough.Devices;
using PciPassthrough.Reconcile;
using PciPassthrough.Registry;
using PciPassthrough.Simulation;
using PciPassthrough.Tests.TestDoubles;
using PciPassthrough.Vfio;

namespace PciPassthrough.Lifecycle.Tests;

/// <summary>
/// What the lifecycle, reconcile and registry tests share: fake processes in a host tree's
/// <c>proc/</c>, the pieces <see cref="SimulatedHost"/> does not build (liveness, runner, a manager
/// with other VFIO options), and snapshots of trees for "nothing changed" checks.
/// </summary>
public static class LifecycleTestKit
{
    public const string Nvme = "0000:3b:00.0";
    public const string Nvme2 = "0000:d8:00.0";
    public const string Gpu = "0000:17:00.0";
    public const string GpuAudio = "0000:17:00.1";
    public const string Nic = "0000:04:00.0";
    public const string ConsoleVga = "0000:03:00.0";

    /// <summary>
    /// Writes <c>proc/PID</c> under a host root: <c>stat</c> (field 22 = <paramref name="startTime"/>,
    /// formatted as the kernel does), <c>comm</c>, and <c>fd/N</c> links to <paramref name="openFiles"/>.
    /// No <c>.simulated</c> marker, so the simulated kernel leaves it alone.
    /// </summary>
    public static void WriteProcess(string hostRoot, int pid, long startTime, string command = "qemu-system-x86", params string[] openFiles)
    {
        var dir = Path.Combine(hostRoot, "proc", pid.ToString(CultureInfo.InvariantCulture));
        if (Directory.Exists(dir))
        {
            Directory.Delete(dir, recursive: true);
        }

        Directory.CreateDirectory(Path.Combine(dir, "fd"));
        File.WriteAllText(Path.Combine(dir, "stat"), StatLine(pid, command, startTime));
        File.WriteAllText(Path.Combine(dir, "comm"), command + "\n");
        var fd = 3;
        foreach (var target in openFiles)
        {
            File.CreateSymbolicLink(Path.Combine(dir, "fd", fd++.ToString(CultureInfo.InvariantCulture)), target);
        }
    }

    /// <summary>The process exits: its /proc entry goes.</summary>
    public static void RemoveProcess(string hostRoot, int pid) =>
        Directory.Delete(Path.Combine(hostRoot, "proc", pid.ToString(CultureInfo.InvariantCulture)), recursive: true);

    /// <summary>A /proc/PID/stat line: 52 fields, the command in parentheses, field 22 the start time.</summary>
    public static string StatLine(int pid, string command, long startTime)
    {
        var fields = new string[52];
        Array.Fill(fields, "0");
        fields[0] = pid.ToString(CultureInfo.InvariantCulture);
        fields[1] = $"({command})";
        fields[2] = "S";
        fields[3] = "1";
        fields[21] = startTime.ToString(CultureInfo.InvariantCulture);
        return string.Join(' ', fields) + "\n";
    }

    public static ProcessLivenessChecker ProcessLiveness(SimulatedHost host) => new(host.Registry, host.Discovery, host.Kernel);

    public static ReconcileRunner Runner(SimulatedHost host, IInstanceLivenessChecker? liveness = null, bool restoreStranded = false,
        TimeProvider? time = null) =>
        new(host.Registry, host.Discovery, host.Binder, host.Journal, host.Manager, liveness ?? ProcessLiveness(host),
            new PassthroughMetrics(new TestMeterFactory()),
            Options.Create(new ReconcileOptions { RestoreStranded = restoreStranded, Interval = TimeSpan.Zero }),
            time ?? TimeProvider.System, NullLogger<ReconcileRunner>.Instance);

    /// <summary>A manager over the host's parts with other VFIO options (e.g. group bind on attach).</summary>
    public static DeviceManager Manager(SimulatedHost host, VfioOptions options) =>
        new(host.Registry, host.Discovery, host.Kernel, host.Binder, host.Journal, Options.Create(options),
            TimeProvider.System, NullLogger<DeviceManager>.Instance);

    public static async Task<Device> RegisterAsync(SimulatedHost host, string address, string? name = null) =>
        await host.Manager.CreateDeviceAsync(new CreateDeviceCommand(address, name));

    /// <summary>The record as the registry holds it now.</summary>
    public static DeviceRecord Record(SimulatedHost host, string id) =>
        host.Registry.Find(id) ?? throw new InvalidOperationException($"no record {id}");

    /// <summary>The record file as it is on disk (<c>devices/&lt;id&gt;.json</c>).</summary>
    public static JsonElement RecordOnDisk(SimulatedHost host, string id)
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(host.State.Devices, id + ".json")));
        return document.RootElement.Clone();
    }

    /// <summary>The instance an on-disk record names as attached, or null.</summary>
    public static string? AttachedOnDisk(SimulatedHost host, string id) =>
        RecordOnDisk(host, id).TryGetProperty("attachment", out var attachment) ? attachment.GetProperty("instance_id").GetString() : null;

    /// <summary>The journal files left (operations not finished).</summary>
    public static IReadOnlyList<string> JournalFiles(SimulatedHost host) =>
        Directory.EnumerateFiles(host.State.Journal).Select(Path.GetFileName).OfType<string>().ToList();

    /// <summary>Every driver of the fixture's functions as the tree shows it now.</summary>
    public static IReadOnlyDictionary<string, string?> Drivers(SimulatedHost host) =>
        GpuServerFixture.Devices.ToDictionary(d => d.Address.ToString(), d => host.DriverOf(d.Address.ToString()));

    /// <summary>The fixture's drivers as the host came up.</summary>
    public static IReadOnlyDictionary<string, string?> OriginalDrivers() =>
        GpuServerFixture.Devices.ToDictionary(d => d.Address.ToString(), d => d.Driver);

    /// <summary>
    /// Every entry under a directory: files with a hash of their bytes, links with their target,
    /// directories by name. Equal snapshots mean nothing was written, created, removed or relinked.
    /// </summary>
    public static SortedDictionary<string, string> Snapshot(string root)
    {
        var entries = new SortedDictionary<string, string>(StringComparer.Ordinal);
        Walk(new DirectoryInfo(root));
        return entries;

        void Walk(DirectoryInfo dir)
        {
            foreach (var entry in dir.EnumerateFileSystemInfos())
            {
                var relative = Path.GetRelativePath(root, entry.FullName);
                if (entry.LinkTarget is { } target)
                {
                    entries[relative] = "link " + target;
                }
                else if (entry is DirectoryInfo sub)
                {
                    entries[relative] = "dir";
                    Walk(sub);
                }
                else
                {
                    entries[relative] = "file " + Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(entry.FullName)));
                }
            }
        }
    }

    /// <summary>Asserts two snapshots are equal, naming the first differences.</summary>
    public static void SameSnapshot(SortedDictionary<string, string> before, SortedDictionary<string, string> after)
    {
        var differences = before.Keys.Union(after.Keys)
            .Where(k => before.GetValueOrDefault(k) != after.GetValueOrDefault(k))
            .Select(k => $"{k}: {before.GetValueOrDefault(k) ?? "absent"} -> {after.GetValueOrDefault(k) ?? "absent"}")
            .Take(10)
            .ToList();
        Assert.True(differences.Count == 0, "changed: " + string.Join("; ", differences));
    }
}
