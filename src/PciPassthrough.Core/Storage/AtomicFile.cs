using System.Runtime.InteropServices;

namespace PciPassthrough.Storage;

/// <summary>
/// Crash-safe file replacement: the new content goes to a temporary file in the same directory,
/// is flushed to disk, renamed over the target (atomic on POSIX file systems) and the directory
/// is flushed so the rename itself survives a power loss. Readers see the old file or the new
/// one, never a mix; a crash leaves at most a stray temporary file, which <see cref="IsTemporary"/> names.
/// </summary>
public static partial class AtomicFile
{
    public const string TemporarySuffix = ".tmp";

    public static void WriteAllBytes(string path, ReadOnlySpan<byte> content)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))
            ?? throw new ArgumentException("A file path is required", nameof(path));
        var temporary = Path.Combine(directory,
            $".{Path.GetFileName(path)}.{Guid.NewGuid():N}{TemporarySuffix}");
        try
        {
            using (var stream = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                stream.Write(content);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            TryDelete(temporary);
            throw;
        }

        FsyncDirectory(directory);
    }

    /// <summary>Deletes a file and makes the deletion durable.</summary>
    public static void Delete(string path)
    {
        File.Delete(path);
        FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>Moves a file within one file system, durably (both directories flushed).</summary>
    public static void Move(string source, string destination)
    {
        File.Move(source, destination, overwrite: false);
        FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(destination))!);
        FsyncDirectory(Path.GetDirectoryName(Path.GetFullPath(source))!);
    }

    /// <summary>True for a temporary file left behind by an interrupted <see cref="WriteAllBytes"/>.</summary>
    public static bool IsTemporary(string fileName) =>
        fileName.StartsWith('.') && fileName.EndsWith(TemporarySuffix, StringComparison.Ordinal);

    /// <summary>fsync(2) on a directory, which .NET's file APIs cannot open.</summary>
    public static void FsyncDirectory(string directory)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var fd = Native.Open(directory, Native.ORdonly | Native.ODirectory);
        if (fd < 0)
        {
            throw new IOException($"Cannot open directory for fsync (errno {Marshal.GetLastPInvokeError()})");
        }

        try
        {
            if (Native.Fsync(fd) != 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                // EINVAL: the file system does not support fsync on directories (some tmpfs/overlay
                // setups); the rename is as durable as that file system can make it.
                if (errno != Native.Einval)
                {
                    throw new IOException($"fsync of the state directory failed (errno {errno})");
                }
            }
        }
        finally
        {
            _ = Native.Close(fd);
        }
    }

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (IOException)
        {
            // Best effort: a stray temporary file is ignored and cleaned at the next start.
        }
        catch (UnauthorizedAccessException)
        {
            // Same: nothing more can be done here.
        }
    }

    private static partial class Native
    {
        public const int ORdonly = 0;
        public const int ODirectory = 0x10000; // Linux (x86-64, arm64)
        public const int Einval = 22;

        [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
        public static partial int Open(string path, int flags);

        [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
        public static partial int Fsync(int fd);

        [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
        public static partial int Close(int fd);
    }
}
