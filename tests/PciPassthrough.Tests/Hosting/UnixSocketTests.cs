using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Configuration;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Daemon.Hosting.Tests;

public sealed class UnixSocketTests
{
    [Fact]
    public async Task ListenUnixSocket_ModeConfigured_SocketHasModeAndServesApi()
    {
        using var dir = new TempDirectory("pcipt-sock");
        var path = dir.Combine("api.sock");
        await using var app = new PassthroughApplication(settings: new Dictionary<string, string?> { ["Server:UnixSocketMode"] = "0600" });
        app.UseKestrel(o => o.ListenUnixSocket(path));
        app.StartServer();

        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        using var client = UnixClient(path);
        var response = await client.GetAsync(new Uri("http://localhost/healthz"));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public void IsStale_SocketWithListener_False()
    {
        using var dir = new TempDirectory("pcipt-sock");
        var path = dir.Combine("live.sock");
        using var listener = Listen(path);

        Assert.False(StaleUnixSockets.IsStale(path));
    }

    [Fact]
    public void Remove_SocketLeftByDeadListener_Deleted()
    {
        using var dir = new TempDirectory("pcipt-sock");
        var path = dir.Combine("dead.sock");
        // A killed process leaves its socket file behind. .NET removes the file when a listener
        // is disposed, so the file is moved away first: the dead socket stays, nobody listens.
        using (Listen(dir.Combine("bound.sock")))
        {
            File.Move(dir.Combine("bound.sock"), path);
        }

        Assert.True(File.Exists(path));
        Assert.True(StaleUnixSockets.IsStale(path));

        StaleUnixSockets.Remove(new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?> { ["urls"] = $"http://unix:{path}" })
            .Build());

        Assert.False(File.Exists(path));
    }

    [Fact]
    public void Remove_LiveSocket_Kept()
    {
        using var dir = new TempDirectory("pcipt-sock");
        var path = dir.Combine("live.sock");
        using var listener = Listen(path);

        StaleUnixSockets.Remove(new ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?> { ["urls"] = $"http://unix:{path}" })
            .Build());

        Assert.True(File.Exists(path));
    }

    [Fact]
    public void IsStale_RegularFileWithContent_FalseAndKept()
    {
        using var dir = new TempDirectory("pcipt-sock");
        var path = dir.Combine("not-a-socket");
        File.WriteAllText(path, "operator's notes");

        Assert.False(StaleUnixSockets.IsStale(path));
    }

    [Theory]
    [InlineData("http://unix:/run/pci-passthrough.sock", "/run/pci-passthrough.sock")]
    [InlineData("http://unix:/tmp/a.sock/", "/tmp/a.sock")]
    [InlineData("http://127.0.0.1:5000", null)]
    public void SocketPath_Address_FileOrNull(string address, string? expected) =>
        Assert.Equal(expected, UnixSocketPermissions.SocketPath(address));

    private static Socket Listen(string path)
    {
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.Bind(new UnixDomainSocketEndPoint(path));
        socket.Listen();
        return socket;
    }

    private static HttpClient UnixClient(string path) => new(new SocketsHttpHandler
    {
        ConnectCallback = async (_, cancellationToken) =>
        {
            var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancellationToken);
            return new NetworkStream(socket, ownsSocket: true);
        },
    });
}
