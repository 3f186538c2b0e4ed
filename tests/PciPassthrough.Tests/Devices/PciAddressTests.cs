using System.Text.Json;

namespace PciPassthrough.Devices.Tests;

public class PciAddressTests
{
    [Theory]
    [InlineData("0000:0a:00.0", "0000:0a:00.0")]
    [InlineData("0000:0A:00.0", "0000:0a:00.0")]
    [InlineData("0a:00.0", "0000:0a:00.0")]
    [InlineData("0A:1F.7", "0000:0a:1f.7")]
    [InlineData("ffff:ff:1f.7", "ffff:ff:1f.7")]
    [InlineData("FFFF:FF:1F.7", "ffff:ff:1f.7")]
    [InlineData("AbCd:eF:1a.3", "abcd:ef:1a.3")]
    [InlineData("0000:00:00.0", "0000:00:00.0")]
    [InlineData("00:00.0", "0000:00:00.0")]
    [InlineData("0001:00:02.1", "0001:00:02.1")]
    public void TryParse_ValidForms_NormalizesToCanonical(string text, string expected)
    {
        Assert.True(PciAddress.TryParse(text, out var address));
        Assert.Equal(expected, address.ToString());
        Assert.True(PciAddress.IsValid(text));
        Assert.Equal(address, PciAddress.Parse(text));
    }

    [Fact]
    public void TryParse_LongForm_ExposesComponents()
    {
        var address = PciAddress.Parse("ffff:ff:1f.7");

        Assert.Equal(0xffff, address.Domain);
        Assert.Equal(0xff, address.Bus);
        Assert.Equal(0x1f, address.Device);
        Assert.Equal(7, address.Function);
    }

    [Fact]
    public void TryParse_ShortForm_MeansDomainZero()
    {
        var address = PciAddress.Parse("a2:03.1");

        Assert.Equal(0, address.Domain);
        Assert.Equal(0xa2, address.Bus);
        Assert.Equal(3, address.Device);
        Assert.Equal(1, address.Function);
    }

    public static TheoryData<string> InvalidAddresses() => new()
    {
        "0000:00:20.0",        // device 0x20
        "0000:00:ff.0",        // device 0xff
        "0000:00:00.8",        // function 8
        "0000:00:00.f",        // function 0xf
        "00:20.0",
        "00:00.8",
        "0000:000:00.0",       // 3-digit bus
        "000:00.0",
        "00000:00:00.0",       // 5-digit domain
        "000:00:00.0",         // 3-digit domain
        "0000:00:0.0",         // 1-digit device
        "0000:00:00.00",       // 2-digit function
        "0000:0g:00.0",        // non-hex
        "0000:00:0x.0",
        "zzzz:00:00.0",
        "0x00:00.0",
        " 0000:00:00.0",       // whitespace
        "0000:00:00.0 ",
        "0000: 0:00.0",
        "00: 0.0",
        "\t0:00.0",
        "0000:00:00.\t",
        "+000:00:00.0",        // signs
        "-000:00:00.0",
        "0000:+0:00.0",
        "00:-1.0",
        "00:00.-",
        "00:+1.0",
        "0000:00:00.0\n",      // trailing newline
        "00:00.0\n",
        "0000:00:00.0\r\n",
        "",                    // empty
        "../../../etc/passwd", // traversal
        "../00:00.0",
        "0000:00:00.0/../..",
        "0000/00/00.0",
        "..:..:..",
        "..:...0",
        "0000-00-00-0",
        "0000:00:00:0",
        "0000.00.00.0",
        "0000:00.00.0",
        "0000:00:00,0",
        "0000:00:00.0\0",     // NUL
        "0000:00:00\0.0",
        "\0\0\0\0\0\0\0",
        "\0\0\0\0\0\0\0\0\0\0\0\0",
        "０000:00:00.0",       // fullwidth digit
        "0000:٠0:00.0",        // Arabic-Indic digit
        "pci-0000-00-00-0",
        "0000:00:00",
        "00:00",
        ":00:00.0",
    };

    [Theory]
    [MemberData(nameof(InvalidAddresses))]
    public void TryParse_Invalid_Rejected(string text)
    {
        Assert.False(PciAddress.TryParse(text, out var address));
        Assert.Equal(default, address);
        Assert.False(PciAddress.IsValid(text));
        Assert.Throws<FormatException>(() => PciAddress.Parse(text));
    }

    [Fact]
    public void TryParse_Null_Rejected()
    {
        Assert.False(PciAddress.TryParse(null, out _));
        Assert.False(PciAddress.IsValid(null));
    }

    [Fact]
    public void TryParse_TenKilobyteString_Rejected()
    {
        var text = "0000:00:00.0" + new string('0', 10 * 1024);

        Assert.False(PciAddress.TryParse(text, out _));
        Assert.False(PciAddress.TryParse(new string('a', 10 * 1024), out _));
    }

    [Fact]
    public void TryParse_Span_MatchesStringOverload()
    {
        Assert.True(PciAddress.TryParse("0000:0A:00.0".AsSpan(), null, out var address));
        Assert.Equal("0000:0a:00.0", address.ToString());
        Assert.False(PciAddress.TryParse("0000:0A:00.8".AsSpan(), null, out _));
    }

