using Microsoft.Extensions.Configuration;

namespace PciPassthrough.Daemon.Hosting.Tests;

public class ListenAddressPolicyTests
{
    private static IConfiguration Config(params (string Key, string? Value)[] values) =>
        new ConfigurationBuilder()
            .AddInMemoryCollection(values.Select(v => new KeyValuePair<string, string?>(v.Key, v.Value)))
            .Build();

    [Theory]
    [InlineData("http://127.0.0.1:5000")]
    [InlineData("http://127.0.0.1:0")]
    [InlineData("https://127.0.0.1:5001")]
    [InlineData("http://127.0.0.2:5000")]
    [InlineData("http://[::1]:5000")]
    [InlineData("http://[::1]")]
    [InlineData("http://localhost:5000")]
    [InlineData("http://LOCALHOST:5000")]
    [InlineData("http://localhost")]
    [InlineData("http://unix:/run/pci-passthrough.sock")]
    [InlineData("https://unix:/tmp/x.sock")]
    [InlineData("HTTP://UNIX:/run/x.sock")]
    public void IsLocalOnly_LoopbackOrUnixSocket_True(string url)
    {
        Assert.True(ListenAddressPolicy.IsLocalOnly(url));
    }

    [Theory]
    [InlineData("http://0.0.0.0:5000")]
    [InlineData("http://+:5000")]
    [InlineData("http://*:5000")]
    [InlineData("http://[::]:5000")]
    [InlineData("http://192.168.1.10:5000")]
    [InlineData("http://10.0.0.1")]
    [InlineData("https://[fe80::1]:443")]
    [InlineData("http://example.com:5000")]
    [InlineData("http://localhost.example.com:5000")]
    [InlineData("http://127.0.0.1.nip.io:5000")]
    public void IsLocalOnly_AnyOtherAddress_False(string url)
    {
        Assert.False(ListenAddressPolicy.IsLocalOnly(url));
    }

    [Theory]
    [InlineData("http://127.0.0.1:5000")]
    [InlineData("http://[::1]:5000")]
    [InlineData("http://localhost:5000")]
    [InlineData("http://unix:/run/pci-passthrough.sock")]
    [InlineData("http://127.0.0.1:5000;http://unix:/run/x.sock")]
    [InlineData("http://127.0.0.1:5000 ; http://[::1]:5000")]
    public void Validate_LocalUrlsWithoutAuth_Accepted(string urls)
    {
        ListenAddressPolicy.Validate(Config(("urls", urls)));
        ListenAddressPolicy.Validate(Config(("ASPNETCORE_URLS", urls)));
    }

    [Fact]
    public void Validate_NothingConfigured_Accepted()
    {
        ListenAddressPolicy.Validate(Config());
    }

    [Theory]
    [InlineData("http://0.0.0.0:5000")]
    [InlineData("http://+:5000")]
    [InlineData("http://*:5000")]
    [InlineData("http://192.168.1.10:5000")]
    [InlineData("http://127.0.0.1:5000;http://0.0.0.0:5001")]
    public void Validate_OpenAddressWithoutAuth_Refused(string urls)
    {
        var e = Assert.Throws<InvalidOperationException>(() => ListenAddressPolicy.Validate(Config(("urls", urls))));

        Assert.Contains("authentication", e.Message, StringComparison.Ordinal);
        Assert.Throws<InvalidOperationException>(() => ListenAddressPolicy.Validate(Config(("ASPNETCORE_URLS", urls))));
    }

    [Fact]
    public void Validate_KestrelEndpointOnOpenAddressWithoutAuth_Refused()
    {
        Assert.Throws<InvalidOperationException>(() => ListenAddressPolicy.Validate(Config(
            ("Kestrel:Endpoints:Local:Url", "http://127.0.0.1:5000"),
            ("Kestrel:Endpoints:Lan:Url", "http://0.0.0.0:5000"))));
        ListenAddressPolicy.Validate(Config(("Kestrel:Endpoints:Local:Url", "http://127.0.0.1:5000")));
    }

    [Theory]
    [InlineData("Auth:TokensFile", "/etc/pci-passthrough/tokens")]
    [InlineData("Auth:Jwt:Authority", "https://login.example.com")]
    [InlineData("Auth:Jwt:SigningKey", "c2VjcmV0")]
    [InlineData("Auth:Jwt:Issuer", "issuer")]
    public void Validate_OpenAddressWithAuthKey_Accepted(string key, string value)
    {
        foreach (var urls in new[] { "http://0.0.0.0:5000", "http://+:5000", "http://*:5000", "http://192.168.1.10:5000" })
        {
            ListenAddressPolicy.Validate(Config(("urls", urls), (key, value)));
        }
    }

    [Fact]
    public void Validate_EmptyAuthKey_DoesNotCountAsAuthentication()
    {
        // An empty value (e.g. Auth__TokensFile= in an environment file) configures no authentication.
        Assert.Throws<InvalidOperationException>(() => ListenAddressPolicy.Validate(Config(
            ("urls", "http://0.0.0.0:5000"), ("Auth:TokensFile", ""))));
    }
}
