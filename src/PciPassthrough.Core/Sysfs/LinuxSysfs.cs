using System.Text;

namespace PciPassthrough.Sysfs;

/// <summary>
/// <see cref="ISysfs"/> over a directory tree: the real host when the root is <c>/</c>, or a
/// synthetic or copied tree anywhere else. Writes are one <c>write(2)</c> of the whole value, so
/// the kernel sees exactly what <c>echo -n value &gt; file</c> would give it.
/// </summary>
public class LinuxSysfs : ISysfs
{
    public LinuxSysfs(string root)
    {
        Root = Path.GetFullPath(root);
    }

    /// <summary>The directory standing for <c>/</c>.</summary>
    public string Root { get; }

    public virtual string? ReadText(string path)
    {
        var full = Resolve(path);
        try
        {
            // Attributes are small; one open and one read (two for a full page) is what lspci
            // does too, and it keeps discovery of thousands of functions fast.
            using var handle = File.OpenHandle(full, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
            Span<byte> buffer = stackalloc byte[4096];
            var read = RandomAccess.Read(handle, buffer, 0);
            if (read < buffer.Length)
            {
                return Encoding.UTF8.GetString(buffer[..read]);
            }

            using var stream = new FileStream(handle, FileAccess.Read);
            using var reader = new StreamReader(stream, Encoding.UTF8);
            return reader.ReadToEnd();
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }
    }

    public virtual string? ReadLink(string path)
    {
        try
        {
            return new FileInfo(Resolve(path)).LinkTarget;
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return null;
        }
    }

    public virtual IReadOnlyList<string> ListDirectory(string path)
    {
        var full = Resolve(path);
        try
        {
            return Directory.EnumerateFileSystemEntries(full).Select(Path.GetFileName).OfType<string>().ToList();
        }
        catch (Exception e) when (e is DirectoryNotFoundException or FileNotFoundException)
        {
            return [];
        }
    }

    public virtual bool Exists(string path)
    {
        var full = Resolve(path);
        // A dangling symlink still "exists" as an entry, as it does for ls; callers that need the
        // target use ReadLink.
        return Path.Exists(full) || new FileInfo(full).LinkTarget is not null;
    }

    public virtual void Write(string path, string value)
    {
        var full = Resolve(path);
        var bytes = Encoding.ASCII.GetBytes(value);
        // Never O_CREAT: sysfs attributes exist already, and a write to a missing
        // attribute must fail as it does on the kernel rather than create a regular file.
        using var handle = File.OpenHandle(full, FileMode.Truncate, FileAccess.Write, FileShare.ReadWrite);
        RandomAccess.Write(handle, bytes, 0);
    }

    /// <summary>Maps an absolute host path under <see cref="Root"/>, refusing anything that could leave it.</summary>
    protected string Resolve(string path)
    {
        SysfsPaths.EnsureSafe(path);
        return Root == "/" ? path : Root + path;
    }
}
