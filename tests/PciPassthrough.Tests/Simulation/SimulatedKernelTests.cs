using System.Diagnostics;
using PciPassthrough.Devices;
using PciPassthrough.Sysfs;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Simulation.Tests;

/// <summary>
/// Pins the simulated kernel to what Linux 6.1 does for each write the daemon makes. Writes go
/// through <see cref="ISysfs.Write"/>; the outcome is read back from the tree with plain file APIs.
/// </summary>
public sealed class SimulatedKernelTests : IDisposable
{
    private const string Gpu = "0000:17:00.0";
    private const string GpuAudio = "0000:17:00.1";
    private const string Nvme = "0000:3b:00.0";
    private const string Nvme2 = "0000:d8:00.0";
    private const string AspeedBridge = "0000:02:00.0";
    private const string HostBridge = "0000:00:00.0";
    private const string Smbus = "0000:00:1f.4";

    private readonly TempDirectory _dir = new("pcipt-simkernel");
    private readonly HostTree _tree;
    private readonly SimulatedKernel _kernel;

    public SimulatedKernelTests()
    {
        GpuServerFixture.WriteTo(_dir.Path);
        _tree = new HostTree(_dir.Path);
        _kernel = new SimulatedKernel(_dir.Path);
    }

    public void Dispose()
    {
        _kernel.Dispose();
        _dir.Dispose();
    }

    // ---- driver_override ----------------------------------------------------------------------

    [Fact]
    public void DriverOverride_Initially_ReadsNull()
    {
        Assert.Equal("(null)\n", _tree.OverrideOf(Nvme));
    }

    [Theory]
    [InlineData("vfio-pci")]
    [InlineData("vfio-pci\n")]
    public void Write_DriverOverrideName_SetsIt(string value)
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", value);

