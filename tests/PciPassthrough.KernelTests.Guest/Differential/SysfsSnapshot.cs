using System.Text.Json;
using PciPassthrough.Devices;
using PciPassthrough.KernelTests.Guest.Kernel;
using PciPassthrough.Sysfs;

namespace PciPassthrough.KernelTests.Guest.Differential;

/// <summary>One entry of a snapshot: a directory, a file (text or base64 bytes) or a symlink, by root-relative path.</summary>
public sealed record SnapshotEntry
{
    public required string Kind { get; init; }

    public required string Path { get; init; }

    public string? Text { get; init; }

    public string? Base64 { get; init; }

    /// <summary>For links: the root-relative path the link points to (made relative when written).</summary>
    public string? Target { get; init; }
}

/// <summary>
/// The parts of a host's sysfs the daemon and the simulated kernel use, copied into a tree shaped
/// like <see cref="Simulation.SysfsTreeBuilder"/>'s: real directories under
/// <c>sys/devices/pciDDDD:BB/…</c> with the id, class, override, reset and config files,
/// <c>bus/pci/devices</c> links to them, <c>driver</c> links and driver directories (with their
/// bind, unbind, new_id, remove_id files), <c>kernel/iommu_groups/N/devices</c>, and
/// <c>dev/vfio/vfio</c>. It travels as one JSON manifest (no symlinks over 9p) and is written out
/// as a tree with <see cref="Materialize"/>.
/// </summary>
public sealed record SysfsSnapshot
{
    public const string FileName = "sysfs-snapshot.json";

    private static readonly string[] TextAttributes =
    [
        "vendor", "device", "subsystem_vendor", "subsystem_device", "class", "revision", "numa_node",
        "driver_override", "reset_method", "enable", "irq", "local_cpulist", "modalias",
    ];

    private static readonly string[] DriverFiles = ["bind", "unbind", "new_id", "remove_id", "uevent"];

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = false,
        DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull,
    };

    public required IReadOnlyList<SnapshotEntry> Entries { get; init; }

    /// <summary>Copies the relevant parts of the live /sys (and /proc/cmdline) under <paramref name="root"/>.</summary>
    public static SysfsSnapshot Capture(string root = "/")
    {
        var entries = new List<SnapshotEntry>();
        var sys = System.IO.Path.Combine(root, "sys");
        string Rel(string full) => System.IO.Path.GetRelativePath(root, full);
        void Dir(string rel) => entries.Add(new SnapshotEntry { Kind = "dir", Path = rel });
        void Text(string rel, string text) => entries.Add(new SnapshotEntry { Kind = "file", Path = rel, Text = text });
        void Link(string rel, string target) => entries.Add(new SnapshotEntry { Kind = "link", Path = rel, Target = target });

        Dir("sys/bus/pci/devices");
        Dir("sys/bus/pci/drivers");
        Dir("sys/kernel/iommu_groups");
        Dir("dev/vfio");
        Dir("proc");
        Text("sys/bus/pci/drivers_probe", "");
        Text("sys/bus/pci/rescan", "");
        Text("dev/vfio/vfio", "");
        Text("proc/cmdline", File.ReadAllText(System.IO.Path.Combine(root, "proc/cmdline")));

        foreach (var driver in Directory.EnumerateDirectories(System.IO.Path.Combine(sys, "bus/pci/drivers")).Select(System.IO.Path.GetFileName).Order(StringComparer.Ordinal))
        {
            Dir($"sys/bus/pci/drivers/{driver}");
            foreach (var file in DriverFiles)
            {
                Text($"sys/bus/pci/drivers/{driver}/{file}", "");
            }
        }

        var groups = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var link in Directory.EnumerateFileSystemEntries(System.IO.Path.Combine(sys, "bus/pci/devices")).Order(StringComparer.Ordinal))
        {
            var name = System.IO.Path.GetFileName(link);
            if (!PciAddress.TryParse(name, out var address) || name != address.ToString())
            {
                continue;
            }

            var real = Libc.RealPath(link) ?? throw new InvalidOperationException($"{link} does not resolve");
            var dir = Rel(real);
            Dir(dir);
            foreach (var attribute in TextAttributes)
            {
                var file = System.IO.Path.Combine(real, attribute);
                if (File.Exists(file))
                {
                    Text($"{dir}/{attribute}", File.ReadAllText(file));
                }
            }

            if (File.Exists(System.IO.Path.Combine(real, "reset")))
            {
                Text($"{dir}/reset", "");
            }

            entries.Add(new SnapshotEntry
            {
                Kind = "file",
                Path = $"{dir}/config",
                Base64 = Convert.ToBase64String(File.ReadAllBytes(System.IO.Path.Combine(real, "config"))),
            });
            Link($"sys/bus/pci/devices/{name}", dir);
            Link($"{dir}/subsystem", "sys/bus/pci");
            if (new FileInfo(System.IO.Path.Combine(real, "driver")).LinkTarget is { } driverLink)
            {
                var driver = SysfsPaths.LastSegment(driverLink);
                Link($"{dir}/driver", $"sys/bus/pci/drivers/{driver}");
                Link($"sys/bus/pci/drivers/{driver}/{name}", dir);
            }

            if (new FileInfo(System.IO.Path.Combine(real, "iommu_group")).LinkTarget is { } groupLink)
            {
                var group = SysfsPaths.LastSegment(groupLink);
                if (groups.Add(group))
                {
                    Dir($"sys/kernel/iommu_groups/{group}/devices");
                    var type = System.IO.Path.Combine(sys, "kernel/iommu_groups", group, "type");
                    Text($"sys/kernel/iommu_groups/{group}/type", File.Exists(type) ? File.ReadAllText(type) : "");
                }

                Link($"{dir}/iommu_group", $"sys/kernel/iommu_groups/{group}");
                Link($"sys/kernel/iommu_groups/{group}/devices/{name}", dir);
            }
        }

        return new SysfsSnapshot { Entries = entries };
    }

    /// <summary>Writes the tree under <paramref name="root"/> (created; must not hold another tree).</summary>
    public void Materialize(string root)
    {
        Directory.CreateDirectory(root);
        foreach (var entry in Entries)
        {
            var full = System.IO.Path.Combine(root, entry.Path);
            switch (entry.Kind)
            {
                case "dir":
                    Directory.CreateDirectory(full);
                    break;
                case "file":
                    Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
                    if (entry.Base64 is { } base64)
                    {
                        File.WriteAllBytes(full, Convert.FromBase64String(base64));
                    }
                    else
                    {
                        File.WriteAllText(full, entry.Text ?? "");
                    }

                    break;
                case "link":
                    break;
                default:
                    throw new InvalidDataException($"unknown snapshot entry kind '{entry.Kind}'");
            }
        }

        // Links last, relative like sysfs's own, once every target exists.
        foreach (var entry in Entries.Where(e => e.Kind == "link"))
        {
            var full = System.IO.Path.Combine(root, entry.Path);
            Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
            var target = System.IO.Path.Combine(root, entry.Target!);
            File.CreateSymbolicLink(full, System.IO.Path.GetRelativePath(System.IO.Path.GetDirectoryName(full)!, target));
        }
    }

    public void Write(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, JsonOptions));

    public static SysfsSnapshot Read(string path) =>
        JsonSerializer.Deserialize<SysfsSnapshot>(File.ReadAllText(path), JsonOptions)
            ?? throw new InvalidDataException($"{path} is empty");
}
