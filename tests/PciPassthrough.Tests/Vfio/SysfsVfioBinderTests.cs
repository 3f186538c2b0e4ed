using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using PciPassthrough.Devices;
using PciPassthrough.Discovery;
using PciPassthrough.Errors;
using PciPassthrough.PciIds;
using PciPassthrough.Registry;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Sysfs;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Vfio.Tests;

public sealed class SysfsVfioBinderTests : IDisposable
{
    private const string Gpu = "0000:17:00.0";
    private const string GpuAudio = "0000:17:00.1";
    private const string Nvme = "0000:3b:00.0";
    private const string Nvme2 = "0000:d8:00.0";
    private const string Vga = "0000:03:00.0";
    private const string I210 = "0000:04:00.0";
    private const string AspeedBridge = "0000:02:00.0";

    private readonly TempDirectory _dir = new("pcipt-binder");
    private readonly HostTree _tree;
    private readonly SimulatedKernel _kernel;
    private readonly InterceptingSysfs _writes;
    private readonly SysfsVfioBinder _binder;

    public SysfsVfioBinderTests()
    {
        GpuServerFixture.WriteTo(_dir.Path);
        _tree = new HostTree(_dir.Path);
        _kernel = new SimulatedKernel(_dir.Path);
        _writes = new InterceptingSysfs(_kernel);
        _binder = CreateBinder(_kernel, _writes);
    }

    public void Dispose()
    {
        _kernel.Dispose();
        _dir.Dispose();
    }

    internal static SysfsVfioBinder CreateBinder(ISysfs reads, ISysfs writes, TimeSpan? timeout = null)
    {
        var options = Options.Create(new VfioOptions
        {
            OperationTimeout = timeout ?? TimeSpan.FromMilliseconds(200),
            VerifyPollInterval = TimeSpan.FromMilliseconds(2),
        });
        var discovery = new PciDiscovery(reads, new PciIdsProvider(PciIdsDatabase.Empty));
        // The writer's clock never moves: a write slowed down by a busy machine cannot time out
        // here (BoundedKernelWriterTests cover timeouts). The binder's own verify polls use the
        // short timeout on the real clock, so a probe that binds nothing is noticed quickly.
        var writer = new BoundedKernelWriter(writes, options, new FakeTimeProvider(), NullLogger<BoundedKernelWriter>.Instance);
        return new SysfsVfioBinder(reads, discovery, writer, options, TimeProvider.System, NullLogger<SysfsVfioBinder>.Instance);
    }

    private static PciAddress A(string address) => PciAddress.Parse(address);

    // ---- CheckVfioAvailable --------------------------------------------------------------------

    [Fact]
    public void CheckVfioAvailable_FixtureHost_IsAvailable()
    {
        var availability = _binder.CheckVfioAvailable();

        Assert.True(availability.Available);
        Assert.Empty(availability.Missing);
        Assert.True(_binder.IsVfioAvailable());
    }

