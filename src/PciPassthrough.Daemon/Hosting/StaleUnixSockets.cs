using System.Net.Sockets;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>
/// A daemon killed with SIGKILL leaves its Unix socket file behind, and Kestrel then refuses to
/// bind ("address already in use"), so a crashed daemon could never be restarted. Before binding,
/// a socket file nobody answers on is removed; one a live process answers on is left alone (and
/// the bind fails, as it should: two daemons must not share a socket).
/// </summary>
public static class StaleUnixSockets
{
    public static void Remove(IConfiguration configuration)
    {
        var urls = (configuration["urls"] ?? "")
            .Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Concat(configuration.GetSection("Kestrel:Endpoints").GetChildren().Select(e => e["Url"]).OfType<string>());
        foreach (var url in urls)
        {
            if (UnixSocketPermissions.SocketPath(url) is { Length: > 0 } path && IsStale(path))
            {
                File.Delete(path);
            }
        }
    }

    /// <summary>
    /// True for an existing, empty file nobody accepts connections on. (.NET cannot tell a socket
    /// file from a regular one; a socket always has size 0, so a file with content is never removed.)
    /// </summary>
    public static bool IsStale(string path)
    {
        if (!File.Exists(path) || new FileInfo(path).Length != 0)
        {
            return false;
        }

        using var probe = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            probe.Connect(new UnixDomainSocketEndPoint(path));
            return false;
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused)
        {
            return true;
        }
    }
}
