using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Journal.Tests;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Tests.TestDoubles;
using PciPassthrough.Vfio;
using static PciPassthrough.Registry.Tests.VfioHosts;

namespace PciPassthrough.Registry.Tests;

/// <summary>Bind, unbind, delete and reset through the device manager over the simulated GPU server.</summary>
public sealed class DeviceManagerVfioTests : IDisposable
{
    private readonly TempDirectory _dir = new("pcipt-manager");
    private readonly RecordingCrashPoint _recorder = new();
    private readonly SimulatedHost _host;
    private readonly HostTree _tree;

    public DeviceManagerVfioTests()
    {
        _host = Create(_dir, timeout: TimeSpan.FromSeconds(5), crashPoint: _recorder);
        _recorder.Journal = _host.Journal;
        _tree = new HostTree(_host.HostRoot);
    }

    public void Dispose()
    {
        _host.Kernel.ReleaseHangs();
        _host.Dispose();
        _dir.Dispose();
    }

    // ---- bind / unbind of a device alone in its group ------------------------------------------

    [Fact]
    public async Task BindToVfio_Nvme_BindsItAndRecordsWhatToRestore()
    {
        var device = await _host.RegisterAsync(Nvme);

        var result = await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());

        Assert.Null(result.Plan);
        var bound = result.Device!;
        Assert.True(bound.BoundToVfio);
        Assert.Equal("vfio-pci", bound.CurrentDriver);
        Assert.Equal("nvme", bound.OriginalDriver);
        Assert.Equal("/dev/vfio/21", bound.VfioGroupPath);
        Assert.Equal(DeviceState.Bound, bound.State);
        Assert.Equal("vfio-pci", _tree.DriverOf(Nvme));
        Assert.True(_tree.Exists("/dev/vfio/21"));
        var binding = _host.Record(device.Id).Binding!;
        Assert.False(binding.Group);
        var function = Assert.Single(binding.Functions);
        Assert.Equal(A(Nvme), function.PciAddress);
        Assert.Equal("nvme", function.OriginalDriver);
        Assert.Null(function.OriginalDriverOverride);
        Assert.False(function.OriginalUnknown);
        Assert.Empty(_host.Journal.Pending());
    }

    [Fact]
    public async Task BindToVfio_AlreadyBound_IsANoOp()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        var revision = _host.Record(device.Id).Revision;
        var before = _tree.Snapshot();
        var operations = _recorder.StartedOperations.Count;

        var again = await _host.Manager.BindToVfioAsync(device.Name, new VfioRequest());

        Assert.True(again.Device!.BoundToVfio);
        Assert.Equal(operations, _recorder.StartedOperations.Count);
        Assert.Equal(revision, _host.Record(device.Id).Revision);
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    [Fact]
    public async Task UnbindFromVfio_BoundNvme_RestoresNvmeAndForgetsTheBinding()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());

        var result = await _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest());

        var unbound = result.Device!;
        Assert.False(unbound.BoundToVfio);
        Assert.Equal("nvme", unbound.CurrentDriver);
        Assert.Equal("nvme", unbound.OriginalDriver);
        Assert.Null(unbound.VfioGroupPath);
        Assert.Equal(DeviceState.Ready, unbound.State);
        Assert.Equal("nvme", _tree.DriverOf(Nvme));
        Assert.Equal("(null)\n", _tree.OverrideOf(Nvme));
        Assert.False(_tree.Exists("/dev/vfio/21"));
        Assert.True(_tree.Exists("/dev/vfio/vfio"));
        Assert.Null(_host.Record(device.Id).Binding);
        Consistency.AssertSettled(_host);
    }

    [Fact]
    public async Task UnbindFromVfio_NotBound_IsANoOp()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        await _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest());
        var revision = _host.Record(device.Id).Revision;
        var operations = _recorder.StartedOperations.Count;
        var before = _tree.Snapshot();

        var again = await _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest());

        Assert.Equal("nvme", again.Device!.CurrentDriver);
        Assert.Equal(operations, _recorder.StartedOperations.Count);
        Assert.Equal(revision, _host.Record(device.Id).Revision);
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    // ---- IOMMU groups --------------------------------------------------------------------------

    [Fact]
    public async Task BindToVfio_GpuAloneWhileItsAudioIsInUse_ConflictNamingTheAudioAndNothingWritten()
    {
        var device = await _host.RegisterAsync(Gpu);
        var before = _tree.Snapshot();

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest()));

        Assert.Equal(ErrorCodes.IommuGroupConflict, e.Code);
        var blocker = Assert.Single(Assert.IsAssignableFrom<IReadOnlyList<BlockingDevice>>(e.Details["blocking_devices"]));
        Assert.Equal(new BlockingDevice(GpuAudio, "snd_hda_intel", "040300", blocker.Reason), blocker);
        Assert.Equal("(null)\n", _tree.OverrideOf(Gpu));
        Assert.Equal("nvidia", _tree.DriverOf(Gpu));
        Assert.Equal("snd_hda_intel", _tree.DriverOf(GpuAudio));
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
        Assert.Empty(_recorder.StartedOperations);
        Assert.Null(_host.Record(device.Id).Binding);
    }

    [Fact]
    public async Task BindToVfio_GpuWithGroup_BindsBothFunctionsAndRecordsBoth()
    {
        var device = await _host.RegisterAsync(Gpu);

        var bound = (await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true))).Device!;

        Assert.True(bound.BoundToVfio);
        Assert.Equal("nvidia", bound.OriginalDriver);
        Assert.Equal("/dev/vfio/11", bound.VfioGroupPath);
        Assert.Equal("vfio-pci", _tree.DriverOf(Gpu));
        Assert.Equal("vfio-pci", _tree.DriverOf(GpuAudio));
        var binding = _host.Record(device.Id).Binding!;
        Assert.True(binding.Group);
        Assert.Equal([(A(Gpu), "nvidia"), (A(GpuAudio), "snd_hda_intel")],
            binding.Functions.Select(f => (f.PciAddress, f.OriginalDriver)));
        Assert.All(binding.Functions, f => Assert.Null(f.OriginalDriverOverride));
        Consistency.AssertSettled(_host);
    }

    [Fact]
    public async Task UnbindFromVfio_GroupBoundGpu_ReturnsEachFunctionToItsOwnDriver()
    {
        var device = await _host.RegisterAsync(Gpu);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true));

        var unbound = (await _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest())).Device!;

        Assert.False(unbound.BoundToVfio);
        Assert.Equal("nvidia", _tree.DriverOf(Gpu));
        Assert.Equal("snd_hda_intel", _tree.DriverOf(GpuAudio));
        Assert.False(_tree.Exists("/dev/vfio/11"));
        Assert.Null(_host.Record(device.Id).Binding);
        Consistency.AssertSettled(_host);
    }

    [Fact]
    public async Task BindToVfio_OnboardNicSharingAGroupWithTheConsole_ConflictNamingTheVgaOnly()
    {
        var device = await _host.RegisterAsync(I210);
        var before = _tree.Snapshot();

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest()));

        Assert.Equal(ErrorCodes.IommuGroupConflict, e.Code);
        var blockers = Assert.IsAssignableFrom<IReadOnlyList<BlockingDevice>>(e.Details["blocking_devices"]);
        var blocker = Assert.Single(blockers);
        Assert.Equal((Vga, "ast", "030000"), (blocker.PciAddress, blocker.Driver, blocker.ClassCode));
        Assert.DoesNotContain(blockers, b => b.PciAddress is RootPort or AspeedBridge);
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    // ---- refusals before any write -------------------------------------------------------------

    [Fact]
    public async Task BindToVfio_VendorChangedAfterRegistration_DeviceChangedAndNothingWritten()
    {
        var device = await _host.RegisterAsync(Nvme);
        File.WriteAllText(_tree.Path($"/sys/bus/pci/devices/{Nvme}/vendor"), "0x8086\n");
        var before = _tree.Snapshot();

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest()));

        Assert.Equal(ErrorCodes.DeviceChanged, e.Code);
        Assert.Equal("144d:a80a", e.Details["registered"]);
        Assert.Equal("8086:a80a", e.Details["found"]);
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
        Assert.Empty(_recorder.StartedOperations);
        Assert.Equal(DeviceState.Changed, _host.Manager.GetDevice(device.Id).State);
    }

    [Fact]
    public async Task BindToVfio_DeviceGoneFromTheHost_DeviceNotFound()
    {
        var device = await _host.RegisterAsync(Nvme);
        var real = _tree.RealDeviceDirectory(Nvme);
        File.Delete(_tree.Path($"/sys/bus/pci/devices/{Nvme}"));
        Directory.Delete(real, recursive: true);

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest()));

        Assert.Equal(ErrorCodes.DeviceNotFound, e.Code);
        Assert.Empty(_recorder.StartedOperations);
        Assert.Equal(DeviceState.Missing, _host.Manager.GetDevice(device.Id).State);
    }

    [Fact]
    public async Task BindToVfio_HostWithoutVfioPci_VfioNotAvailableListingWhatIsMissing()
    {
        using var dir = new TempDirectory("pcipt-novfio");
        var root = dir.Combine("host");
        GpuServerFixture.WriteTo(root);
        Directory.Delete(Path.Combine(root, "sys/bus/pci/drivers/vfio-pci"), recursive: true);
        using var host = new SimulatedHost(root, dir.Combine("state"), TimeSpan.FromSeconds(5));
        var device = await host.RegisterAsync(Nvme);
        var tree = new HostTree(root);
        var before = tree.Snapshot();

        var e = await Assert.ThrowsAsync<PassthroughException>(() => host.Manager.BindToVfioAsync(device.Id, new VfioRequest()));

        Assert.Equal(ErrorCodes.VfioNotAvailable, e.Code);
        var missing = Assert.IsAssignableFrom<IReadOnlyList<string>>(e.Details["missing"]);
        Assert.Contains("vfio-pci", Assert.Single(missing), StringComparison.Ordinal);
        Assert.Contains("vfio-pci", e.Message, StringComparison.Ordinal);
        var after = tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    [Fact]
    public async Task BindToVfio_ProcessHoldsTheDevice_InUseWithHoldersAndNothingWritten()
    {
        var device = await _host.RegisterAsync(Nvme);
        _host.Kernel.AddFault(A(Nvme), SimulatedFault.Parse("holder=4242:qemu-system"));
        var before = _tree.Snapshot();

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest()));

        Assert.Equal(ErrorCodes.InUse, e.Code);
        var holders = Assert.IsAssignableFrom<IReadOnlyList<DeviceHolder>>(e.Details["holders"]);
        Assert.Equal([new DeviceHolder(4242, "qemu-system", "/dev/nvme0")], holders);
        Assert.Empty(_recorder.StartedOperations);
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    [Fact]
    public async Task BindToVfio_ProcessHoldsTheDeviceWithForce_GoesAheadAndFinishesOnceItExits()
    {
        using var dir = new TempDirectory("pcipt-force");
        using var host = Create(dir, timeout: TimeSpan.FromSeconds(20));
        var tree = new HostTree(host.HostRoot);
        // nvidia's unbind waits for /dev/nvidia* to be closed (nvme's would not wait).
        const string gpu = "0000:17:00.0";
        var device = await host.RegisterAsync(gpu);
        host.Kernel.AddFault(A(gpu), SimulatedFault.Parse("holder=4242:nvidia-persistenced"));

        var bind = host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true, Force: true));
        await Wait.UntilAsync(() => tree.OverrideOf(gpu) == "vfio-pci\n", "the forced bind to start writing");
        Assert.False(bind.IsCompleted);
        host.Kernel.KillHolder(4242);
        var bound = (await bind).Device!;

        Assert.True(bound.BoundToVfio);
        Assert.Equal("vfio-pci", tree.DriverOf(gpu));
    }

    [Fact]
    public async Task UnbindFromVfio_OriginalDriverRefuses_OperationFailedQuarantinedAndBindingKept()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        _host.Kernel.AddFault(A(Nvme), SimulatedFault.Parse("bind_refused=nvme"));

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest()));

        Assert.Equal(ErrorCodes.OperationFailed, e.Code);
        Assert.Equal(false, e.Details["rolled_back"]);
        var notUndone = Assert.Single(Assert.IsAssignableFrom<System.Collections.IEnumerable>(e.Details["not_undone"]).Cast<object>());
        Assert.Contains(Nvme, notUndone.ToString(), StringComparison.Ordinal);
        Assert.Contains("nvme", notUndone.ToString(), StringComparison.Ordinal);
        Assert.Equal(DeviceState.Quarantined, _host.Manager.GetDevice(device.Id).State);
        var binding = _host.Record(device.Id).Binding!;
        Assert.Equal("nvme", Assert.Single(binding.Functions).OriginalDriver);
        Assert.Empty(_host.Journal.Pending());
    }

    // ---- delete --------------------------------------------------------------------------------

    [Fact]
    public async Task DeleteDevice_BoundByTheDaemon_ReturnsItToItsOriginalDriverFirst()
    {
        var device = await _host.RegisterAsync(Gpu);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true));

        await _host.Manager.DeleteDeviceAsync(device.Id);

        Assert.Null(_host.Registry.Find(device.Id));
        Assert.Equal("nvidia", _tree.DriverOf(Gpu));
        Assert.Equal("snd_hda_intel", _tree.DriverOf(GpuAudio));
        Assert.Equal("delete", _recorder.StartedOperations[^1]);
        Consistency.AssertSettled(_host);
    }

    [Fact]
    public async Task DeleteDevice_NotBound_RemovesTheRecordWithoutTouchingTheKernel()
    {
        var device = await _host.RegisterAsync(Nvme);
        var before = _tree.Snapshot();

        await _host.Manager.DeleteDeviceAsync(device.Id);

        Assert.Null(_host.Registry.Find(device.Id));
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    [Fact]
    public async Task DeleteDevice_Attached_InUseAndKept()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        Attach(device.Id, "inst-1");

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.DeleteDeviceAsync(device.Id));

        Assert.Equal(ErrorCodes.InUse, e.Code);
        Assert.Equal("inst-1", e.Details["attached_to"]);
        Assert.NotNull(_host.Registry.Find(device.Id));
        Assert.Equal("vfio-pci", _tree.DriverOf(Nvme));
    }

    [Fact]
    public async Task UnbindFromVfio_Attached_InUseAndStillBound()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        Attach(device.Id, "inst-1");

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest()));

        Assert.Equal(ErrorCodes.InUse, e.Code);
        Assert.Equal("inst-1", e.Details["attached_to"]);
        Assert.Equal("vfio-pci", _tree.DriverOf(Nvme));
    }

    // ---- reset ---------------------------------------------------------------------------------

    [Fact]
    public async Task Reset_Device_CountsAResetInTheKernel()
    {
        var device = await _host.RegisterAsync(Nvme);

        var reset = await _host.Manager.ResetAsync(device.Id, method: null, force: false);

        Assert.Equal(1, _host.Kernel.ResetCount(A(Nvme)));
        Assert.Equal("nvme", reset.CurrentDriver);
        Assert.Equal("flr bus\n", _tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
        Assert.Empty(_host.Journal.Pending());
    }

    [Fact]
    public async Task Reset_BoundDevice_ResetsOnVfioPci()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());

        var reset = await _host.Manager.ResetAsync(device.Id, method: null, force: false);

        Assert.Equal(1, _host.Kernel.ResetCount(A(Nvme)));
        Assert.True(reset.BoundToVfio);
    }

    [Fact]
    public async Task Reset_WithMethod_SelectsItForThisResetAndRestoresTheMethodsAfter()
    {
        using var dir = new TempDirectory("pcipt-reset");
        using var host = new InterceptedHost(HostRoot(dir), dir.Combine("state"), TimeSpan.FromSeconds(5));
        var device = await host.RegisterAsync(Nvme);

        await host.Manager.ResetAsync(device.Id, method: "flr", force: false);

        var resetWrite = Assert.Single(host.Sysfs.Writes, w => w.Path.EndsWith("/reset", StringComparison.Ordinal));
        Assert.Equal("flr", resetWrite.ResetMethodAtWrite);
        Assert.Equal(
        [
            ($"/sys/bus/pci/devices/{Nvme}/reset_method", "flr"),
            ($"/sys/bus/pci/devices/{Nvme}/reset", "1"),
            ($"/sys/bus/pci/devices/{Nvme}/reset_method", "flr bus"),
        ], host.Sysfs.Writes.Select(w => (w.Path, w.Value)));
        Assert.Equal("flr bus\n", new HostTree(host.HostRoot).Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
        Assert.Equal(1, host.Kernel.ResetCount(A(Nvme)));
    }

    [Fact]
    public async Task Reset_MethodTheDeviceDoesNotSupport_ValidationFailedAndNothingLeftBehind()
    {
        var device = await _host.RegisterAsync(Nvme);

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.ResetAsync(device.Id, method: "pm", force: false));

        Assert.Equal(ErrorCodes.ValidationFailed, e.Code);
        Assert.Equal(0, _host.Kernel.ResetCount(A(Nvme)));
        Assert.Equal("flr bus\n", _tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
        Assert.Empty(_host.Journal.Pending());
    }

    [Fact]
    public async Task Reset_KernelResetFails_OperationFailed()
    {
        var device = await _host.RegisterAsync(Nvme);
        _host.Kernel.AddFault(A(Nvme), new SimulatedFault.ResetFails());

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.ResetAsync(device.Id, method: null, force: false));

        Assert.Equal(ErrorCodes.OperationFailed, e.Code);
        Assert.Contains("EIO", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, _host.Kernel.ResetCount(A(Nvme)));
        Assert.Empty(_host.Journal.Pending());
    }

    [Fact]
    public async Task Reset_KernelResetFailsWithMethod_StillRestoresTheMethods()
    {
        var device = await _host.RegisterAsync(Nvme);
        _host.Kernel.AddFault(A(Nvme), new SimulatedFault.ResetFails());

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.ResetAsync(device.Id, method: "bus", force: false));

        Assert.Equal(ErrorCodes.OperationFailed, e.Code);
        Assert.Equal("flr bus\n", _tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
    }

    [Fact]
    public async Task Reset_Attached_InUse()
    {
        var device = await _host.RegisterAsync(Nvme);
        Attach(device.Id, "inst-9");

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.ResetAsync(device.Id, method: null, force: false));

        Assert.Equal(ErrorCodes.InUse, e.Code);
        Assert.Equal(0, _host.Kernel.ResetCount(A(Nvme)));
    }

    [Fact]
    public async Task Reset_HeldByAProcess_InUseUnlessForced()
    {
        var device = await _host.RegisterAsync(Nvme);
        _host.Kernel.AddFault(A(Nvme), SimulatedFault.Parse("holder=4242:fio"));

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.ResetAsync(device.Id, method: null, force: false));
        await _host.Manager.ResetAsync(device.Id, method: null, force: true);

        Assert.Equal(ErrorCodes.InUse, e.Code);
        Assert.Equal(1, _host.Kernel.ResetCount(A(Nvme)));
    }

    private void Attach(string id, string instance)
    {
        var record = _host.Record(id);
        _host.Registry.Update(record with { Attachment = new AttachmentRecord { InstanceId = instance, AttachedAt = DateTime.UtcNow } });
    }
}
