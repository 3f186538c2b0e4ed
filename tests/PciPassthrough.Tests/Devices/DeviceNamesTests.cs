
namespace PciPassthrough.Devices.Tests;

public class DeviceNamesTests
{
    [Theory]
    [InlineData("ab")]
    [InlineData("gpu0")]
    [InlineData("0gpu")]
    [InlineData("A1")]
    [InlineData("my-gpu_1.slot")]
    [InlineData("a-")]
    [InlineData("a.")]
    [InlineData("a_")]
    [InlineData("a..b")]
    [InlineData("pci-0000-a2-00-0")]
    [InlineData("ZZZZ")]
    public void IsValid_MatchingPattern_True(string name)
    {
        Assert.True(DeviceNames.IsValid(name));
    }

    [Theory]
    [InlineData("a")]                 // one character
    [InlineData("-gpu")]              // leading -
    [InlineData(".gpu")]              // leading .
    [InlineData("_gpu")]              // leading _
    [InlineData("my gpu")]            // space
    [InlineData(" gpu")]
    [InlineData("gpu ")]
    [InlineData("gpu\n")]             // trailing newline
    [InlineData("gpu\r\n")]
    [InlineData("\ngpu")]
    [InlineData("gpu\t")]
    [InlineData("gpü")]               // unicode letters
    [InlineData("éa")]
    [InlineData("gpu名")]
    [InlineData("ｇｐｕ")]            // fullwidth
    [InlineData("gpu\u212A")]         // Kelvin sign (case-folds to k under IgnoreCase)
    [InlineData("gpu/0")]
    [InlineData("../etc")]
    [InlineData("..")]
    [InlineData("gpu:0")]
    [InlineData("gpu\0")]
    [InlineData("gpu%00")]
    [InlineData("")]
    public void IsValid_NotMatchingPattern_False(string name)
    {
        Assert.False(DeviceNames.IsValid(name));
    }

    [Fact]
    public void IsValid_Null_False()
    {
        Assert.False(DeviceNames.IsValid(null));
    }

    [Fact]
    public void IsValid_LengthLimit_63Valid64Invalid()
    {
        Assert.True(DeviceNames.IsValid(new string('a', 63)));
        Assert.True(DeviceNames.IsValid("g" + new string('-', 62)));
        Assert.False(DeviceNames.IsValid(new string('a', 64)));
        Assert.False(DeviceNames.IsValid(new string('a', 10 * 1024)));
        Assert.Equal(63, DeviceNames.MaxLength);
    }

    [Fact]
    public void Pattern_IsTheContractPattern()
    {
        Assert.Equal("^[a-zA-Z0-9][a-zA-Z0-9_.-]+$", DeviceNames.Pattern);
    }

    [Theory]
    [InlineData("0000:a2:00.0", "pci-0000-a2-00-0")]
    [InlineData("A2:00.0", "pci-0000-a2-00-0")]
    [InlineData("ffff:ff:1f.7", "pci-ffff-ff-1f-7")]
    [InlineData("0001:0a:03.1", "pci-0001-0a-03-1")]
    public void FromAddress_Always_PciPrefixedDashedCanonicalAddress(string address, string expected)
    {
        var name = DeviceNames.FromAddress(PciAddress.Parse(address));

        Assert.Equal(expected, name);
        Assert.True(DeviceNames.IsValid(name));
    }
}
