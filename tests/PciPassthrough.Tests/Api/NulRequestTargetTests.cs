using System.Text.Json;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Daemon.Api.Tests;

/// <summary>
/// <c>%00</c> in a request target over real Kestrel (TestServer's client refuses to send it):
/// every such request is an unknown id, answered <c>404 not_found</c> with a problem body.
/// </summary>
public sealed class NulRequestTargetTests : IClassFixture<NulRequestTargetTests.KestrelDaemon>
{
    private readonly KestrelDaemon _daemon;

    public NulRequestTargetTests(KestrelDaemon daemon)
    {
        _daemon = daemon;
    }

    /// <summary>The daemon on Kestrel, on a loopback port of its own choosing.</summary>
    public sealed class KestrelDaemon : IDisposable
    {
        private readonly PassthroughApplication _app = new();

        public KestrelDaemon()
        {
            _app.UseKestrel(0);
            _app.StartServer();
            var addresses = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
            Address = new Uri(addresses.First());
        }

        public Uri Address { get; }

        public void Dispose() => _app.Dispose();
    }

    private static string Request(string method, string target, string? json = null, bool close = true)
    {
        var headers = $"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (close ? "Connection: close\r\n" : "");
        return json is null
            ? headers + "\r\n"
            : headers + $"Content-Type: application/json\r\nContent-Length: {System.Text.Encoding.UTF8.GetByteCount(json)}\r\n\r\n{json}";
    }

    private static void AssertNotFoundProblem(RawHttpResponse response)
    {
        Assert.True(response.Status == 404, $"expected 404, got {response.Status}: {response.Body}");
        Assert.StartsWith("application/problem+json", response.Headers["Content-Type"], StringComparison.Ordinal);
        using var body = JsonDocument.Parse(response.Body);
        Assert.Equal("not_found", body.RootElement.GetProperty("code").GetString());
        Assert.Equal(404, body.RootElement.GetProperty("status").GetInt32());
        Assert.Equal(body.RootElement.GetProperty("detail").GetString(), body.RootElement.GetProperty("message").GetString());
    }

    [Theory]
    [InlineData("GET", "/devices/%00")]
    [InlineData("GET", "/devices/abc%00def")]
    [InlineData("GET", "/devices/%00%00%00")]
    [InlineData("GET", "/devices/gpu0%00")]
    [InlineData("DELETE", "/devices/%00")]
    [InlineData("DELETE", "/devices/abc%00def")]
    public async Task Request_NulInTarget_404NotFoundProblem(string method, string target)
    {
        using var connection = await RawHttpConnection.OpenAsync(_daemon.Address);

        AssertNotFoundProblem(await connection.RequestAsync(Request(method, target)));
    }

    [Fact]
    public async Task Request_PlainUnknownIdOverKestrel_404NotFoundProblem()
    {
        using var connection = await RawHttpConnection.OpenAsync(_daemon.Address);

        AssertNotFoundProblem(await connection.RequestAsync(Request("GET", "/devices/nope")));
    }

    [Fact]
    public async Task KeepAlive_PostThenNulTarget_BothAnswered()
    {
        using var connection = await RawHttpConnection.OpenAsync(_daemon.Address);

        var created = await connection.RequestAsync(Request("POST", "/devices", """{"pci_address":"0000:5e:00.0","name":"keepalive-nic"}""", close: false));
        Assert.True(created.Status == 201, created.Body);

        AssertNotFoundProblem(await connection.RequestAsync(Request("GET", "/devices/%00", close: false)));
        AssertNotFoundProblem(await connection.RequestAsync(Request("DELETE", "/devices/abc%00def", close: false)));

        var fetched = await connection.RequestAsync(Request("GET", "/devices/keepalive-nic"));
        Assert.Equal(200, fetched.Status);
    }

    [Fact]
    public async Task Pipelined_PostBodyThenNulTargetInOneWrite_BothAnswered()
    {
        using var connection = await RawHttpConnection.OpenAsync(_daemon.Address);

        // The JSON body has no trailing newline: the next request line follows it directly.
        await connection.SendAsync(
            Request("POST", "/devices", """{"pci_address":"0000:5e:00.1","name":"pipelined-nic"}""", close: false) +
            Request("GET", "/devices/%00"));

        var created = await connection.ReadResponseAsync();
        Assert.True(created.Status == 201, created.Body);
        AssertNotFoundProblem(await connection.ReadResponseAsync());
    }
}
