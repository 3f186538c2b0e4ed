namespace PciPassthrough.Sysfs;

/// <summary>
/// The errno values the daemon reacts to. On Linux, .NET reports a failed <c>write(2)</c> as an
/// <see cref="IOException"/> whose <see cref="Exception.HResult"/> is the errno; the simulated
/// kernel fails the same way.
/// </summary>
public static class KernelErrno
{
    public const int ENOENT = 2;
    public const int EIO = 5;
    public const int EBUSY = 16;
    public const int EEXIST = 17;
    public const int ENODEV = 19;
    public const int EINVAL = 22;
    public const int EACCES = 13;
    public const int ENOTTY = 25;

    public static string Name(int errno) => errno switch
    {
        ENOENT => "ENOENT",
        EIO => "EIO",
        EBUSY => "EBUSY",
        EEXIST => "EEXIST",
        ENODEV => "ENODEV",
        EINVAL => "EINVAL",
        EACCES => "EACCES",
        ENOTTY => "ENOTTY",
        _ => $"errno {errno}",
    };

    /// <summary>The errno of a failed kernel write, when the exception carries one.</summary>
    public static int? Of(Exception exception) =>
        exception is IOException && exception.HResult is > 0 and < 4096 ? exception.HResult : null;

    /// <summary>An exception shaped like the one .NET raises for a failed write to <paramref name="path"/>.</summary>
    public static IOException Failure(int errno, string path) => new($"{Message(errno)} : '{path}'", errno);

    private static string Message(int errno) => errno switch
    {
        ENOENT => "No such file or directory",
        EIO => "Input/output error",
        EBUSY => "Device or resource busy",
        EEXIST => "File exists",
        ENODEV => "No such device",
        EINVAL => "Invalid argument",
        EACCES => "Permission denied",
        ENOTTY => "Inappropriate ioctl for device",
        _ => "Error",
    };
}
