using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Tests.TestDoubles;
using PciPassthrough.Vfio;
using static PciPassthrough.Registry.Tests.VfioHosts;

namespace PciPassthrough.Registry.Tests;

/// <summary>
/// A kernel write that does not return (a stuck unbind) with a short Vfio:OperationTimeout: the
/// operation gives up, the device is quarantined, and the rest of the host stays usable.
/// </summary>
public sealed class DeviceManagerTimeoutTests : IDisposable
{
    private readonly TempDirectory _dir = new("pcipt-timeout");
    private readonly SimulatedHost _host;
    private readonly HostTree _tree;

    public DeviceManagerTimeoutTests()
    {
        _host = Create(_dir, timeout: TimeSpan.FromSeconds(2));
        _tree = new HostTree(_host.HostRoot);
    }

    public void Dispose()
    {
        _host.Kernel.ReleaseHangs();
        _host.Dispose();
        _dir.Dispose();
    }

    [Fact]
    public async Task BindToVfio_ForcedWhileTheHolderNeverExits_UnbindTimeoutListingTheHolder()
    {
        // nvidia's unbind waits for /dev/nvidia* to be closed (nvme's would not wait).
        var device = await _host.RegisterAsync("0000:17:00.0");
        _host.Kernel.AddFault(A("0000:17:00.0"), SimulatedFault.Parse("holder=4242:nvidia-persistenced"));

        var e = await Assert.ThrowsAsync<PassthroughException>(() =>
            _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true, Force: true)));

        Assert.Equal(ErrorCodes.UnbindTimeout, e.Code);
        var holders = Assert.IsAssignableFrom<IReadOnlyList<DeviceHolder>>(e.Details["holders"]);
        Assert.Equal(4242, Assert.Single(holders).Pid);
        Assert.Equal(DeviceState.Quarantined, _host.Manager.GetDevice(device.Id).State);
    }

    private async Task<Device> BoundNvmeWhoseUnbindHangsAsync()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        _host.Kernel.AddFault(A(Nvme), new SimulatedFault.UnbindHangs());
        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest()));
        Assert.Equal(ErrorCodes.UnbindTimeout, e.Code);
        return device;
    }

    [Fact]
    public async Task UnbindFromVfio_KernelNeverFinishes_UnbindTimeoutQuarantineAndPendingJournal()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        _host.Kernel.AddFault(A(Nvme), new SimulatedFault.UnbindHangs());

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest()));

        Assert.Equal(ErrorCodes.UnbindTimeout, e.Code);
        Assert.IsAssignableFrom<IReadOnlyList<DeviceHolder>>(e.Details["holders"]);
        var state = _host.Manager.GetDevice(device.Id);
        Assert.Equal(DeviceState.Quarantined, state.State);
        Assert.False(string.IsNullOrEmpty(state.QuarantineReason));
        Assert.Equal(ErrorCodes.UnbindTimeout, _host.Record(device.Id).Quarantine!.Code);
        var pending = Assert.Single(_host.Journal.Pending());
        Assert.Equal("unbind", pending.Operation);
        Assert.Equal(device.Id, pending.DeviceId);
        Assert.Equal(1, _host.Writer.StuckWrites);
        Assert.NotNull(_host.Record(device.Id).Binding);
    }

    [Fact]
    public async Task UnbindFromVfio_KernelNeverFinishesWhileHeld_UnbindTimeoutListsTheHolders()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        _host.Kernel.AddFault(A(Nvme), SimulatedFault.Parse("holder=4242:qemu-system"));

        var refused = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest()));
        var timedOut = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest(Force: true)));

        Assert.Equal(ErrorCodes.InUse, refused.Code);
        Assert.Equal(ErrorCodes.UnbindTimeout, timedOut.Code);
        var holders = Assert.IsAssignableFrom<IReadOnlyList<DeviceHolder>>(timedOut.Details["holders"]);
        Assert.Equal([new DeviceHolder(4242, "qemu-system", "/dev/vfio/21")], holders);
        Assert.Equal(DeviceState.Quarantined, _host.Manager.GetDevice(device.Id).State);
    }

    [Fact]
    public async Task UnbindFromVfio_WhileAnotherDeviceIsStuck_OtherDevicesStillBindAndUnbind()
    {
        await BoundNvmeWhoseUnbindHangsAsync();
        var other = await _host.RegisterAsync(Nvme2);

        var bound = (await _host.Manager.BindToVfioAsync(other.Id, new VfioRequest())).Device!;
        var unbound = (await _host.Manager.UnbindFromVfioAsync(other.Id, new VfioRequest())).Device!;

        Assert.True(bound.BoundToVfio);
        Assert.False(unbound.BoundToVfio);
        Assert.Equal("nvme", _tree.DriverOf(Nvme2));
        Assert.Equal(1, _host.Writer.StuckWrites);
    }

    [Fact]
    public async Task BindAndUnbind_QuarantinedDevice_RefusedAsQuarantined()
    {
        var device = await BoundNvmeWhoseUnbindHangsAsync();
        var before = _tree.Snapshot();

        var bind = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest()));
        var unbind = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest()));
        var delete = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.DeleteDeviceAsync(device.Id));

        Assert.Equal(ErrorCodes.Quarantined, bind.Code);
        Assert.Equal(ErrorCodes.Quarantined, unbind.Code);
        Assert.Equal(ErrorCodes.Quarantined, delete.Code);
        var after = _tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    [Fact]
    public async Task Reset_AfterTheStuckUnbindReturns_RecoversTheJournalAndLiftsTheQuarantine()
    {
        var device = await BoundNvmeWhoseUnbindHangsAsync();
        _host.Kernel.ReleaseHangs();
        await Wait.UntilAsync(() => _host.Writer.StuckWrites == 0, "the stuck unbind to return");

        var reset = await _host.Manager.ResetAsync(device.Id, method: null, force: false);

        Assert.Equal(DeviceState.Ready, reset.State);
        Assert.Null(reset.QuarantineReason);
        Assert.Equal("nvme", reset.CurrentDriver);
        Assert.Equal("nvme", _tree.DriverOf(Nvme));
        Assert.Null(_host.Record(device.Id).Quarantine);
        Assert.Null(_host.Record(device.Id).Binding);
        Assert.Equal(1, _host.Kernel.ResetCount(A(Nvme)));
        Assert.Empty(_host.Journal.Pending());
        Consistency.AssertSettled(_host);
    }

    [Fact]
    public async Task Reset_WhileTheUnbindIsStillStuck_DoesNotLiftTheQuarantine()
    {
        var device = await BoundNvmeWhoseUnbindHangsAsync();

        try
        {
            await _host.Manager.ResetAsync(device.Id, method: null, force: false);
        }
        catch (PassthroughException)
        {
            // Refusing is fine; pretending all is well is not.
        }

        // The unbind has still not returned: record and kernel cannot agree yet, so the device
        // must stay quarantined and the journal must keep the unfinished operation.
        Assert.Equal("vfio-pci", _tree.DriverOf(Nvme));
        Assert.NotEmpty(_host.Journal.Pending());
        Assert.True(_host.Record(device.Id).Quarantine is not null,
            $"quarantine lifted; the device shows as {_host.Manager.GetDevice(device.Id).State} while its unbind is still stuck");
    }

    [Fact]
    public async Task Reset_WhileTheTimedOutWriteIsStillInTheKernel_RefusedWithoutTouchingTheDevice()
    {
        var device = await BoundNvmeWhoseUnbindHangsAsync();
        var writesBefore = _host.Kernel.ResetCount(A(Nvme));

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.ResetAsync(device.Id, method: null, force: true));

        Assert.Equal(ErrorCodes.Quarantined, e.Code);
        Assert.Contains("has not returned", e.Message, StringComparison.Ordinal);
        Assert.Equal(writesBefore, _host.Kernel.ResetCount(A(Nvme)));
        _host.Kernel.ReleaseHangs();
    }
}
