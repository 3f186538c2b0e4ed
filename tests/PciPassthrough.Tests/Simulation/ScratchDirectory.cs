namespace PciPassthrough.Simulation.Tests;

/// <summary>
/// A private temporary directory for a host tree or a state directory, removed when disposed. It
/// lives on tmpfs (/dev/shm) when the machine has one: these tests build and delete hundreds of
/// small sysfs trees, and on a disk-backed /tmp creating and deleting them dominates the run.
/// </summary>
internal sealed class ScratchDirectory : IDisposable
{
    private const string Tmpfs = "/dev/shm";

    public ScratchDirectory(string prefix = "pcipt-test")
    {
        var parent = IsUsable(Tmpfs) ? Tmpfs : System.IO.Path.GetTempPath();
        Path = System.IO.Path.Combine(parent, $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
    }

    public string Path { get; }

    public string Combine(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
            // A write left stuck on purpose may still hold a file; the directory is temporary anyway.
        }
    }

    private static bool IsUsable(string directory)
    {
        try
        {
            var probe = System.IO.Path.Combine(directory, $".pcipt-probe-{Guid.NewGuid():N}");
            File.WriteAllText(probe, "");
            File.Delete(probe);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