    [Fact]
    public void CheckVfioAvailable_NoVfioPciDriver_ReportsTheDriverMissing()
    {
        Directory.Delete(_tree.Path("/sys/bus/pci/drivers/vfio-pci"), recursive: true);

        var availability = _binder.CheckVfioAvailable();

        Assert.False(availability.Available);
        Assert.False(availability.VfioPciDriver);
        var missing = Assert.Single(availability.Missing);
        Assert.Contains("vfio-pci", missing, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckVfioAvailable_NoVfioContainerNode_ReportsDevVfioMissing()
    {
        File.Delete(_tree.Path("/dev/vfio/vfio"));

        var availability = _binder.CheckVfioAvailable();

        Assert.False(availability.Available);
        Assert.Equal(["/dev/vfio/vfio"], availability.Missing);
    }

    [Fact]
    public void CheckVfioAvailable_NoIommuGroups_ReportsTheIommuMissing()
    {
        Directory.Delete(_tree.Path("/sys/kernel/iommu_groups"), recursive: true);
        Directory.CreateDirectory(_tree.Path("/sys/kernel/iommu_groups"));

        var availability = _binder.CheckVfioAvailable();

        Assert.False(availability.Available);
        Assert.False(availability.IommuGroups);
        var missing = Assert.Single(availability.Missing);
        Assert.Contains("IOMMU", missing, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckVfioAvailable_HostWithoutIommuOrVfio_ReportsEverythingMissing()
    {
        using var dir = new TempDirectory("pcipt-novfio");
        new SysfsTreeBuilder(dir.Path).AddDevice(new SimulatedDeviceSpec
        {
            Address = A("0000:00:03.0"), VendorId = 0x8086, DeviceId = 0x10d3, ClassCode = 0x020000, Driver = "e1000e",
        });
        using var kernel = new SimulatedKernel(dir.Path);

        var availability = CreateBinder(kernel, kernel).CheckVfioAvailable();

        Assert.False(availability.Available);
        Assert.Equal(3, availability.Missing.Count);
    }

    // ---- FindGroupBlockers / CheckIommuGroupSafe -----------------------------------------------

    [Fact]
    public void FindGroupBlockers_OnboardNic_NamesTheConsoleVgaAndIgnoresBridges()
    {
        var blockers = _binder.FindGroupBlockers(A(I210), []);

        var blocker = Assert.Single(blockers);
        Assert.Equal(Vga, blocker.PciAddress);
        Assert.Equal("ast", blocker.Driver);
        Assert.Equal("030000", blocker.ClassCode);
        Assert.False(string.IsNullOrWhiteSpace(blocker.Reason));
        Assert.Contains("ast", blocker.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void FindGroupBlockers_GpuWithoutItsAudio_NamesTheAudioFunction()
    {
        var blocker = Assert.Single(_binder.FindGroupBlockers(A(Gpu), []));

        Assert.Equal(GpuAudio, blocker.PciAddress);
        Assert.Equal("snd_hda_intel", blocker.Driver);
        Assert.Equal("040300", blocker.ClassCode);
    }

    [Fact]
    public void FindGroupBlockers_AllowedMember_IsNotABlocker()
    {
        Assert.Empty(_binder.FindGroupBlockers(A(Gpu), [A(Gpu), A(GpuAudio)]));
    }

    [Fact]
    public void FindGroupBlockers_BootVgaAllowed_StillBlocksAsTheHostConsole()
    {
        var blocker = Assert.Single(_binder.FindGroupBlockers(A(I210), [A(I210), A(Vga)]));

        Assert.Equal(Vga, blocker.PciAddress);
        Assert.Equal("ast", blocker.Driver);
        Assert.Contains("boot_vga", blocker.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void FindGroupBlockers_MemberOnVfioPci_IsNotABlocker()
    {
        SimulatedKernelTests.MoveToVfio(_kernel, GpuAudio, "snd_hda_intel");

        Assert.Empty(_binder.FindGroupBlockers(A(Gpu), []));
    }

    [Fact]
    public void FindGroupBlockers_DriverlessMember_IsNotABlocker()
    {
        _kernel.Write("/sys/bus/pci/drivers/snd_hda_intel/unbind", GpuAudio);

        Assert.Empty(_binder.FindGroupBlockers(A(Gpu), []));
    }

    [Fact]
    public void FindGroupBlockers_DeviceAloneInItsGroup_HasNone()
    {
        Assert.Empty(_binder.FindGroupBlockers(A(Nvme), []));
    }

    [Fact]
    public void CheckIommuGroupSafe_SharedGroupInUse_ThrowsConflictWithBlockingDevices()
    {
        var e = Assert.Throws<PassthroughException>(() => _binder.CheckIommuGroupSafe(A(I210), []));

        Assert.Equal(ErrorCodes.IommuGroupConflict, e.Code);
        var blockers = Assert.IsAssignableFrom<IReadOnlyList<BlockingDevice>>(e.Details["blocking_devices"]);
        Assert.Equal(Vga, Assert.Single(blockers).PciAddress);
        Assert.Contains(Vga, e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(AspeedBridge, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void CheckIommuGroupSafe_WholeGroupAllowed_DoesNotThrow()
    {
        _binder.CheckIommuGroupSafe(A(Gpu), [A(GpuAudio)]);
        _binder.CheckIommuGroupSafe(A(Nvme), []);
    }

    // ---- PlanBind / PlanRestore ----------------------------------------------------------------

    [Fact]
    public void PlanBind_DeviceOnADriver_OverrideUnbindProbe()
    {
        var steps = _binder.PlanBind([A(Nvme)]);

        Assert.Equal(
        [
            (1, Nvme, "set_override", $"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci"),
            (2, Nvme, "unbind", "/sys/bus/pci/drivers/nvme/unbind", Nvme),
            (3, Nvme, "probe", "/sys/bus/pci/drivers_probe", Nvme),
        ], steps.Select(Shape));
        Assert.All(steps, s => Assert.Contains(Nvme, s.Description, StringComparison.Ordinal));
    }

    [Fact]
    public void PlanBind_DriverlessDevice_HasNoUnbind()
    {
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        var steps = _binder.PlanBind([A(Nvme)]);

        Assert.Equal(
        [
            (1, Nvme, "set_override", $"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci"),
            (2, Nvme, "probe", "/sys/bus/pci/drivers_probe", Nvme),
        ], steps.Select(Shape));
    }

    [Fact]
    public void PlanBind_DeviceAlreadyOnVfioPci_HasNoSteps()
    {
        SimulatedKernelTests.MoveToVfio(_kernel, Nvme, "nvme");

        Assert.Empty(_binder.PlanBind([A(Nvme)]));
    }

    [Fact]
    public void PlanBind_GroupOfTwo_FunctionByFunctionNumberedInOrder()
    {
        var steps = _binder.PlanBind([A(Gpu), A(GpuAudio)]);

        Assert.Equal(
        [
            (1, Gpu, "set_override", $"/sys/bus/pci/devices/{Gpu}/driver_override", "vfio-pci"),
            (2, Gpu, "unbind", "/sys/bus/pci/drivers/nvidia/unbind", Gpu),
            (3, Gpu, "probe", "/sys/bus/pci/drivers_probe", Gpu),
            (4, GpuAudio, "set_override", $"/sys/bus/pci/devices/{GpuAudio}/driver_override", "vfio-pci"),
            (5, GpuAudio, "unbind", "/sys/bus/pci/drivers/snd_hda_intel/unbind", GpuAudio),
            (6, GpuAudio, "probe", "/sys/bus/pci/drivers_probe", GpuAudio),
        ], steps.Select(Shape));
    }

    [Fact]
    public void PlanBind_And_PlanRestore_WriteNothing()
    {
        SimulatedKernelTests.MoveToVfio(_kernel, Nvme2, "nvme");
        var before = _tree.Snapshot();

        _binder.PlanBind([A(Gpu), A(GpuAudio), A(Nvme)]);
        _binder.PlanRestore([new BoundFunction { PciAddress = A(Nvme2), OriginalDriver = "nvme" }]);

        Assert.Empty(_writes.Writes);
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    [Fact]
    public void PlanRestore_DeviceOnVfio_ClearOverrideUnbindProbe()
    {
        SimulatedKernelTests.MoveToVfio(_kernel, Nvme, "nvme");

        var steps = _binder.PlanRestore([new BoundFunction { PciAddress = A(Nvme), OriginalDriver = "nvme" }]);

        Assert.Equal(
        [
            (1, Nvme, "set_override", $"/sys/bus/pci/devices/{Nvme}/driver_override", "\n"),
            (2, Nvme, "unbind", "/sys/bus/pci/drivers/vfio-pci/unbind", Nvme),
            (3, Nvme, "probe", "/sys/bus/pci/drivers_probe", Nvme),
        ], steps.Select(Shape));
        Assert.Contains("nvme", steps[2].Description, StringComparison.Ordinal);
    }

    [Fact]
    public void PlanRestore_WithAnOriginalOverride_WritesThatOverrideBack()
    {
        SimulatedKernelTests.MoveToVfio(_kernel, Nvme, "nvme");

        var steps = _binder.PlanRestore([new BoundFunction { PciAddress = A(Nvme), OriginalDriver = "nvme", OriginalDriverOverride = "nvme" }]);

        // The override goes back last: written first, one naming another driver would make the
        // probe bind that driver instead of the original.
        Assert.Equal(
        [
            (1, Nvme, "set_override", $"/sys/bus/pci/devices/{Nvme}/driver_override", "\n"),
            (2, Nvme, "unbind", "/sys/bus/pci/drivers/vfio-pci/unbind", Nvme),
            (3, Nvme, "probe", "/sys/bus/pci/drivers_probe", Nvme),
            (4, Nvme, "restore_override", $"/sys/bus/pci/devices/{Nvme}/driver_override", "nvme"),
        ], steps.Select(Shape));
    }

    [Fact]
    public void PlanRestore_FunctionThatHadNoDriver_HasNoProbe()
    {
        SimulatedKernelTests.MoveToVfio(_kernel, Nvme, "nvme");

        var steps = _binder.PlanRestore([new BoundFunction { PciAddress = A(Nvme), OriginalDriver = null }]);

        Assert.Equal(
        [
            (1, Nvme, "set_override", $"/sys/bus/pci/devices/{Nvme}/driver_override", "\n"),
            (2, Nvme, "unbind", "/sys/bus/pci/drivers/vfio-pci/unbind", Nvme),
        ], steps.Select(Shape));
    }

    [Fact]
    public void PlanRestore_OriginalUnknown_ProbesAndLetsTheKernelChoose()
    {
        SimulatedKernelTests.MoveToVfio(_kernel, Nvme, "nvme");

        var steps = _binder.PlanRestore([new BoundFunction { PciAddress = A(Nvme), OriginalDriver = null, OriginalUnknown = true }]);

        Assert.Equal(
        [
            (1, Nvme, "set_override", $"/sys/bus/pci/devices/{Nvme}/driver_override", "\n"),
            (2, Nvme, "unbind", "/sys/bus/pci/drivers/vfio-pci/unbind", Nvme),
            (3, Nvme, "probe", "/sys/bus/pci/drivers_probe", Nvme),
        ], steps.Select(Shape));
    }

    [Fact]
    public void PlanRestore_DriverlessAfterACrash_ClearsOverrideAndProbesWithoutUnbind()
    {
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");
        _kernel.Write("/sys/bus/pci/drivers/nvme/unbind", Nvme);

        var steps = _binder.PlanRestore([new BoundFunction { PciAddress = A(Nvme), OriginalDriver = "nvme" }]);

        Assert.Equal(
        [
            (1, Nvme, "set_override", $"/sys/bus/pci/devices/{Nvme}/driver_override", "\n"),
            (2, Nvme, "probe", "/sys/bus/pci/drivers_probe", Nvme),
        ], steps.Select(Shape));
    }

    [Fact]
    public void PlanRestore_AlreadyRestored_HasNoSteps()
    {
        Assert.Empty(_binder.PlanRestore([new BoundFunction { PciAddress = A(Nvme), OriginalDriver = "nvme" }]));
    }

    // ---- BindAsync -----------------------------------------------------------------------------

    [Fact]
    public async Task BindAsync_DeviceOnHostDriver_EndsOnVfioPciWithGroupNode()
    {
        var planned = _binder.PlanBind([A(Nvme)]).Select(s => s.Description).ToList();
        var journal = new StepRecorder();

        await _binder.BindAsync([A(Nvme)], journal, CancellationToken.None);

        Assert.Equal("vfio-pci", _tree.DriverOf(Nvme));
        Assert.True(_tree.Exists($"/sys/bus/pci/drivers/vfio-pci/{Nvme}"));
        Assert.False(_tree.Exists($"/sys/bus/pci/drivers/nvme/{Nvme}"));
        Assert.True(_tree.Exists("/dev/vfio/21"));
        Assert.Equal("vfio-pci\n", _tree.OverrideOf(Nvme));
        Assert.Equal(planned, journal.Steps);
        Assert.True(_binder.IsDeviceBoundToVfio(A(Nvme)));
        Assert.Equal("/dev/vfio/21", _binder.GetVfioGroupPath(A(Nvme)));
    }

    [Fact]
    public async Task BindAsync_WholeGroup_EveryFunctionOnVfioPci()
    {
        await _binder.BindAsync([A(Gpu), A(GpuAudio)], new StepRecorder(), CancellationToken.None);

        Assert.Equal("vfio-pci", _tree.DriverOf(Gpu));
        Assert.Equal("vfio-pci", _tree.DriverOf(GpuAudio));
        Assert.True(_tree.Exists("/dev/vfio/11"));
    }

    [Fact]
    public async Task BindAsync_ProbeBindsNothing_FallsBackToAnExplicitBind()
    {
        _kernel.AddFault(A(Nvme), new SimulatedFault.ProbeBindsNothing());
        var journal = new StepRecorder();

        await _binder.BindAsync([A(Nvme)], journal, CancellationToken.None);

        Assert.Equal("vfio-pci", _tree.DriverOf(Nvme));
        Assert.Equal(4, journal.Steps.Count);
        Assert.Contains("explicitly", journal.Steps[3], StringComparison.Ordinal);
        Assert.Equal(("/sys/bus/pci/drivers/vfio-pci/bind", Nvme), (_writes.Writes[^1].Path, _writes.Writes[^1].Value));
    }

    [Fact]
    public async Task BindAsync_VfioPciRefuses_ThrowsStepExceptionWithTheErrno()
    {
        _kernel.AddFault(A(Nvme), new SimulatedFault.BindRefused("vfio-pci"));

        var e = await Assert.ThrowsAsync<VfioStepException>(() => _binder.BindAsync([A(Nvme)], new StepRecorder(), CancellationToken.None));

        Assert.Equal(A(Nvme), e.Function);
        Assert.Equal(KernelErrno.EBUSY, e.Errno);
        Assert.Null(_tree.DriverOf(Nvme));
    }

    [Fact]
    public async Task BindAsync_Bridge_ThrowsStepExceptionWithEinval()
    {
        var e = await Assert.ThrowsAsync<VfioStepException>(() => _binder.BindAsync([A(AspeedBridge)], new StepRecorder(), CancellationToken.None));

        Assert.Equal(KernelErrno.EINVAL, e.Errno);
        Assert.Null(_tree.DriverOf(AspeedBridge));
    }

    [Fact]
    public async Task BindAsync_KernelRefusesAStep_StopsThere()
    {
        _writes.FailWhen = (_, path, _) => path.EndsWith("/unbind", StringComparison.Ordinal);

        var e = await Assert.ThrowsAsync<VfioStepException>(() => _binder.BindAsync([A(Gpu), A(GpuAudio)], new StepRecorder(), CancellationToken.None));

        Assert.Equal("unbind", e.Action);
        Assert.Equal(KernelErrno.EIO, e.Errno);
        Assert.Equal(2, _writes.Writes.Count);
        Assert.Equal("nvidia", _tree.DriverOf(Gpu));
        Assert.Equal("(null)\n", _tree.OverrideOf(GpuAudio));
    }

    // ---- RestoreAsync --------------------------------------------------------------------------

    [Fact]
    public async Task RestoreAsync_BoundDevice_BackOnOriginalDriverWithOverrideCleared()
    {
        await _binder.BindAsync([A(Nvme)], new StepRecorder(), CancellationToken.None);

        var outcomes = await _binder.RestoreAsync([new BoundFunction { PciAddress = A(Nvme), OriginalDriver = "nvme" }],
            new StepRecorder(), CancellationToken.None);

        var outcome = Assert.Single(outcomes);
        Assert.True(outcome.Restored, outcome.Problem);
        Assert.Equal("nvme", outcome.Actual);
        Assert.Equal("nvme", _tree.DriverOf(Nvme));
        Assert.False(_tree.Exists($"/sys/bus/pci/drivers/vfio-pci/{Nvme}"));
        Assert.Equal("(null)\n", _tree.OverrideOf(Nvme));
        Assert.False(_tree.Exists("/dev/vfio/21"));
    }

    [Fact]
    public async Task RestoreAsync_ProbeBindsAnotherDriver_UnbindsItAndBindsTheOriginalExplicitly()
    {
        await _binder.BindAsync([A(Nvme)], new StepRecorder(), CancellationToken.None);
        // A probe that prefers another driver (as one with a matching dynamic id would): here vfio-pci.
        _writes.Replace = (path, value, kernel) =>
        {
            if (path != SysfsPaths.DriversProbe || value != Nvme)
            {
                return false;
            }

            kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");
            kernel.Write(SysfsPaths.DriversProbe, Nvme);
            kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "\n");
            return true;
        };
        var journal = new StepRecorder();

        var outcomes = await _binder.RestoreAsync([new BoundFunction { PciAddress = A(Nvme), OriginalDriver = "nvme" }],
            journal, CancellationToken.None);

        Assert.True(Assert.Single(outcomes).Restored);
        Assert.Equal("nvme", _tree.DriverOf(Nvme));
        Assert.Equal(5, journal.Steps.Count);
        Assert.Contains("vfio-pci", journal.Steps[3], StringComparison.Ordinal);
        Assert.Contains("explicitly", journal.Steps[4], StringComparison.Ordinal);
        Assert.Equal(
            [("/sys/bus/pci/drivers/vfio-pci/unbind", Nvme), ("/sys/bus/pci/drivers/nvme/bind", Nvme)],
            _writes.Writes.TakeLast(2).Select(w => (w.Path, w.Value)));
    }

    [Fact]
    public async Task RestoreAsync_ProbeBindsNothing_BindsTheOriginalExplicitly()
    {
        await _binder.BindAsync([A(Nvme)], new StepRecorder(), CancellationToken.None);
        _kernel.AddFault(A(Nvme), new SimulatedFault.ProbeBindsNothing());
        var journal = new StepRecorder();

        var outcomes = await _binder.RestoreAsync([new BoundFunction { PciAddress = A(Nvme), OriginalDriver = "nvme" }],
            journal, CancellationToken.None);

        Assert.True(Assert.Single(outcomes).Restored);
        Assert.Equal("nvme", _tree.DriverOf(Nvme));
        Assert.Equal(4, journal.Steps.Count);
        Assert.Contains("explicitly", journal.Steps[3], StringComparison.Ordinal);
    }

    [Fact]
    public async Task RestoreAsync_OriginalDriverRefuses_ReportsItAndStillRestoresTheOthers()
    {
        await _binder.BindAsync([A(Gpu), A(GpuAudio)], new StepRecorder(), CancellationToken.None);
        _kernel.AddFault(A(GpuAudio), new SimulatedFault.BindRefused("snd_hda_intel"));

        var outcomes = await _binder.RestoreAsync(
            [
                new BoundFunction { PciAddress = A(GpuAudio), OriginalDriver = "snd_hda_intel" },
                new BoundFunction { PciAddress = A(Gpu), OriginalDriver = "nvidia" },
            ],
            new StepRecorder(), CancellationToken.None);

        Assert.False(outcomes[0].Restored);
        Assert.Equal("snd_hda_intel", outcomes[0].Expected);
        Assert.False(string.IsNullOrEmpty(outcomes[0].Problem));
        Assert.True(outcomes[1].Restored);
        Assert.Equal("nvidia", _tree.DriverOf(Gpu));
    }

    [Fact]
    public async Task RestoreAsync_FunctionThatHadNoDriver_EndsDriverless()
    {
        await _binder.BindAsync([A(Nvme)], new StepRecorder(), CancellationToken.None);

        var outcomes = await _binder.RestoreAsync([new BoundFunction { PciAddress = A(Nvme), OriginalDriver = null }],
            new StepRecorder(), CancellationToken.None);

        Assert.True(Assert.Single(outcomes).Restored);
        Assert.Null(_tree.DriverOf(Nvme));
        Assert.Equal("(null)\n", _tree.OverrideOf(Nvme));
    }

    [Fact]
    public async Task RestoreAsync_OriginalUnknown_LetsTheKernelPickItsNativeDriver()
    {
        await _binder.BindAsync([A(Nvme)], new StepRecorder(), CancellationToken.None);

        var outcomes = await _binder.RestoreAsync([new BoundFunction { PciAddress = A(Nvme), OriginalUnknown = true }],
            new StepRecorder(), CancellationToken.None);

        Assert.True(Assert.Single(outcomes).Restored);
        Assert.Equal("nvme", _tree.DriverOf(Nvme));
    }

    [Fact]
    public async Task RestoreAsync_OriginalOverrideNamedAnotherDriver_RestoresBothDriverAndOverride()
    {
        // Setting driver_override does not move a bound device: it can sit on nvme with the
        // override already naming vfio-pci (a half-done manual attempt, a boot script). That is
        // the state recorded at bind, and the state unbind must give back.
        _kernel.Write($"/sys/bus/pci/devices/{Nvme}/driver_override", "vfio-pci");
        Assert.Equal("nvme", _tree.DriverOf(Nvme));
        var original = new BoundFunction { PciAddress = A(Nvme), OriginalDriver = "nvme", OriginalDriverOverride = _binder.ReadOverride(A(Nvme)) };
        await _binder.BindAsync([A(Nvme)], new StepRecorder(), CancellationToken.None);

        var outcomes = await _binder.RestoreAsync([original], new StepRecorder(), CancellationToken.None);

        Assert.Equal("nvme", _tree.DriverOf(Nvme));
        Assert.Equal("vfio-pci\n", _tree.OverrideOf(Nvme));
        Assert.True(Assert.Single(outcomes).Restored, outcomes[0].Problem);
    }

    // ---- FindHolders ---------------------------------------------------------------------------

    [Fact]
    public void FindHolders_ProcessHoldingTheDriversNode_IsFound()
    {
        _kernel.AddFault(A(Nvme), SimulatedFault.Parse("holder=4242:qemu-system"));

        var holder = Assert.Single(_binder.FindHolders([A(Nvme)]));

        Assert.Equal(new DeviceHolder(4242, "qemu-system", "/dev/nvme0"), holder);
    }

    [Fact]
    public void FindHolders_GpuHeldThroughNvidiaNode_IsFound()
    {
        _kernel.AddFault(A(Gpu), SimulatedFault.Parse("holder=4242:Xorg"));

        Assert.Equal([new DeviceHolder(4242, "Xorg", "/dev/nvidia0")], _binder.FindHolders([A(Gpu), A(GpuAudio)]));
    }

    [Fact]
    public void FindHolders_ProcessHoldingTheVfioGroup_IsFound()
    {
        SimulatedKernelTests.MoveToVfio(_kernel, Gpu, "nvidia");
        _kernel.AddFault(A(Gpu), SimulatedFault.Parse("holder=5151:qemu-system-x86_64"));

        Assert.Equal([new DeviceHolder(5151, "qemu-system-x86_64", "/dev/vfio/11")], _binder.FindHolders([A(Gpu)]));
    }

    [Fact]
    public void FindHolders_NobodyHoldsTheDevice_FindsNone()
    {
        _kernel.AddFault(A(Nvme2), SimulatedFault.Parse("holder=4242:fio"));

        Assert.Empty(_binder.FindHolders([A(Nvme)]));
    }

    [Fact]
    public void FindHolders_HolderExited_FindsNone()
    {
        _kernel.AddFault(A(Nvme), SimulatedFault.Parse("holder=4242:fio"));
        _kernel.KillHolder(4242);

        Assert.Empty(_binder.FindHolders([A(Nvme)]));
    }

    private static (int, string, string, string, string) Shape(KernelStep s) => (s.Order, s.PciAddress, s.Action, s.Path, s.Value);
}
