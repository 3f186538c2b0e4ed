using System.Runtime.InteropServices;

namespace PciPassthrough.KernelTests.Guest.Kernel;

/// <summary>The few libc calls .NET has no API for: ioctl on VFIO nodes, realpath, kill with a signal.</summary>
internal static partial class Libc
{
    public const int ORdwr = 2;
    public const int OCloexec = 0x80000;
    public const int Sigterm = 15;

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    /// <summary>ioctl with an integer argument (or none: pass 0).</summary>
    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static partial int IoctlValue(int fd, nuint request, nint argument);

    /// <summary>ioctl with a pointer to a caller-owned buffer.</summary>
    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    public static unsafe partial int IoctlPointer(int fd, nuint request, void* argument);

    /// <summary>ioctl with a NUL-terminated string argument (VFIO_GROUP_GET_DEVICE_FD).</summary>
    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int IoctlString(int fd, nuint request, string argument);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    public static partial int Kill(int pid, int signal);

    [LibraryImport("libc", EntryPoint = "realpath", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial nint RealPathNative(string path, nint resolved);

    [LibraryImport("libc", EntryPoint = "free")]
    private static partial void Free(nint pointer);

    /// <summary>The canonical path (every symlink resolved), or null when it does not exist.</summary>
    public static string? RealPath(string path)
    {
        var resolved = RealPathNative(path, 0);
        if (resolved == 0)
        {
            return null;
        }

        try
        {
            return Marshal.PtrToStringUTF8(resolved);
        }
        finally
        {
            Free(resolved);
        }
    }

    /// <summary>errno of the last call as its symbolic name and text, e.g. <c>EPERM (Operation not permitted)</c>.</summary>
    public static string LastError()
    {
        var errno = Marshal.GetLastPInvokeError();
        return $"{Errno.Name(errno)} ({Marshal.GetPInvokeErrorMessage(errno)})";
    }
}

/// <summary>Linux errno numbers by name (x86-64), for readable outcomes.</summary>
public static class Errno
{
    private static readonly Dictionary<int, string> Names = new()
    {
        [1] = "EPERM",
        [2] = "ENOENT",
        [3] = "ESRCH",
        [4] = "EINTR",
        [5] = "EIO",
        [6] = "ENXIO",
        [7] = "E2BIG",
        [9] = "EBADF",
        [11] = "EAGAIN",
        [12] = "ENOMEM",
        [13] = "EACCES",
        [14] = "EFAULT",
        [16] = "EBUSY",
        [17] = "EEXIST",
        [19] = "ENODEV",
        [20] = "ENOTDIR",
        [21] = "EISDIR",
        [22] = "EINVAL",
        [25] = "ENOTTY",
        [28] = "ENOSPC",
        [30] = "EROFS",
        [34] = "ERANGE",
        [38] = "ENOSYS",
        [95] = "EOPNOTSUPP",
        [110] = "ETIMEDOUT",
    };

    public static string Name(int errno) => Names.TryGetValue(errno, out var name) ? name : $"errno {errno}";
}
