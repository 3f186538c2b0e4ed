namespace PciPassthrough.Sysfs;

/// <summary>
/// The daemon's only door to the kernel: <c>/sys</c>, <c>/dev</c> and <c>/proc</c> under a root
/// directory. Paths are absolute host paths (<c>/sys/bus/pci/devices/...</c>) built by
/// <see cref="SysfsPaths"/> from validated values; implementations map them under their root.
/// Implementations: <see cref="LinuxSysfs"/> (a real host or a copy of one) and the simulated host,
/// which reacts to writes the way Linux does.
/// </summary>
public interface ISysfs
{
    /// <summary>The file's text, or null when it does not exist.</summary>
    /// <exception cref="IOException">The file exists but cannot be read.</exception>
    string? ReadText(string path);

    /// <summary>The target of a symbolic link, or null when the path is not a link or does not exist.</summary>
    string? ReadLink(string path);

    /// <summary>The names of the entries of a directory; empty when it does not exist.</summary>
    IReadOnlyList<string> ListDirectory(string path);

    /// <summary>True when a file, directory or link exists at the path.</summary>
    bool Exists(string path);

    /// <summary>
    /// Writes <paramref name="value"/> to a kernel attribute, as one <c>write(2)</c>. Like the
    /// kernel's, this can block (an unbind waits for every user of the device to let go), so
    /// callers that must stay responsive bound it (see <c>BoundedKernelWriter</c>).
    /// </summary>
    /// <exception cref="IOException">The kernel refused the write (ENODEV, EINVAL, EBUSY...).</exception>
    void Write(string path, string value);
}
