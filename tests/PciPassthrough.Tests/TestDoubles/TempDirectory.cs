namespace PciPassthrough.Tests.TestDoubles;

/// <summary>A directory for one test, removed when disposed.</summary>
/// <remarks>
/// Made under /dev/shm (tmpfs) when the machine has one: the sysfs-shaped trees tests build are
/// thousands of small files and links, and creating them on a disk file system of a virtual
/// machine costs a few hundred microseconds each. Tests about durability on a real disk pass
/// <see cref="System.IO.Path.GetTempPath"/> as the parent.
/// </remarks>
public sealed class TempDirectory : IDisposable
{
    private const string SharedMemory = "/dev/shm";

    public TempDirectory(string prefix = "pcipt-test", string? parent = null)
    {
        parent ??= DefaultParent.Value;
        Path = parent is null
            ? Directory.CreateTempSubdirectory(prefix + "-").FullName
            : Directory.CreateDirectory(System.IO.Path.Combine(parent, $"{prefix}-{Guid.NewGuid():N}")).FullName;
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
            // A test that failed half-way may have left a file open; the OS cleans temp eventually.
        }
    }

    private static readonly Lazy<string?> DefaultParent = new(() =>
    {
        try
        {
            if (!Directory.Exists(SharedMemory))
            {
                return null;
            }

            var probe = System.IO.Path.Combine(SharedMemory, $"pcipt-probe-{Guid.NewGuid():N}");
            Directory.CreateDirectory(probe);
            Directory.Delete(probe);
            return SharedMemory;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    });
}