        Assert.Equal("vfio-pci\n", _tree.OverrideOf(Nvme));
    }

    [Fact]
    public void Write_DriverOverrideLoneNewline_ClearsIt()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");

        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "\n");

        Assert.Equal("(null)\n", _tree.OverrideOf(Nvme));
    }

    [Fact]
    public void Write_DriverOverrideZeroLength_ChangesNothing()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");

        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "");

        Assert.Equal("vfio-pci\n", _tree.OverrideOf(Nvme));
    }

    [Fact]
    public void Write_DriverOverride_DoesNotChangeTheBoundDriver()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");

        Assert.Equal("nvme", _tree.DriverOf(Nvme));
    }

    // ---- drivers/X/unbind ----------------------------------------------------------------------

    [Theory]
    [InlineData(Nvme)]
    [InlineData(Nvme + "\n")]
    public void Write_UnbindBoundAddress_RemovesBothLinks(string value)
    {
        Assert.True(_tree.Exists($"/sys/bus/pci/drivers/nvme/{Nvme}"));

        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", value);

        Assert.Null(_tree.LinkTarget($"/sys/bus/pci/devices/{Nvme}/driver"));
        Assert.False(_tree.Exists($"/sys/bus/pci/drivers/nvme/{Nvme}"));
        Assert.Equal("nvme", _tree.DriverOf(Nvme2));
    }

    [Fact]
    public void Write_UnbindThroughDeviceDriverLink_Unbinds()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver/unbind", Nvme);

        Assert.Null(_tree.DriverOf(Nvme));
        Assert.False(_tree.Exists($"/sys/bus/pci/drivers/nvme/{Nvme}"));
    }

    [Theory]
    [InlineData("nvme", Gpu)] // bound to another driver
    [InlineData("nvme", HostBridge)] // no driver at all
    [InlineData("nvme", "3b:00.0")] // short form: the kernel compares device names exactly
    [InlineData("nvidia", "0000:AF:00.0")] // uppercase
    [InlineData("nvme", "0000:3B:00.0")]
    [InlineData("nvme", "0000:99:00.0")] // no such device
    [InlineData("nvme", "\n")]
    public void Write_UnbindNotBoundToThatDriver_FailsEnodevAndChangesNothing(string driver, string value)
    {
        var before = _tree.Snapshot();

        var e = Assert.Throws<IOException>(() => _kernel.Write($"/sys/bus/pci/drivers/{driver}/unbind", value));

        Assert.Equal(KernelErrno.ENODEV, e.HResult);
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    // ---- drivers_probe -------------------------------------------------------------------------

    [Fact]
    public void Write_DriversProbeWithOverride_BindsThatDriverWithLinuxLinks()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Gpu}/driver_override", "vfio-pci");
        _kernel.Write("/sys/bus/pci/drivers/nvidia/unbind", Gpu);

        _kernel.Write("/sys/bus/pci/drivers_probe", Gpu);

        // Exactly the relative links Linux makes: devices/.../X/driver -> ../../../../bus/pci/drivers/D
        // (four levels up from the function's directory under pci0000:16/0000:16:00.0) and
        // drivers/D/X -> ../../../../devices/pci0000:16/0000:16:00.0/X.
        Assert.Equal("../../../../bus/pci/drivers/vfio-pci", _tree.LinkTarget($"/sys/bus/pci/devices/{Gpu}/driver"));
        Assert.Equal($"../../../../devices/pci0000:16/0000:16:00.0/{Gpu}", _tree.LinkTarget($"/sys/bus/pci/drivers/vfio-pci/{Gpu}"));
        Assert.Equal(_tree.Path("/sys/bus/pci/drivers/vfio-pci"),
            Path.GetFullPath(Path.Combine(_tree.RealDeviceDirectory(Gpu), _tree.LinkTarget($"/sys/bus/pci/devices/{Gpu}/driver")!)));
        Assert.Equal(_tree.RealDeviceDirectory(Gpu),
            Path.GetFullPath(Path.Combine(_tree.Path("/sys/bus/pci/drivers/vfio-pci"), _tree.LinkTarget($"/sys/bus/pci/drivers/vfio-pci/{Gpu}")!)));
    }

    [Fact]
    public void Write_DriversProbeWithoutOverride_BindsNativeDriver()
    {
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);
        Assert.Null(_tree.DriverOf(Nvme));

        _kernel.Write("/sys/bus/pci/drivers_probe", Nvme + "\n");

        Assert.Equal("nvme", _tree.DriverOf(Nvme));
        Assert.Equal(_tree.RealDeviceDirectory(Nvme),
            Path.GetFullPath(Path.Combine(_tree.Path("/sys/bus/pci/drivers/nvme"), _tree.LinkTarget($"/sys/bus/pci/drivers/nvme/{Nvme}")!)));
    }

    [Fact]
    public void Write_DriversProbeAfterOverrideCleared_BindsNativeDriverAgain()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Gpu}/driver_override", "vfio-pci");
        _kernel.Write("/sys/bus/pci/drivers/nvidia/unbind", Gpu);
        _kernel.Write("/sys/bus/pci/drivers_probe", Gpu);
        _kernel.Write($"/sys/bus/pci/devices/{Gpu}/driver_override", "\n");
        _kernel.Write("/sys/bus/pci/drivers/vfio-pci/unbind", Gpu);

        _kernel.Write("/sys/bus/pci/drivers_probe", Gpu);

        Assert.Equal("nvidia", _tree.DriverOf(Gpu));
        Assert.False(_tree.Exists($"/sys/bus/pci/drivers/vfio-pci/{Gpu}"));
    }

    [Fact]
    public void Write_DriversProbeOnBoundDevice_SucceedsAndDoesNothing()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");
        var before = _tree.Snapshot();

        _kernel.Write("/sys/bus/pci/drivers_probe", Nvme);

        Assert.Equal("nvme", _tree.DriverOf(Nvme));
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    [Theory]
    [InlineData("0000:99:00.0")]
    [InlineData("3b:00.0")]
    [InlineData("garbage")]
    public void Write_DriversProbeNonexistentDevice_FailsEnodev(string value)
    {
        var e = Assert.Throws<IOException>(() => _kernel.Write("/sys/bus/pci/drivers_probe", value));

        Assert.Equal(KernelErrno.ENODEV, e.HResult);
    }

    [Fact]
    public void Write_DriversProbeOverrideNamingMissingDriver_SucceedsAndBindsNothing()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "no-such-driver");
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        _kernel.Write("/sys/bus/pci/drivers_probe", Nvme);

        Assert.Null(_tree.DriverOf(Nvme));
        Assert.False(_tree.Exists($"/sys/bus/pci/drivers/nvme/{Nvme}"));
    }

    // ---- drivers/X/bind ------------------------------------------------------------------------

    [Fact]
    public void Write_BindWhenOverrideNamesAnotherDriver_FailsEnodev()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        var e = Assert.Throws<IOException>(() => _kernel.Write("/sys/bus/pci/drivers/nvme/bind", Nvme));

        Assert.Equal(KernelErrno.ENODEV, e.HResult);
        Assert.Null(_tree.DriverOf(Nvme));
    }

    [Fact]
    public void Write_BindDriverThatDoesNotMatch_FailsEnodev()
    {
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        // vfio-pci has no id table of its own: without an override or a new_id it matches nothing.
        var e = Assert.Throws<IOException>(() => _kernel.Write("/sys/bus/pci/drivers/vfio-pci/bind", Nvme));

        Assert.Equal(KernelErrno.ENODEV, e.HResult);
        Assert.Null(_tree.DriverOf(Nvme));
    }

    [Fact]
    public void Write_BindAlreadyBoundDevice_FailsEbusy()
    {
        var e = Assert.Throws<IOException>(() => _kernel.Write("/sys/bus/pci/drivers/nvme/bind", Nvme));

        Assert.Equal(KernelErrno.EBUSY, e.HResult);
        Assert.Equal("nvme", _tree.DriverOf(Nvme));
    }

    [Fact]
    public void Write_BindMatchingDriverToUnboundDevice_Binds()
    {
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        _kernel.Write("/sys/bus/pci/drivers/nvme/bind", Nvme);

        Assert.Equal("nvme", _tree.DriverOf(Nvme));
        Assert.True(_tree.Exists($"/sys/bus/pci/drivers/nvme/{Nvme}"));
    }

    [Fact]
    public void Write_BindOverriddenDriver_Binds()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        _kernel.Write("/sys/bus/pci/drivers/vfio-pci/bind", Nvme);

        Assert.Equal("vfio-pci", _tree.DriverOf(Nvme));
    }

    // ---- vfio-pci ------------------------------------------------------------------------------

    [Fact]
    public void Write_VfioPciBindDeviceWithoutIommuGroup_FailsEinvalAndLeavesItDriverless()
    {
        using var dir = new TempDirectory("pcipt-noiommu");
        new SysfsTreeBuilder(dir.Path)
            .WithDriver("vfio-pci")
            .AddDevice(new SimulatedDeviceSpec
            {
                Address = PciAddress.Parse("0000:00:03.0"),
                VendorId = 0x8086,
                DeviceId = 0x10d3,
                ClassCode = 0x020000,
                Driver = "e1000e",
            });
        using var kernel = new SimulatedKernel(dir.Path);
        var tree = new HostTree(dir.Path);
        Assert.Null(tree.LinkTarget("/sys/bus/pci/devices/0000:00:03.0/iommu_group"));
        kernel.Write("/sys/bus/pci/devices/0000:00:03.0/driver_override", "vfio-pci");
        kernel.Write("/sys/bus/pci/drivers/e1000e/unbind", "0000:00:03.0");

        var e = Assert.Throws<IOException>(() => kernel.Write("/sys/bus/pci/drivers/vfio-pci/bind", "0000:00:03.0"));
        kernel.Write("/sys/bus/pci/drivers_probe", "0000:00:03.0");

        Assert.Equal(KernelErrno.EINVAL, e.HResult);
        Assert.Null(tree.DriverOf("0000:00:03.0"));
        Assert.False(tree.Exists("/sys/bus/pci/drivers/vfio-pci/0000:00:03.0"));
    }

    [Fact]
    public void Write_VfioPciBindPciToPciBridge_FailsEinval()
    {
        Assert.Null(_tree.DriverOf(AspeedBridge));
        _kernel.Write($"/sys/bus/pci/devices/{AspeedBridge}/driver_override", "vfio-pci");

        var e = Assert.Throws<IOException>(() => _kernel.Write("/sys/bus/pci/drivers/vfio-pci/bind", AspeedBridge));
        _kernel.Write("/sys/bus/pci/drivers_probe", AspeedBridge);

        Assert.Equal(KernelErrno.EINVAL, e.HResult);
        Assert.Null(_tree.DriverOf(AspeedBridge));
    }

    [Fact]
    public void Write_VfioPciBindAndUnbind_DevVfioGroupNodeFollowsTheGroupsVfioFunctions()
    {
        Assert.False(_tree.Exists("/dev/vfio/11"));

        MoveToVfio(_kernel, Gpu, "nvidia");
        Assert.True(_tree.Exists("/dev/vfio/11"));
        MoveToVfio(_kernel, GpuAudio, "snd_hda_intel");
        Assert.True(_tree.Exists("/dev/vfio/11"));

        _kernel.Write("/sys/bus/pci/drivers/vfio-pci/unbind", Gpu);
        Assert.True(_tree.Exists("/dev/vfio/11"));
        _kernel.Write("/sys/bus/pci/drivers/vfio-pci/unbind", GpuAudio);

        Assert.False(_tree.Exists("/dev/vfio/11"));
        Assert.True(_tree.Exists("/dev/vfio/vfio"));
    }

    // ---- new_id / remove_id --------------------------------------------------------------------

    [Fact]
    public void Write_NewId_BindsMatchingUnboundDevices()
    {
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme2);

        _kernel.Write("/sys/bus/pci/drivers/vfio-pci/new_id", "144d a80a");

        Assert.Equal("vfio-pci", _tree.DriverOf(Nvme));
        Assert.Equal("vfio-pci", _tree.DriverOf(Nvme2));
        Assert.Equal("nvidia", _tree.DriverOf(Gpu));
        Assert.True(_tree.Exists("/dev/vfio/21"));
    }

    [Fact]
    public void Write_NewId_LeavesBoundDevicesAlone()
    {
        _kernel.Write("/sys/bus/pci/drivers/vfio-pci/new_id", "144d a80a");

        Assert.Equal("nvme", _tree.DriverOf(Nvme));
    }

    [Fact]
    public void Write_RemoveIdAbsent_FailsEnodev()
    {
        var e = Assert.Throws<IOException>(() => _kernel.Write("/sys/bus/pci/drivers/vfio-pci/remove_id", "144d a80a"));

        Assert.Equal(KernelErrno.ENODEV, e.HResult);
    }

    [Fact]
    public void Write_RemoveIdAfterNewId_ProbeNoLongerPicksThatDriver()
    {
        _kernel.Write("/sys/bus/pci/drivers/vfio-pci/new_id", "144d a80a");
        _kernel.Write("/sys/bus/pci/drivers/vfio-pci/remove_id", "144d a80a");
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        var e = Assert.Throws<IOException>(() => _kernel.Write("/sys/bus/pci/drivers/vfio-pci/bind", Nvme));

        Assert.Equal(KernelErrno.ENODEV, e.HResult);
    }

    // ---- reset / reset_method ------------------------------------------------------------------

    [Fact]
    public void Write_ResetOne_CountsAReset()
    {
        var address = PciAddress.Parse(Nvme);
        Assert.Equal(0, _kernel.ResetCount(address));

        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset", "1");
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset", "1\n");

        Assert.Equal(2, _kernel.ResetCount(address));
        Assert.Equal(0, _kernel.ResetCount(PciAddress.Parse(Nvme2)));
    }

    [Theory]
    [InlineData("0")]
    [InlineData("2")]
    [InlineData("yes")]
    [InlineData("\n")]
    public void Write_ResetOtherValue_FailsEinval(string value)
    {
        var e = Assert.Throws<IOException>(() => _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset", value));

        Assert.Equal(KernelErrno.EINVAL, e.HResult);
        Assert.Equal(0, _kernel.ResetCount(PciAddress.Parse(Nvme)));
    }

    [Theory]
    [InlineData("01")]
    [InlineData("+1")]
    [InlineData("0x1")]
    public void Write_ResetOneInAnotherNotation_CountsAReset(string value)
    {
        // reset_store parses with kstrtoul(buf, 0, ...): a leading +, octal and hex forms are 1 too.
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset", value);

        Assert.Equal(1, _kernel.ResetCount(PciAddress.Parse(Nvme)));
    }

    [Fact]
    public void Write_ResetOnDeviceWithoutResetFile_FailsEnoent()
    {
        Assert.False(_tree.Exists($"/sys/bus/pci/devices/{Smbus}/reset"));

        var e = Assert.Throws<IOException>(() => _kernel.Write($"/sys/bus/pci/devices/{Smbus}/reset", "1"));

        Assert.Equal(KernelErrno.ENOENT, e.HResult);
        Assert.False(_tree.Exists($"/sys/bus/pci/devices/{Smbus}/reset"));
    }

    [Theory]
    [InlineData("flr", "flr\n")]
    [InlineData("bus", "bus\n")]
    [InlineData("bus flr", "bus flr\n")]
    [InlineData("flr\n", "flr\n")]
    public void Write_ResetMethodSubset_SelectsIt(string value, string expected)
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset_method", value);

        Assert.Equal(expected, _tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
    }

    [Fact]
    public void Write_ResetMethodDefault_RestoresTheSupportedMethods()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset_method", "bus");

        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset_method", "default");

        Assert.Equal("flr bus\n", _tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
    }

    [Theory]
    [InlineData("pm")] // not supported by this function
    [InlineData("warp")]
    public void Write_ResetMethodNotASubset_FailsEinvalAndKeepsTheMethods(string value)
    {
        var e = Assert.Throws<IOException>(() => _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset_method", value));

        Assert.Equal(KernelErrno.EINVAL, e.HResult);
        Assert.Equal("flr bus\n", _tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
    }

    [Fact]
    public void Write_ResetMethodNamedTwice_AcceptedAndShownTwiceAsLinuxDoes()
    {
        // Seen on Linux 6.1 in the real-kernel trace: a repeated name is kept, not refused.
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset_method", "flr flr");

        Assert.Equal("flr flr\n", _tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
    }

    [Fact]
    public void Write_ResetWithEveryMethodDisabled_FailsEnotty()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset_method", "\n");

        var e = Assert.Throws<IOException>(() => _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset", "1"));

        Assert.Equal(KernelErrno.ENOTTY, e.HResult);
        Assert.Equal(0, _kernel.ResetCount(PciAddress.Parse(Nvme)));
    }

    // ---- what is not a control file ------------------------------------------------------------

    [Theory]
    [InlineData("/sys/bus/pci/drivers/nvme/unbind")]
    [InlineData("/sys/bus/pci/drivers/nvme/bind")]
    [InlineData("/sys/bus/pci/drivers_probe")]
    [InlineData("/sys/bus/pci/drivers/vfio-pci/new_id")]
    [InlineData("/sys/bus/pci/devices/0000:3b:00.0/reset")]
    [InlineData("/sys/bus/pci/devices/0000:3b:00.0/reset_method")]
    [InlineData("/sys/bus/pci/devices/0000:3b:00.0/driver_override")]
    public void Write_ZeroLength_SucceedsAndChangesNothing(string path)
    {
        // sysfs_kf_write returns 0 for a zero-length write before any store callback runs.
        var before = _tree.Snapshot();

        _kernel.Write(path, "");

        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
        Assert.Equal(0, _kernel.ResetCount(PciAddress.Parse(Nvme)));
    }

    [Theory]
    [InlineData("vendor")]
    [InlineData("class")]
    [InlineData("device")]
    public void Write_ReadOnlyAttribute_FailsEaccesAndKeepsTheValue(string attribute)
    {
        var before = _tree.Read($"/sys/bus/pci/devices/{Nvme}/{attribute}");

        var e = Assert.Throws<IOException>(() => _kernel.Write($"/sys/bus/pci/devices/{Nvme}/{attribute}", "0x1234"));

        Assert.Equal(KernelErrno.EACCES, e.HResult);
        Assert.Equal(before, _tree.Read($"/sys/bus/pci/devices/{Nvme}/{attribute}"));
    }

    [Theory]
    [InlineData("/etc/passwd")]
    [InlineData("/tmp/pcipt-escape")]
    [InlineData("/sys/../etc/passwd")]
    [InlineData("/sys/bus/pci/devices/../../../../tmp/pcipt-escape")]
    [InlineData("/sys/bus/pci/drivers/nvme/..")]
    [InlineData("sys/bus/pci/drivers_probe")]
    [InlineData("/sys//bus/pci/drivers_probe")]
    [InlineData("/sys/./bus/pci/drivers_probe")]
    [InlineData("")]
    public void Write_PathOutsideSysDevProcOrWithDotDot_IsRefused(string path)
    {
        var before = _tree.Snapshot();

        Assert.Throws<ArgumentException>(() => _kernel.Write(path, Nvme));

        Assert.False(File.Exists("/tmp/pcipt-escape"));
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    // ---- faults --------------------------------------------------------------------------------

    [Fact]
    public void Write_UnbindHangs_BlocksTheWriterUntilReleaseHangs()
    {
        _kernel.AddFault(PciAddress.Parse(Nvme), new SimulatedFault.UnbindHangs());
        var writer = StartWrite(_kernel, "/sys/bus/pci/drivers/nvme/unbind", Nvme);

        Assert.False(writer.Thread.Join(TimeSpan.FromMilliseconds(300)), "the unbind returned although it hangs");
        Assert.Equal("nvme", _tree.DriverOf(Nvme));

        _kernel.ReleaseHangs();

        Assert.True(writer.Thread.Join(Wait.Guard));
        Assert.Null(writer.Failure);
        Assert.Null(_tree.DriverOf(Nvme));
        Assert.False(_tree.Exists($"/sys/bus/pci/drivers/nvme/{Nvme}"));
    }

    [Fact]
    public void Write_UnbindHangs_OtherDevicesUnbindMeanwhile()
    {
        _kernel.AddFault(PciAddress.Parse(Nvme), new SimulatedFault.UnbindHangs());
        var writer = StartWrite(_kernel, "/sys/bus/pci/drivers/nvme/unbind", Nvme);

        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme2);

        Assert.Null(_tree.DriverOf(Nvme2));
        Assert.True(writer.Thread.IsAlive);
        _kernel.ReleaseHangs();
        Assert.True(writer.Thread.Join(Wait.Guard));
    }

    [Fact]
    public void Write_UnbindDelay_CompletesAfterTheDelay()
    {
        _kernel.AddFault(PciAddress.Parse(Nvme), SimulatedFault.Parse("unbind_delay=0.3"));
        var clock = Stopwatch.StartNew();

        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        // A lower bound only: the write cannot return before the delay has passed.
        Assert.True(clock.Elapsed >= TimeSpan.FromMilliseconds(290), $"returned after {clock.Elapsed}");
        Assert.Null(_tree.DriverOf(Nvme));
    }

    [Fact]
    public void Write_BindRefused_ProbeLeavesDriverlessAndExplicitBindFailsEbusy()
    {
        _kernel.AddFault(PciAddress.Parse(Nvme), SimulatedFault.Parse("bind_refused"));
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        _kernel.Write("/sys/bus/pci/drivers_probe", Nvme);
        Assert.Null(_tree.DriverOf(Nvme));
        var e = Assert.Throws<IOException>(() => _kernel.Write("/sys/bus/pci/drivers/vfio-pci/bind", Nvme));

        Assert.Equal(KernelErrno.EBUSY, e.HResult);
        Assert.Null(_tree.DriverOf(Nvme));
        Assert.False(_tree.Exists("/dev/vfio/21"));
    }

    [Fact]
    public void Write_BindRefusedNamingADriver_OnlyThatDriverRefuses()
    {
        _kernel.AddFault(PciAddress.Parse(Nvme), SimulatedFault.Parse("bind_refused=nvme"));
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        _kernel.Write("/sys/bus/pci/drivers_probe", Nvme);
        var e = Assert.Throws<IOException>(() => _kernel.Write("/sys/bus/pci/drivers/nvme/bind", Nvme));
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");
        _kernel.Write("/sys/bus/pci/drivers_probe", Nvme);

        Assert.Equal(KernelErrno.EBUSY, e.HResult);
        Assert.Equal("vfio-pci", _tree.DriverOf(Nvme));
    }

    [Fact]
    public void Write_ProbeBindsNothing_ProbeSucceedsButExplicitBindWorks()
    {
        _kernel.AddFault(PciAddress.Parse(Nvme), new SimulatedFault.ProbeBindsNothing());
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        _kernel.Write("/sys/bus/pci/drivers_probe", Nvme);
        Assert.Null(_tree.DriverOf(Nvme));
        _kernel.Write("/sys/bus/pci/drivers/vfio-pci/bind", Nvme);

        Assert.Equal("vfio-pci", _tree.DriverOf(Nvme));
    }

    [Fact]
    public void Write_ResetFails_FailsEioAndCountsNothing()
    {
        _kernel.AddFault(PciAddress.Parse(Nvme), SimulatedFault.Parse("reset_fails"));

        var e = Assert.Throws<IOException>(() => _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset", "1"));

        Assert.Equal(KernelErrno.EIO, e.HResult);
        Assert.Equal(0, _kernel.ResetCount(PciAddress.Parse(Nvme)));
    }

    [Fact]
    public void Holder_OnHostDriver_ShowsAProcessWithTheDriversNodeOpen()
    {
        _kernel.AddFault(PciAddress.Parse(Gpu), SimulatedFault.Parse("holder=4242:qemu-system"));

        Assert.Equal("qemu-system\n", _tree.Read("/proc/4242/comm"));
        var stat = _tree.Read("/proc/4242/stat").TrimEnd('\n').Split(' ');
        Assert.Equal("4242", stat[0]);
        Assert.Equal("(qemu-system)", stat[1]);
        Assert.True(stat.Length >= 22);
        Assert.True(long.TryParse(stat[21], out var startTime) && startTime > 0, $"field 22 is '{stat[21]}'");
        Assert.Equal("/dev/nvidia0", _tree.LinkTarget("/proc/4242/fd/3"));
    }

    [Fact]
    public void Holder_OnNvme_HoldsTheControllerNode()
    {
        _kernel.AddFault(PciAddress.Parse(Nvme), SimulatedFault.Parse("holder=4243:fio"));

        Assert.Equal("/dev/nvme0", _tree.LinkTarget("/proc/4243/fd/3"));
    }

    [Fact]
    public void Holder_OnVfioPci_HoldsTheGroupNode()
    {
        MoveToVfio(_kernel, Gpu, "nvidia");

        _kernel.AddFault(PciAddress.Parse(Gpu), SimulatedFault.Parse("holder=4242:qemu-system"));

        Assert.Equal("/dev/vfio/11", _tree.LinkTarget("/proc/4242/fd/3"));
    }

    [Fact]
    public void Write_UnbindOfHeldDevice_BlocksUntilKillHolder()
    {
        _kernel.AddFault(PciAddress.Parse(Gpu), SimulatedFault.Parse("holder=4242:qemu-system"));
        var writer = StartWrite(_kernel, "/sys/bus/pci/drivers/nvidia/unbind", Gpu);

        Assert.False(writer.Thread.Join(TimeSpan.FromMilliseconds(300)), "the unbind returned while a process holds the device");
        Assert.Equal("nvidia", _tree.DriverOf(Gpu));

        _kernel.KillHolder(4242);

        Assert.True(writer.Thread.Join(Wait.Guard));
        Assert.Null(writer.Failure);
        Assert.Null(_tree.DriverOf(Gpu));
        Assert.False(_tree.Exists("/proc/4242"));
    }

    public static TheoryData<string, SimulatedFault> FaultForms => new()
    {
        { "unbind_hangs", new SimulatedFault.UnbindHangs() },
        { "unbind_delay=2.5", new SimulatedFault.UnbindDelay(TimeSpan.FromSeconds(2.5)) },
        { "unbind_delay=0", new SimulatedFault.UnbindDelay(TimeSpan.Zero) },
        { "unbind_delay=3", new SimulatedFault.UnbindDelay(TimeSpan.FromSeconds(3)) },
        { "bind_refused", new SimulatedFault.BindRefused("vfio-pci") },
        { "bind_refused=nvme", new SimulatedFault.BindRefused("nvme") },
        { "bind_refused=snd_hda_intel", new SimulatedFault.BindRefused("snd_hda_intel") },
        { "probe_binds_nothing", new SimulatedFault.ProbeBindsNothing() },
        { "reset_fails", new SimulatedFault.ResetFails() },
        { "holder=4242:qemu-system", new SimulatedFault.Holder(4242, "qemu-system") },
        { "holder=77:qemu-system-x86_64 -m 4G", new SimulatedFault.Holder(77, "qemu-system-x86_64 -m 4G") },
        { "service=nvidia-persistenced", new SimulatedFault.Service("nvidia-persistenced.service") },
        { "service=nvidia-persistenced.service", new SimulatedFault.Service("nvidia-persistenced.service") },
    };

    [Theory]
    [MemberData(nameof(FaultForms))]
    public void Parse_ContractForm_GivesThatFault(string text, SimulatedFault expected)
    {
        Assert.Equal(expected, SimulatedFault.Parse(text));
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("explode")]
    [InlineData("UNBIND_HANGS")]
    [InlineData("unbind_hangs=1")]
    [InlineData("unbind_delay")]
    [InlineData("unbind_delay=")]
    [InlineData("unbind_delay=-1")]
    [InlineData("unbind_delay=soon")]
    [InlineData("unbind_delay=NaN")]
    [InlineData("unbind_delay=1e300")]
    [InlineData("bind_refused=")]
    [InlineData("bind_refused=../../etc")]
    [InlineData("probe_binds_nothing=yes")]
    [InlineData("reset_fails=1")]
    [InlineData("holder")]
    [InlineData("holder=4242")]
    [InlineData("holder=4242:")]
    [InlineData("holder=abc:qemu")]
    [InlineData("holder=-5:qemu")]
    [InlineData("holder=0:qemu")]
    [InlineData("service=")]
    [InlineData("service=../etc/unit")]
    public void Parse_Garbage_ThrowsFormatException(string text)
    {
        Assert.Throws<FormatException>(() => SimulatedFault.Parse(text));
    }

    [Fact]
    public void LoadFile_JsonObjectKeyedByAddress_ReadsEveryFault()
    {
        var path = _dir.Combine("faults.json");
        File.WriteAllText(path, """
            {
              "0000:3b:00.0": ["unbind_delay=0.5", "holder=4242:qemu-system"],
              "AF:00.1": ["probe_binds_nothing", "bind_refused=snd_hda_intel"],
              "0000:d8:00.0": []
            }
            """);

        var faults = SimulatedFault.LoadFile(path);

        Assert.Equal(3, faults.Count);
        Assert.Equal([new SimulatedFault.UnbindDelay(TimeSpan.FromSeconds(0.5)), new SimulatedFault.Holder(4242, "qemu-system")],
            faults[PciAddress.Parse(Nvme)]);
        Assert.Equal([new SimulatedFault.ProbeBindsNothing(), new SimulatedFault.BindRefused("snd_hda_intel")],
            faults[PciAddress.Parse("0000:af:00.1")]);
        Assert.Empty(faults[PciAddress.Parse(Nvme2)]);
    }

    [Theory]
    [InlineData("""{ "not-an-address": ["unbind_hangs"] }""")]
    [InlineData("""{ "0000:3b:00.0": ["unbind_hangs", "explode"] }""")]
    public void LoadFile_BadContent_ThrowsFormatException(string json)
    {
        var path = _dir.Combine("faults.json");
        File.WriteAllText(path, json);

        Assert.Throws<FormatException>(() => SimulatedFault.LoadFile(path));
    }

    [Fact]
    public void Constructor_WithFaultsFromLoadFile_AppliesThem()
    {
        var path = _dir.Combine("faults.json");
        File.WriteAllText(path, """{ "0000:d8:00.0": ["reset_fails"] }""");
        using var kernel = new SimulatedKernel(_dir.Path, SimulatedFault.LoadFile(path));

        var e = Assert.Throws<IOException>(() => kernel.Write($"/sys/bus/pci/devices/{Nvme2}/reset", "1"));

        Assert.Equal(KernelErrno.EIO, e.HResult);
    }

    // ---- persistence across a daemon restart ---------------------------------------------------

    [Fact]
    public void Constructor_OverAChangedTree_RemembersNativeDrivers()
    {
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);
        Assert.Null(_tree.DriverOf(Nvme));

        using var restarted = new SimulatedKernel(_dir.Path);
        restarted.Write("/sys/bus/pci/drivers_probe", Nvme);

        Assert.Equal("nvme", restarted.NativeDriver(PciAddress.Parse(Nvme)));
        Assert.Equal("nvme", _tree.DriverOf(Nvme));
    }

    [Fact]
    public void Constructor_OverATreeWithADeviceOnVfio_RemembersItsNativeDriver()
    {
        MoveToVfio(_kernel, Nvme, "nvme");

        using var restarted = new SimulatedKernel(_dir.Path);
        restarted.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "\n");
        restarted.Write("/sys/bus/pci/drivers/vfio-pci/unbind", Nvme);
        restarted.Write("/sys/bus/pci/drivers_probe", Nvme);

        Assert.Equal("nvme", _tree.DriverOf(Nvme));
    }

    [Fact]
    public void Constructor_OverAChangedTree_RemembersDynamicIdsAndResetCounts()
    {
        _kernel.Write("/sys/bus/pci/drivers/vfio-pci/new_id", "144d a80a");
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/reset", "1");

        using var restarted = new SimulatedKernel(_dir.Path);
        restarted.Write("/sys/bus/pci/drivers/vfio-pci/remove_id", "144d a80a");

        Assert.Equal(1, restarted.ResetCount(PciAddress.Parse(Nvme)));
    }

    [Fact]
    public void Constructor_TornLinkPair_IsRepaired()
    {
        // A crash between the two link writes of a bind: the driver lists the device, the device
        // has no driver link.
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);
        File.CreateSymbolicLink(_tree.Path($"/sys/bus/pci/drivers/nvme/{Nvme}"),
            Path.GetRelativePath(_tree.Path("/sys/bus/pci/drivers/nvme"), _tree.RealDeviceDirectory(Nvme)));

        using var restarted = new SimulatedKernel(_dir.Path);

        Assert.False(_tree.Exists($"/sys/bus/pci/drivers/nvme/{Nvme}"));
        Assert.Null(_tree.DriverOf(Nvme));
        Assert.True(_tree.Exists($"/sys/bus/pci/drivers/nvme/{Nvme2}"));
        restarted.Write("/sys/bus/pci/drivers/nvme/bind", Nvme);
        Assert.Equal("nvme", _tree.DriverOf(Nvme));
    }

    // ---- other tools read the tree -------------------------------------------------------------

    [Fact]
    public void Lspci_AfterBindingToVfio_ShowsVfioPciAsTheDriverInUse()
    {
        MoveToVfio(_kernel, Gpu, "nvidia");

        var output = RunLspci(_dir.Path, Gpu);

        Assert.Contains($"{Gpu} VGA compatible controller [0300]", output, StringComparison.Ordinal);
        Assert.Contains("[10de:2230]", output, StringComparison.Ordinal);
        Assert.Contains("Kernel driver in use: vfio-pci", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Lspci_OnTheFixture_ShowsTheBootDriver()
    {
        var output = RunLspci(_dir.Path, Nvme);

        Assert.Contains("Kernel driver in use: nvme", output, StringComparison.Ordinal);
    }

    private static string RunLspci(string root, string address)
    {
        var start = new ProcessStartInfo("lspci")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[] { "-A", "linux-sysfs", "-O", $"sysfs.path={root}/sys/bus/pci", "-D", "-nn", "-k", "-s", address })
        {
            start.ArgumentList.Add(argument);
        }

        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEnd();
        var error = process.StandardError.ReadToEnd();
        Assert.True(process.WaitForExit(Wait.Guard), "lspci did not exit");
        Assert.True(process.ExitCode == 0, $"lspci failed: {error}");
        return output;
    }

    internal static void MoveToVfio(SimulatedKernel kernel, string address, string from)
    {
        kernel.Write($"/sys/bus/pci/devices/{address}/driver_override", "vfio-pci");
        kernel.Write($"/sys/bus/pci/drivers/{from}/unbind", address);
        kernel.Write("/sys/bus/pci/drivers_probe", address);
    }

    private static BackgroundWrite StartWrite(SimulatedKernel kernel, string path, string value)
    {
        var write = new BackgroundWrite();
        write.Thread = new Thread(() =>
        {
            try
            {
                kernel.Write(path, value);
            }
            catch (Exception e)
            {
                write.Failure = e;
            }
        })
        {
            IsBackground = true,
        };
        write.Thread.Start();
        return write;
    }

    private sealed class BackgroundWrite
    {
        public Thread Thread { get; set; } = null!;

        public Exception? Failure { get; set; }
    }
}
