using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using PciPassthrough.Registry;

namespace PciPassthrough.Storage;

/// <summary>
/// The resolved state directory and its layout: <c>devices/</c> (one record per file),
/// <c>journal/</c> (intents of unfinished operations) and <c>quarantine/</c> (files that could not
/// be read, kept byte for byte).
/// </summary>
public sealed partial class StateDirectory
{
    public StateDirectory(string root)
    {
        Root = Path.GetFullPath(root);
        Devices = Path.Combine(Root, "devices");
        Journal = Path.Combine(Root, "journal");
        Quarantine = Path.Combine(Root, "quarantine");
    }

    public string Root { get; }

    public string Devices { get; }

    public string Journal { get; }

    public string Quarantine { get; }

    /// <summary>Creates the layout; the root is private to the daemon (0700).</summary>
    public void EnsureCreated()
    {
        foreach (var dir in new[] { Root, Devices, Journal, Quarantine })
        {
            if (!Directory.Exists(dir))
            {
                Directory.CreateDirectory(dir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
        }
    }

    /// <summary>
    /// The configured directory, else the system default when this user can use it, else the
    /// per-user state directory (so the daemon starts for a non-root user without flags).
    /// </summary>
    public static StateDirectory Resolve(IOptions<StateOptions> options, ILogger<StateDirectory> logger)
    {
        var configured = options.Value.Directory;
        if (!string.IsNullOrWhiteSpace(configured))
        {
            return new StateDirectory(configured);
        }

        if (CanUse(StateOptions.DefaultDirectory))
        {
            return new StateDirectory(StateOptions.DefaultDirectory);
        }

        var xdg = Environment.GetEnvironmentVariable("XDG_STATE_HOME");
        var userState = !string.IsNullOrEmpty(xdg) && Path.IsPathRooted(xdg)
            ? xdg
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local", "state");
        var fallback = Path.Combine(userState, "pci-passthrough");
        LogFallback(logger, StateOptions.DefaultDirectory, fallback);
        return new StateDirectory(fallback);
    }

    private static bool CanUse(string directory)
    {
        try
        {
            Directory.CreateDirectory(directory);
            var probe = Path.Combine(directory, $".probe-{Environment.ProcessId}");
            File.WriteAllBytes(probe, []);
            File.Delete(probe);
            return true;
        }
        catch (UnauthorizedAccessException)
        {
            return false;
        }
        catch (IOException)
        {
            return false;
        }
    }

    [LoggerMessage(EventId = 2001, Level = LogLevel.Warning,
        Message = "Cannot write {DefaultDirectory} as this user; keeping state in {StateDirectory} (set State:Directory to choose)")]
    private static partial void LogFallback(ILogger logger, string defaultDirectory, string stateDirectory);
}
