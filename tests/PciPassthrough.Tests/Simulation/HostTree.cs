using System.Text;

namespace PciPassthrough.Simulation.Tests;

/// <summary>
/// Reads a simulated host tree the way <c>ls -l</c> and <c>cat</c> would, with plain file APIs and
/// never through the code under test.
/// </summary>
internal sealed class HostTree(string root)
{
    public string Root { get; } = System.IO.Path.GetFullPath(root);

    /// <summary>The file behind an absolute host path such as <c>/sys/bus/pci/devices/X/driver</c>.</summary>
    public string Path(string hostPath) => Root + hostPath;

    public static string DevicePath(string address) => "/sys/bus/pci/devices/" + address;

    /// <summary>The target of a symbolic link as <c>readlink</c> prints it, or null.</summary>
    public string? LinkTarget(string hostPath) => new FileInfo(Path(hostPath)).LinkTarget;

    /// <summary>The driver the device's <c>driver</c> link names, or null when there is no link.</summary>
    public string? DriverOf(string address) =>
        LinkTarget(DevicePath(address) + "/driver") is { } target ? System.IO.Path.GetFileName(target) : null;

    public string Read(string hostPath) => File.ReadAllText(Path(hostPath));

    public string OverrideOf(string address) => Read(DevicePath(address) + "/driver_override");

    /// <summary>True when an entry (file, directory or link, dangling or not) exists.</summary>
    public bool Exists(string hostPath)
    {
        var full = Path(hostPath);
        return System.IO.Path.Exists(full) || new FileInfo(full).LinkTarget is not null;
    }

    /// <summary>The device's real directory (what <c>readlink -f /sys/bus/pci/devices/X</c> prints).</summary>
    public string RealDeviceDirectory(string address)
    {
        var link = Path(DevicePath(address));
        var target = new FileInfo(link).LinkTarget!;
        return System.IO.Path.GetFullPath(System.IO.Path.Combine(System.IO.Path.GetDirectoryName(link)!, target));
    }

    /// <summary>
    /// Every entry under the root, recursively, without following links: a file's bytes, a link's
    /// target, or a directory marker. Two equal snapshots mean nothing was written.
    /// </summary>
    public SortedDictionary<string, string> Snapshot()
    {
        var entries = new SortedDictionary<string, string>(StringComparer.Ordinal);
        Walk(new DirectoryInfo(Root), entries);
        return entries;
    }

    private void Walk(DirectoryInfo directory, SortedDictionary<string, string> entries)
    {
        foreach (var entry in directory.EnumerateFileSystemInfos())
        {
            var relative = System.IO.Path.GetRelativePath(Root, entry.FullName);
            if (entry.LinkTarget is { } target)
            {
                entries[relative] = "link -> " + target;
            }
            else if (entry is DirectoryInfo sub)
            {
                entries[relative] = "dir";
                Walk(sub, entries);
            }
            else
            {
                entries[relative] = "file " + Convert.ToBase64String(File.ReadAllBytes(entry.FullName));
            }
        }
    }

    /// <summary>The entries that differ between two snapshots, for readable assertion messages.</summary>
    public static string Diff(IReadOnlyDictionary<string, string> before, IReadOnlyDictionary<string, string> after)
    {
        var text = new StringBuilder();
        foreach (var key in before.Keys.Union(after.Keys).Order(StringComparer.Ordinal))
        {
            var a = before.GetValueOrDefault(key);
            var b = after.GetValueOrDefault(key);
            if (a != b)
            {
                text.Append(key).Append(": ").Append(a ?? "(absent)").Append(" => ").Append(b ?? "(absent)").Append('\n');
            }
        }

        return text.ToString();
    }
}
