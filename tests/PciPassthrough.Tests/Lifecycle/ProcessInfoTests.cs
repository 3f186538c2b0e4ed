using PciPassthrough.Sysfs;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Lifecycle.Tests;

public sealed class ProcessInfoTests : IDisposable
{
    private readonly TempDirectory _root = new("pcipt-proc");
    private readonly LinuxSysfs _sysfs;

    public ProcessInfoTests()
    {
        Directory.CreateDirectory(_root.Combine("proc"));
        _sysfs = new LinuxSysfs(_root.Path);
    }

    public void Dispose() => _root.Dispose();

    private void WriteStat(int pid, string content)
    {
        Directory.CreateDirectory(_root.Combine("proc", pid.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        File.WriteAllText(_root.Combine("proc", pid.ToString(System.Globalization.CultureInfo.InvariantCulture), "stat"), content);
    }

    [Theory]
    [InlineData("qemu-system-x86")]
    [InlineData("a b c")]
    [InlineData("(a) b)")]
    [InlineData(") 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22")]
    [InlineData("x")]
    public void StartTime_CommandOfAnyShape_ReadsField22(string command)
    {
        WriteStat(42, LifecycleTestKit.StatLine(42, command, 8_675_309));

        Assert.Equal(8_675_309, ProcessInfo.StartTime(_sysfs, 42));
    }

    [Fact]
    public void StartTime_RealKernelLine_ReadsField22()
    {
        // A line as Linux 6.1 writes it (trailing fields included).
        WriteStat(1234, "1234 (bash) S 1233 1234 1234 34816 1240 4194560 1317 8466 0 2 3 1 12 6 20 0 1 0 " +
            "123456789 9224192 1286 18446744073709551615 94617255243776 94617256037613 140724440211696 0 0 0 65536 " +
            "3670020 1266777851 1 0 0 17 3 0 0 0 0 0 94617256273456 94617256321412 94617289969664 140724440215281 " +
            "140724440215286 140724440215286 140724440219630 0\n");

        Assert.Equal(123_456_789, ProcessInfo.StartTime(_sysfs, 1234));
    }

    [Fact]
    public void StartTime_NoSuchProcess_Null()
    {
        Assert.Null(ProcessInfo.StartTime(_sysfs, 4242));
    }

    [Fact]
    public void StartTime_ProcessDirectoryWithoutStat_Null()
    {
        Directory.CreateDirectory(_root.Combine("proc", "77"));

        Assert.Null(ProcessInfo.StartTime(_sysfs, 77));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(int.MinValue)]
    public void StartTime_NonPositivePid_Null(int pid)
    {
        Assert.Null(ProcessInfo.StartTime(_sysfs, pid));
    }

    [Theory]
    [InlineData("")]
    [InlineData("garbage")]
    [InlineData("42 qemu S 1 0 0 0 0 0 0 0 0 0 0 0 0 0 20 0 1 0 555 0 0")]
    [InlineData("42 (qemu) S 1 0 0")]
    [InlineData("42 (qemu) S 1 0 0 0 0 0 0 0 0 0 0 0 0 0 20 0 1 0 abc 0 0")]
    [InlineData("42 (qemu) S 1 0 0 0 0 0 0 0 0 0 0 0 0 0 20 0 1 0 -555 0 0")]
    [InlineData("42 (qemu) S 1 0 0 0 0 0 0 0 0 0 0 0 0 0 20 0 1 0 99999999999999999999999 0 0")]
    [InlineData("\0\0\0\0")]
    public void StartTime_Garbage_Null(string stat)
    {
        WriteStat(42, stat);

        Assert.Null(ProcessInfo.StartTime(_sysfs, 42));
    }

    [Fact]
    public void StartTime_StatIsADirectory_Null()
    {
        Directory.CreateDirectory(_root.Combine("proc", "42", "stat"));

        Assert.Null(ProcessInfo.StartTime(_sysfs, 42));
    }

    [Fact]
    public void StartTime_ThisProcessOnTheRealProc_PositiveAndStable()
    {
        var real = new LinuxSysfs("/");

        var first = ProcessInfo.StartTime(real, Environment.ProcessId);
        var second = ProcessInfo.StartTime(real, Environment.ProcessId);

        Assert.NotNull(first);
        Assert.True(first > 0, $"start time {first}");
        Assert.Equal(first, second);
        // Whatever runs as pid 1 started before this test process did.
        Assert.InRange(ProcessInfo.StartTime(real, 1)!.Value, 0, first!.Value);
    }

    [Fact]
    public void Command_FakeAndRealProcess_ReadsComm()
    {
        File.WriteAllText(_root.Combine("proc", "cmdline"), "");
        LifecycleTestKit.WriteProcess(_root.Path, 42, 1, "qemu-kvm");

        Assert.Equal("qemu-kvm", ProcessInfo.Command(_sysfs, 42));
        Assert.Null(ProcessInfo.Command(_sysfs, 43));
        Assert.False(string.IsNullOrWhiteSpace(ProcessInfo.Command(new LinuxSysfs("/"), Environment.ProcessId)));
    }
}
