using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Tests.TestDoubles;
using static PciPassthrough.Registry.Tests.VfioHosts;

namespace PciPassthrough.Registry.Tests;

/// <summary>A bind that fails part-way is undone: every function back where it was, nothing left behind.</summary>
public sealed class DeviceManagerRollbackTests : IDisposable
{
    // A refused probe is only noticed once the verify poll gives up, after this long.
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(1);

    private readonly TempDirectory _dir = new("pcipt-rollback");

    public void Dispose() => _dir.Dispose();

    public static TheoryData<string, string[]> GroupBindFaults => new()
    {
        // vfio-pci refuses the second function: its probe binds nothing, the explicit bind fails.
        { GpuAudio, ["bind_refused"] },
        // The probe binds nothing at all, and the explicit bind is refused.
        { GpuAudio, ["probe_binds_nothing", "bind_refused"] },
        // vfio-pci refuses the first function, before the second is touched.
        { Gpu, ["bind_refused=vfio-pci"] },
        // The first function refuses after a probe that binds nothing.
        { Gpu, ["probe_binds_nothing", "bind_refused=vfio-pci"] },
    };

    [Theory]
    [MemberData(nameof(GroupBindFaults))]
    public async Task BindToVfio_GroupBindRefusedPartWay_RolledBackToTheOriginalDrivers(string faulty, string[] faults)
    {
        using var host = Create(_dir, Timeout, faults: new Dictionary<PciAddress, IReadOnlyList<SimulatedFault>>
        {
            [A(faulty)] = faults.Select(SimulatedFault.Parse).ToList(),
        });
        var device = await host.RegisterAsync(Gpu);
        var revisionBefore = host.Record(device.Id).Revision;

        var e = await Assert.ThrowsAsync<PassthroughException>(() => host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true)));

        Assert.Equal(ErrorCodes.OperationFailed, e.Code);
        Assert.Equal(true, e.Details["rolled_back"]);
        Assert.Empty(Assert.IsAssignableFrom<System.Collections.IEnumerable>(e.Details["not_undone"]).Cast<object>());
        Assert.Contains(faulty, e.Message, StringComparison.Ordinal);
        var tree = new HostTree(host.HostRoot);
        Assert.Equal("nvidia", tree.DriverOf(Gpu));
        Assert.Equal("snd_hda_intel", tree.DriverOf(GpuAudio));
        Assert.Equal("(null)\n", tree.OverrideOf(Gpu));
        Assert.Equal("(null)\n", tree.OverrideOf(GpuAudio));
        Assert.False(tree.Exists("/dev/vfio/11"));
        var record = host.Record(device.Id);
        Assert.Null(record.Binding);
        Assert.Null(record.Quarantine);
        Assert.True(record.Revision > revisionBefore);
        Assert.Equal(DeviceState.Ready, host.Manager.GetDevice(device.Id).State);
        Consistency.AssertSettled(host);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    public async Task BindToVfio_KernelRefusesWriteN_RolledBackToTheOriginalDrivers(int failing)
    {
        using var host = new InterceptedHost(HostRoot(_dir), _dir.Combine("state"), TimeSpan.FromSeconds(5));
        var device = await host.RegisterAsync(Gpu);
        host.Sysfs.FailWhen = (number, _, _) => number == failing;

        var e = await Assert.ThrowsAsync<PassthroughException>(() => host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true)));

        Assert.True(ErrorCodes.OperationFailed == e.Code,
            e.Message + "\n" + string.Join("\n", host.Sysfs.Writes.Select(w => $"{w.Path} <- {w.Value.Trim()}")));
        Assert.Equal(true, e.Details["rolled_back"]);
        Assert.Contains("EIO", e.Message, StringComparison.Ordinal);
        Assert.True(failing == 1 || host.Sysfs.Writes.Count > failing, "nothing was undone");
        Assert.Null(host.Registry.Find(device.Id)!.Binding);
        Consistency.AssertSettled(host.HostRoot, host.Journal, host.Registry, host.Manager);
    }

    [Fact]
    public async Task BindToVfio_GroupBindOfTheRestRefused_BindingBackToWhatItWas()
    {
        using var host = Create(_dir, Timeout);
        var tree = new HostTree(host.HostRoot);
        var device = await host.RegisterAsync(Gpu);
        // The audio function is idle (no driver) while the GPU alone is bound, then gets its driver back.
        host.Kernel.Write("/sys/bus/pci/drivers/snd_hda_intel/unbind", GpuAudio);
        await host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        host.Kernel.Write("/sys/bus/pci/drivers_probe", GpuAudio);
        var previous = host.Record(device.Id).Binding!;
        host.Kernel.AddFault(A(GpuAudio), SimulatedFault.Parse("bind_refused"));

        var e = await Assert.ThrowsAsync<PassthroughException>(() => host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true)));

        Assert.Equal(ErrorCodes.OperationFailed, e.Code);
        Assert.Equal(true, e.Details["rolled_back"]);
        var binding = host.Record(device.Id).Binding!;
        Assert.Equal(previous.Group, binding.Group);
        Assert.Equal(previous.Functions, binding.Functions);
        Assert.Equal("vfio-pci", tree.DriverOf(Gpu));
        Assert.Equal("snd_hda_intel", tree.DriverOf(GpuAudio));
        Assert.Equal("(null)\n", tree.OverrideOf(GpuAudio));
        Assert.Empty(host.Journal.Pending());
    }

    [Fact]
    public async Task BindToVfio_RollbackCannotRestoreAFunction_NotRolledBackQuarantinedAndRecorded()
    {
        using var host = Create(_dir, Timeout, faults: new Dictionary<PciAddress, IReadOnlyList<SimulatedFault>>
        {
            [A(GpuAudio)] = [SimulatedFault.Parse("bind_refused"), SimulatedFault.Parse("bind_refused=snd_hda_intel")],
        });
        var tree = new HostTree(host.HostRoot);
        var device = await host.RegisterAsync(Gpu);

        var e = await Assert.ThrowsAsync<PassthroughException>(() => host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true)));

        Assert.Equal(ErrorCodes.OperationFailed, e.Code);
        Assert.Equal(false, e.Details["rolled_back"]);
        var notUndone = Assert.Single(Assert.IsAssignableFrom<System.Collections.IEnumerable>(e.Details["not_undone"]).Cast<object>());
        Assert.Contains(GpuAudio, notUndone.ToString(), StringComparison.Ordinal);
        Assert.Equal("nvidia", tree.DriverOf(Gpu));
        Assert.Equal("(null)\n", tree.OverrideOf(Gpu));
        var record = host.Record(device.Id);
        Assert.NotNull(record.Quarantine);
        Assert.Equal([A(GpuAudio)], record.Binding!.Functions.Select(f => f.PciAddress));
        Assert.Equal("snd_hda_intel", record.Binding.Functions[0].OriginalDriver);
        Assert.Equal(DeviceState.Quarantined, host.Manager.GetDevice(device.Id).State);
        Assert.Empty(host.Journal.Pending());
    }

    [Fact]
    public async Task BindToVfio_SingleDeviceRefused_RolledBackAndRetryAfterTheFaultClearsWorks()
    {
        using var host = Create(_dir, Timeout);
        var tree = new HostTree(host.HostRoot);
        var device = await host.RegisterAsync(Nvme);
        host.Kernel.AddFault(A(Nvme), SimulatedFault.Parse("bind_refused"));

        var e = await Assert.ThrowsAsync<PassthroughException>(() => host.Manager.BindToVfioAsync(device.Id, new VfioRequest()));
        Assert.Equal(ErrorCodes.OperationFailed, e.Code);
        Assert.Equal("nvme", tree.DriverOf(Nvme));
        host.Kernel.ClearFaults(A(Nvme));
        var bound = (await host.Manager.BindToVfioAsync(device.Id, new VfioRequest())).Device!;

        Assert.True(bound.BoundToVfio);
        Assert.Equal("nvme", Assert.Single(host.Record(device.Id).Binding!.Functions).OriginalDriver);
    }
}
