using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Options;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>
/// Once Kestrel has created its Unix sockets, gives them <c>Server:UnixSocketMode</c> and
/// <c>Server:UnixSocketGroup</c>: who may reach an unauthenticated local API is decided by the
/// file system, so the socket must not keep whatever the process umask gave it.
/// </summary>
public sealed partial class UnixSocketPermissions(IServer server, IOptions<ServerOptions> options, ILogger<UnixSocketPermissions> logger)
    : IHostedLifecycleService
{
    public Task StartedAsync(CancellationToken cancellationToken)
    {
        var addresses = server.Features.Get<IServerAddressesFeature>()?.Addresses ?? [];
        foreach (var address in addresses)
        {
            if (SocketPath(address) is not { } path || !File.Exists(path))
            {
                continue;
            }

            File.SetUnixFileMode(path, options.Value.ParsedMode);
            if (options.Value.UnixSocketGroup is { } group)
            {
                var gid = GroupId(group) ?? throw new InvalidOperationException($"Server:UnixSocketGroup: no group named '{group}'");
                if (Chown(path, -1, gid) != 0)
                {
                    throw new InvalidOperationException(
                        $"Cannot give {path} to group {group} (errno {Marshal.GetLastPInvokeError()})");
                }
            }

            LogSocket(logger, path, options.Value.UnixSocketMode, options.Value.UnixSocketGroup);
        }

        return Task.CompletedTask;
    }

    public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StoppingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>The file of an address such as <c>http://unix:/run/pci-passthrough.sock</c>, else null.</summary>
    public static string? SocketPath(string address)
    {
        const string Marker = "unix:";
        var at = address.IndexOf(Marker, StringComparison.OrdinalIgnoreCase);
        return at < 0 ? null : address[(at + Marker.Length)..].TrimEnd('/');
    }

    private static uint? GroupId(string name)
    {
        // /etc/group rather than getgrnam: no NSS surprises inside containers, and easy to reason about.
        foreach (var line in File.ReadLines("/etc/group"))
        {
            var fields = line.Split(':');
            if (fields.Length >= 3 && fields[0] == name && uint.TryParse(fields[2], out var gid))
            {
                return gid;
            }
        }

        return null;
    }

    [LibraryImport("libc", EntryPoint = "chown", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Chown(string path, int owner, uint group);

    [LoggerMessage(EventId = 4201, Level = LogLevel.Information,
        Message = "Unix socket {SocketPath}: mode {Mode}, group {Group}")]
    private static partial void LogSocket(ILogger logger, string socketPath, string mode, string? group);
}
