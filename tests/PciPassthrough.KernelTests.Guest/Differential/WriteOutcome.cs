using PciPassthrough.KernelTests.Guest.Kernel;
using PciPassthrough.Sysfs;

namespace PciPassthrough.KernelTests.Guest.Differential;

/// <summary>
/// A kernel write's outcome as one word: <c>ok</c> or the errno's name. .NET reports a refused
/// write(2) as an <see cref="IOException"/> whose HResult is the errno, and a failed open as
/// FileNotFound (ENOENT) or UnauthorizedAccess (EACCES/EPERM); the simulated kernel raises the
/// same shapes, so both sides name outcomes the same way.
/// </summary>
public static class WriteOutcome
{
    public const string Ok = "ok";

    public static string Of(ISysfs sysfs, string path, string value)
    {
        try
        {
            sysfs.Write(path, value);
            return Ok;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return Name(e);
        }
    }

    public static string Name(Exception exception) => exception switch
    {
        FileNotFoundException or DirectoryNotFoundException => "ENOENT",
        UnauthorizedAccessException => "EACCES",
        IOException io when io.HResult is > 0 and < 4096 => Errno.Name(io.HResult),
        _ => $"{exception.GetType().Name} (HResult 0x{exception.HResult:x8}): {exception.Message}",
    };
}
