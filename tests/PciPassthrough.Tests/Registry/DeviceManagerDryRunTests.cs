using PciPassthrough.Errors;
using PciPassthrough.Journal.Tests;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Tests.TestDoubles;
using PciPassthrough.Vfio;
using static PciPassthrough.Registry.Tests.VfioHosts;

namespace PciPassthrough.Registry.Tests;

/// <summary>A dry run returns the plan the real operation would run, and writes nothing at all.</summary>
public sealed class DeviceManagerDryRunTests : IDisposable
{
    private readonly TempDirectory _dir = new("pcipt-dryrun");
    private readonly RecordingCrashPoint _recorder = new();
    private readonly SimulatedHost _host;
    private readonly HostTree _tree;
    private readonly HostTree _state;

    public DeviceManagerDryRunTests()
    {
        _host = Create(_dir, TimeSpan.FromSeconds(5), _recorder);
        _recorder.Journal = _host.Journal;
        _tree = new HostTree(_host.HostRoot);
        _state = new HostTree(_host.StateRoot);
    }

    public void Dispose()
    {
        _host.Dispose();
        _dir.Dispose();
    }

    private async Task<OperationPlan> WritesNothingAsync(Func<Task<VfioResult>> dryRun)
    {
        var tree = _tree.Snapshot();
        var state = _state.Snapshot();

        var result = await dryRun();

        Assert.Null(result.Device);
        var treeAfter = _tree.Snapshot();
        var stateAfter = _state.Snapshot();
        Assert.True(tree.SequenceEqual(treeAfter), HostTree.Diff(tree, treeAfter));
        Assert.True(state.SequenceEqual(stateAfter), HostTree.Diff(state, stateAfter));
        return result.Plan!;
    }

