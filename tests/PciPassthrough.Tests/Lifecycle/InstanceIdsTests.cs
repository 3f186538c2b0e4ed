namespace PciPassthrough.Lifecycle.Tests;

public sealed class InstanceIdsTests
{
    [Theory]
    [InlineData("a")]
    [InlineData("7")]
    [InlineData("vm-1")]
    [InlineData("0f8fad5b-d9cb-469f-a165-70867728950e")]
    [InlineData("clx1y2z3a0000qwertyuiopas")]
    [InlineData("tenant:prod@host_1.vm")]
    [InlineData("VM.Name_With-Every:Allowed@Char")]
    public void IsValid_OrchestratorStyleIds_True(string instanceId)
    {
        Assert.True(InstanceIds.IsValid(instanceId));
    }

    [Fact]
    public void IsValid_ExactlyMaxLength_True()
    {
        Assert.True(InstanceIds.IsValid("a" + new string('b', InstanceIds.MaxLength - 1)));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    [InlineData(" ")]
    [InlineData("vm 1")]
    [InlineData(" vm")]
    [InlineData("vm ")]
    [InlineData("vm\t1")]
    [InlineData("vm\n")]
    [InlineData("vm/1")]
    [InlineData("/vm")]
    [InlineData("..")]
    [InlineData("../../etc/passwd")]
    [InlineData("vm\\1")]
    [InlineData("vm\01")]
    [InlineData("\0")]
    [InlineData("-vm")]
    [InlineData(".vm")]
    [InlineData("_vm")]
    [InlineData(":vm")]
    [InlineData("vm?x=1")]
    [InlineData("vm#1")]
    [InlineData("vm%2F1")]
    [InlineData("vmé")]
    [InlineData("vm١")]
    public void IsValid_SpacesSlashesControlAndOtherCharacters_False(string? instanceId)
    {
        Assert.False(InstanceIds.IsValid(instanceId));
    }

    [Theory]
    [InlineData(129)]
    [InlineData(200)]
    [InlineData(10_000)]
    public void IsValid_LongerThanMaxLength_False(int length)
    {
        Assert.False(InstanceIds.IsValid(new string('a', length)));
    }
}
