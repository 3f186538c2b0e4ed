using PciPassthrough.Errors;
using PciPassthrough.Journal.Tests;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Tests.TestDoubles;
using static PciPassthrough.Registry.Tests.VfioHosts;

namespace PciPassthrough.Registry.Tests;

/// <summary>Operations on one IOMMU group queue up; operations on different groups do not wait for each other.</summary>
public sealed class DeviceManagerConcurrencyTests : IDisposable
{
    private readonly TempDirectory _dir = new("pcipt-concurrency");

    public void Dispose() => _dir.Dispose();

    [Fact]
    public async Task BindToVfio_SameDeviceTwiceAtOnce_BothSucceedAndOneDoesTheWork()
    {
        var recorder = new RecordingCrashPoint();
        using var host = new InterceptedHost(HostRoot(_dir), _dir.Combine("state"), TimeSpan.FromSeconds(10), recorder);
        recorder.Journal = host.Journal;
        var device = await host.RegisterAsync(Nvme);
        // A slow unbind keeps the first bind busy while the second one arrives.
        host.Kernel.AddFault(A(Nvme), SimulatedFault.Parse("unbind_delay=0.3"));

        var results = await Task.WhenAll(
            Task.Run(() => host.Manager.BindToVfioAsync(device.Id, new VfioRequest())),
            Task.Run(() => host.Manager.BindToVfioAsync(device.Name, new VfioRequest())));

        Assert.All(results, r => Assert.True(r.Device!.BoundToVfio));
        Assert.Equal(["bind"], recorder.StartedOperations);
        Assert.Single(host.Sysfs.Writes, w => w.Path.EndsWith("/driver_override", StringComparison.Ordinal));
        Assert.Single(host.Sysfs.Writes, w => w.Path == "/sys/bus/pci/drivers/nvme/unbind");
        Assert.Equal("nvme", Assert.Single(host.Registry.Find(device.Id)!.Binding!.Functions).OriginalDriver);
        Consistency.AssertSettled(host.HostRoot, host.Journal, host.Registry, host.Manager);
    }

    [Fact]
    public async Task BindAndUnbind_SameDeviceAtOnce_EndConsistent()
    {
        using var host = new InterceptedHost(HostRoot(_dir), _dir.Combine("state"), TimeSpan.FromSeconds(10));
        var device = await host.RegisterAsync(Gpu);
        host.Kernel.AddFault(A(Gpu), SimulatedFault.Parse("unbind_delay=0.2"));

        await Task.WhenAll(
            Task.Run(() => host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true))),
            Task.Run(() => host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest())),
            Task.Run(() => host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true))));

        Consistency.AssertSettled(host.HostRoot, host.Journal, host.Registry, host.Manager);
    }

    [Fact]
    public async Task BindToVfio_DevicesInDifferentGroups_DoNotWaitForEachOther()
    {
        using var host = new InterceptedHost(HostRoot(_dir), _dir.Combine("state"), TimeSpan.FromSeconds(20));
        var tree = new HostTree(host.HostRoot);
        var stuck = await host.RegisterAsync(Nvme);
        var other = await host.RegisterAsync(Nvme2);
        host.Kernel.AddFault(A(Nvme), new SimulatedFault.UnbindHangs());

        var first = host.Manager.BindToVfioAsync(stuck.Id, new VfioRequest());
        await Wait.UntilAsync(() => host.Sysfs.Writes.Any(w => w.Path == "/sys/bus/pci/drivers/nvme/unbind" && w.Value == Nvme),
            "the first bind to reach its unbind");
        var second = (await host.Manager.BindToVfioAsync(other.Id, new VfioRequest()).WaitAsync(Wait.Guard)).Device!;
        var otherGroup = (await host.Manager.BindToVfioAsync((await host.RegisterAsync(Gpu2)).Id, new VfioRequest(Group: true))
            .WaitAsync(Wait.Guard)).Device!;

        Assert.True(second.BoundToVfio);
        Assert.True(otherGroup.BoundToVfio);
        Assert.False(first.IsCompleted, "the first bind finished although its unbind hangs");
        Assert.Equal("nvme", tree.DriverOf(Nvme));
        while (!first.IsCompleted)
        {
            host.Kernel.ReleaseHangs();
            await Task.WhenAny(first, Task.Delay(50));
        }

        Assert.True((await first).Device!.BoundToVfio);
        Consistency.AssertSettled(host.HostRoot, host.Journal, host.Registry, host.Manager);
    }

    [Fact]
    public async Task BindToVfio_CallerGivesUpWhileTheKernelIsStuck_DeviceNotLeftHalfBoundUntracked()
    {
        using var host = new InterceptedHost(HostRoot(_dir), _dir.Combine("state"), TimeSpan.FromSeconds(1));
        var device = await host.RegisterAsync(Nvme);
        host.Kernel.AddFault(A(Nvme), new SimulatedFault.UnbindHangs());
        using var aborted = new CancellationTokenSource();

        // As when the HTTP client disconnects (the request's token) in the middle of a bind.
        var bind = host.Manager.BindToVfioAsync(device.Id, new VfioRequest(), aborted.Token);
        await Wait.UntilAsync(() => host.Sysfs.Writes.Any(w => w.Path == "/sys/bus/pci/drivers/nvme/unbind"), "the bind to reach its unbind");
        await aborted.CancelAsync();
        try
        {
            await bind;
        }
        catch (OperationCanceledException)
        {
            // Either outcome is acceptable here; what is left behind is what matters.
        }
        catch (PassthroughException e) when (e.Code == ErrorCodes.UnbindTimeout)
        {
            // The operation ran on to its bound despite the caller leaving, and quarantined the device.
        }

        // The kernel write is still in flight: the device is half-way (override set, unbind pending).
        // The daemon must either still own the operation or have quarantined the device; a pending
        // journal entry on a device that looks ready lets the next bind or unbind run over it.
        var record = host.Registry.Find(device.Id)!;
        Assert.True(host.Journal.Pending().Count == 0 || record.Quarantine is not null,
            $"journal entries pending: {host.Journal.Pending().Count}, quarantine: {record.Quarantine?.Reason ?? "none"}, " +
            $"state: {host.Manager.GetDevice(device.Id).State}");
    }
}