    [Fact]
    public async Task BindDryRun_GpuWithGroup_ListsStepsAndMembersAndWritesNothing()
    {
        var device = await _host.RegisterAsync(Gpu);

        var plan = await WritesNothingAsync(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true, DryRun: true)));

        Assert.Equal("bind", plan.Operation);
        Assert.Equal(device.Id, plan.DeviceId);
        Assert.Equal(Gpu, plan.PciAddress);
        Assert.Equal(11, plan.IommuGroup);
        Assert.True(plan.Group);
        Assert.Null(plan.WouldFailWith);
        Assert.True(plan.WouldSucceed);
        Assert.Empty(plan.Blockers);
        Assert.Equal(
            [(Gpu, "set_override"), (Gpu, "unbind"), (Gpu, "probe"), (GpuAudio, "set_override"), (GpuAudio, "unbind"), (GpuAudio, "probe")],
            plan.Steps.Select(s => (s.PciAddress, s.Action)));
        Assert.Equal([1, 2, 3, 4, 5, 6], plan.Steps.Select(s => s.Order));
        Assert.Equal(
            [(Gpu, "nvidia", "030000", "bind to vfio-pci"), (GpuAudio, "snd_hda_intel", "040300", "bind to vfio-pci")],
            plan.Members.Select(m => (m.PciAddress, m.CurrentDriver, m.ClassCode, m.Action)));
        Assert.Empty(_recorder.StartedOperations);
    }

    [Fact]
    public async Task BindDryRun_GpuAlone_WouldFailWithConflictAndNamesTheBlocker()
    {
        var device = await _host.RegisterAsync(Gpu);

        var plan = await WritesNothingAsync(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(DryRun: true)));

        Assert.Equal(ErrorCodes.IommuGroupConflict, plan.WouldFailWith);
        Assert.False(plan.WouldSucceed);
        Assert.Empty(plan.Steps);
        Assert.Equal(GpuAudio, Assert.Single(plan.Blockers).PciAddress);
        var audio = plan.Members.Single(m => m.PciAddress == GpuAudio);
        Assert.StartsWith("blocks", audio.Action, StringComparison.Ordinal);
        Assert.Equal("bind to vfio-pci", plan.Members.Single(m => m.PciAddress == Gpu).Action);
    }

    [Fact]
    public async Task BindDryRun_OnboardNic_MembersShowBridgesIgnoredAndTheVgaBlocking()
    {
        var device = await _host.RegisterAsync(I210);

        var plan = await WritesNothingAsync(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(DryRun: true)));

        Assert.Equal(ErrorCodes.IommuGroupConflict, plan.WouldFailWith);
        Assert.Equal([RootPort, AspeedBridge, Vga, I210], plan.Members.Select(m => m.PciAddress));
        Assert.Equal("ignored (bridge)", plan.Members.Single(m => m.PciAddress == RootPort).Action);
        Assert.Equal("ignored (bridge)", plan.Members.Single(m => m.PciAddress == AspeedBridge).Action);
        Assert.StartsWith("blocks", plan.Members.Single(m => m.PciAddress == Vga).Action, StringComparison.Ordinal);
        Assert.Equal([Vga], plan.Blockers.Select(b => b.PciAddress));
    }

    [Fact]
    public async Task BindDryRun_DeviceHeld_WouldFailInUseWithHolders()
    {
        var device = await _host.RegisterAsync(Nvme);
        _host.Kernel.AddFault(A(Nvme), SimulatedFault.Parse("holder=4242:qemu-system"));

        var plan = await WritesNothingAsync(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(DryRun: true)));
        var forced = await WritesNothingAsync(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Force: true, DryRun: true)));

        Assert.Equal(ErrorCodes.InUse, plan.WouldFailWith);
        Assert.Equal([new DeviceHolder(4242, "qemu-system", "/dev/nvme0")], plan.Holders);
        Assert.Null(forced.WouldFailWith);
        Assert.Equal(3, forced.Steps.Count);
    }

    [Fact]
    public async Task BindDryRun_HostWithoutVfio_WouldFailVfioNotAvailable()
    {
        var device = await _host.RegisterAsync(Nvme);
        File.Delete(_tree.Path("/dev/vfio/vfio"));

        var plan = await WritesNothingAsync(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(DryRun: true)));

        Assert.Equal(ErrorCodes.VfioNotAvailable, plan.WouldFailWith);
        Assert.Empty(plan.Steps);
    }

    [Fact]
    public async Task BindDryRun_DeviceChanged_WouldFailDeviceChanged()
    {
        var device = await _host.RegisterAsync(Nvme);
        File.WriteAllText(_tree.Path($"/sys/bus/pci/devices/{Nvme}/device"), "0x1234\n");

        var plan = await WritesNothingAsync(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(DryRun: true)));

        Assert.Equal(ErrorCodes.DeviceChanged, plan.WouldFailWith);
    }

    [Fact]
    public async Task BindDryRun_AlreadyBound_NoStepsAndMemberAlreadyOnVfio()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());

        var plan = await WritesNothingAsync(() => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(DryRun: true)));

        Assert.Null(plan.WouldFailWith);
        Assert.Empty(plan.Steps);
        Assert.Equal("already on vfio-pci", Assert.Single(plan.Members).Action);
    }

    [Fact]
    public async Task UnbindDryRun_GroupBoundGpu_PlansTheRestoreOfEachFunction()
    {
        var device = await _host.RegisterAsync(Gpu);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true));

        var plan = await WritesNothingAsync(() => _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest(DryRun: true)));

        Assert.Equal("unbind", plan.Operation);
        Assert.True(plan.Group);
        Assert.Null(plan.WouldFailWith);
        Assert.Equal(6, plan.Steps.Count);
        Assert.Equal(
            [(Gpu, "vfio-pci", "restore to nvidia"), (GpuAudio, "vfio-pci", "restore to snd_hda_intel")],
            plan.Members.Select(m => (m.PciAddress, m.CurrentDriver, m.Action)));
    }

    [Fact]
    public async Task UnbindDryRun_Attached_WouldFailInUse()
    {
        var device = await _host.RegisterAsync(Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        var record = _host.Record(device.Id);
        _host.Registry.Update(record with { Attachment = new AttachmentRecord { InstanceId = "inst-1", AttachedAt = DateTime.UtcNow } });

        var plan = await WritesNothingAsync(() => _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest(DryRun: true)));

        Assert.Equal(ErrorCodes.InUse, plan.WouldFailWith);
        Assert.Empty(plan.Steps);
    }

    [Theory]
    [InlineData(Nvme, false)]
    [InlineData(Gpu, true)]
    public async Task BindDryRun_Steps_AreTheStepsTheRealBindJournals(string address, bool group)
    {
        var device = await _host.RegisterAsync(address);

        var plan = (await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: group, DryRun: true))).Plan!;
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: group));

        var journaled = _recorder.ReachedSteps.Where(s => s.Operation == "bind").ToList();
        Assert.Equal(plan.Steps.Select(s => s.Order), journaled.Select(s => s.Step));
        Assert.Equal(plan.Steps.Select(s => s.Description), journaled.Select(s => s.Description));
    }

    [Theory]
    [InlineData(Nvme, false)]
    [InlineData(Gpu, true)]
    public async Task UnbindDryRun_Steps_AreTheStepsTheRealUnbindJournals(string address, bool group)
    {
        var device = await _host.RegisterAsync(address);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: group));

        var plan = (await _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest(DryRun: true))).Plan!;
        await _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest());

        var journaled = _recorder.ReachedSteps.Where(s => s.Operation == "unbind").ToList();
        Assert.Equal(plan.Steps.Select(s => s.Description), journaled.Select(s => s.Description));
    }
}
