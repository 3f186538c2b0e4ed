using System.Net;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>
/// An API without authentication may listen only where only this host can reach it: loopback
/// addresses and Unix sockets. Anything else refuses to start.
/// </summary>
public static class ListenAddressPolicy
{
    public static void Validate(IConfiguration configuration)
    {
        // An empty value (Auth__TokensFile=) configures nothing: it must not open the API.
        if (configuration.GetSection("Auth").AsEnumerable().Any(kv => !string.IsNullOrWhiteSpace(kv.Value)))
        {
            return;
        }

        var urls = (configuration["urls"] ?? configuration["ASPNETCORE_URLS"] ?? "")
            .Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Concat(configuration.GetSection("Kestrel:Endpoints").GetChildren().Select(e => e["Url"]).OfType<string>());
        foreach (var url in urls)
        {
            if (!IsLocalOnly(url))
            {
                throw new InvalidOperationException(
                    $"Refusing to listen on {url} without authentication: the API is open only on loopback addresses " +
                    "and Unix sockets. Listen on 127.0.0.1 or a Unix socket, or configure Auth:TokensFile or Auth:Jwt.");
            }
        }
    }

    public static bool IsLocalOnly(string url)
    {
        if (url.StartsWith("http://unix:", StringComparison.OrdinalIgnoreCase) ||
            url.StartsWith("https://unix:", StringComparison.OrdinalIgnoreCase))
        {
            return true;
        }

        // "http://+:80", "http://*:80" and "http://0.0.0.0:80" all mean every interface.
        var host = url.Split("://", 2) is [_, var rest] ? rest : url;
        host = host.Split('/', 2)[0];
        if (host.StartsWith('['))
        {
            var close = host.IndexOf(']', StringComparison.Ordinal);
            if (close < 0)
            {
                return false; // malformed: never counts as local
            }

            host = host[1..close];
        }
        else
        {
            host = host.Split(':')[0];
        }
        return host.Equals("localhost", StringComparison.OrdinalIgnoreCase) ||
            (IPAddress.TryParse(host, out var address) && IPAddress.IsLoopback(address));
    }
}