    [Theory]
    [InlineData(-1, 0, 0, 0)]
    [InlineData(0x10000, 0, 0, 0)]
    [InlineData(0, 0x100, 0, 0)]
    [InlineData(0, -1, 0, 0)]
    [InlineData(0, 0, 0x20, 0)]
    [InlineData(0, 0, 0, 8)]
    [InlineData(0, 0, 0, -1)]
    public void Constructor_ComponentOutOfRange_Throws(int domain, int bus, int device, int function)
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new PciAddress(domain, bus, device, function));
    }

    [Theory]
    [InlineData(0, 0, 0, 0, "0000:00:00.0")]
    [InlineData(0xffff, 0xff, 0x1f, 7, "ffff:ff:1f.7")]
    [InlineData(1, 0xa, 2, 3, "0001:0a:02.3")]
    public void ToString_Always_CanonicalLowercaseZeroPadded(int domain, int bus, int device, int function, string expected)
    {
        Assert.Equal(expected, new PciAddress(domain, bus, device, function).ToString());
    }

    [Fact]
    public void ToString_ParseRoundTrip_Identity()
    {
        foreach (var text in new[] { "0000:00:00.0", "ffff:ff:1f.7", "0001:a2:03.1" })
        {
            Assert.Equal(text, PciAddress.Parse(PciAddress.Parse(text).ToString()).ToString());
        }
    }

    [Fact]
    public void CompareTo_OrdersByDomainBusDeviceFunction()
    {
        string[] expected =
        [
            "0000:00:00.0", "0000:00:00.1", "0000:00:00.7", "0000:00:01.0", "0000:00:1f.0",
            "0000:01:00.0", "0000:0a:00.0", "0000:ff:1f.7", "0001:00:00.0", "000a:00:00.0", "ffff:00:00.0",
        ];
        var shuffled = expected.Reverse().Concat(expected.Where((_, i) => i % 2 == 0)).Select(PciAddress.Parse).ToList();

        shuffled.Sort();

        Assert.Equal(expected.Concat(expected.Where((_, i) => i % 2 == 0)).Order(StringComparer.Ordinal),
            shuffled.Select(a => a.ToString()));
    }

    [Fact]
    public void CompareTo_ComponentsNotText_OrderNumerically()
    {
        // Bus 0x0a sorts after bus 0x09 and before 0x10; function beats nothing of the higher fields.
        Assert.True(PciAddress.Parse("0000:09:1f.7") < PciAddress.Parse("0000:0a:00.0"));
        Assert.True(PciAddress.Parse("0000:0a:00.0") < PciAddress.Parse("0000:10:00.0"));
        Assert.True(PciAddress.Parse("0000:ff:1f.7") < PciAddress.Parse("0001:00:00.0"));
        Assert.True(PciAddress.Parse("0000:00:01.0") > PciAddress.Parse("0000:00:00.7"));
        Assert.True(PciAddress.Parse("0000:00:01.0") >= PciAddress.Parse("00:01.0"));
        Assert.True(PciAddress.Parse("0000:00:01.0") <= PciAddress.Parse("00:01.0"));
        Assert.Equal(0, PciAddress.Parse("00:01.0").CompareTo(PciAddress.Parse("0000:00:01.0")));
        Assert.True(PciAddress.Parse("0000:00:00.1").CompareTo(PciAddress.Parse("0000:00:00.0")) > 0);
        Assert.True(PciAddress.Parse("0000:00:00.0").CompareTo(PciAddress.Parse("0000:00:00.1")) < 0);
    }

    [Fact]
    public void Equals_LongAndShortFormsOfSameAddress_Equal()
    {
        var a = PciAddress.Parse("0000:0A:00.0");
        var b = PciAddress.Parse("0a:00.0");

        Assert.Equal(a, b);
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
        Assert.NotEqual(a, PciAddress.Parse("0001:0a:00.0"));
    }

    [Fact]
    public void Slot_Always_FunctionZeroOfSameDevice()
    {
        Assert.Equal(PciAddress.Parse("0001:0a:03.0"), PciAddress.Parse("0001:0a:03.5").Slot);
    }

    private sealed record Holder(PciAddress Address, PciAddress? Optional);

    [Fact]
    public void JsonConverter_RoundTrip_CanonicalString()
    {
        var address = PciAddress.Parse("ABCD:0A:1F.7");

        var json = JsonSerializer.Serialize(address);
        Assert.Equal("\"abcd:0a:1f.7\"", json);
        Assert.Equal(address, JsonSerializer.Deserialize<PciAddress>(json));

        var holder = new Holder(address, null);
        var roundTripped = JsonSerializer.Deserialize<Holder>(JsonSerializer.Serialize(holder));
        Assert.Equal(holder, roundTripped);
    }

    [Fact]
    public void JsonConverter_ReadsUppercaseAndShortForm_Normalizes()
    {
        Assert.Equal("0000:0a:00.0", JsonSerializer.Deserialize<PciAddress>("\"0A:00.0\"").ToString());
    }

    [Theory]
    [InlineData("\"0000:00:20.0\"")]
    [InlineData("\"0000:00:00.0\\n\"")]
    [InlineData("\"\"")]
    [InlineData("\"../../etc\"")]
    [InlineData("\"0000:00:00.0\\u0000\"")]
    [InlineData("12")]
    [InlineData("null")]
    [InlineData("true")]
    [InlineData("[\"0000:00:00.0\"]")]
    [InlineData("{\"pci_address\":\"0000:00:00.0\"}")]
    public void JsonConverter_InvalidToken_ThrowsJsonException(string json)
    {
        Assert.ThrowsAny<JsonException>(() => JsonSerializer.Deserialize<PciAddress>(json));
    }
}
