using PciPassthrough.Devices;
using PciPassthrough.Reconcile;
using PciPassthrough.Tests.TestDoubles;
using PciPassthrough.Vfio;
using static PciPassthrough.Lifecycle.Tests.LifecycleTestKit;

namespace PciPassthrough.Registry.Tests;

/// <summary>
/// Attach and detach-with-release stopped right before each journaled step, then a restart on the
/// same tree and state directory and the start-up reconcile: records and kernel agree again.
/// </summary>
public sealed class DeviceManagerLifecycleCrashRecoveryTests
{
    private static VfioOptions GroupBindOnAttach() =>
        new() { GroupBindOnAttach = true, OperationTimeout = TimeSpan.FromSeconds(5), VerifyPollInterval = TimeSpan.FromMilliseconds(2) };

    /// <summary>What must hold after any recovery: no function lost its driver, nothing half-done left.</summary>
    private static void AssertRecovered(SimulatedHost host, Device device, DeviceRecord bystander)
    {
        Assert.Equal(OriginalDrivers(), Drivers(host));
        foreach (var function in GpuServerFixture())
        {
            Assert.Null(host.Binder.ReadOverride(function));
        }

        var record = Record(host, device.Id);
        Assert.Null(record.Attachment);
        Assert.Null(record.Binding);
        Assert.Null(record.Quarantine);
        Assert.Equal(device.OriginalDriver, record.OriginalDriver);
        Assert.Null(AttachedOnDisk(host, device.Id));
        Assert.Empty(JournalFiles(host));
        Assert.Empty(host.Journal.Pending());
        Assert.Equal(["vfio"], Directory.EnumerateFileSystemEntries(Path.Combine(host.HostRoot, "dev", "vfio")).Select(Path.GetFileName));
        Assert.Equal(bystander, Record(host, bystander.Id));
    }

    private static IEnumerable<PciAddress> GpuServerFixture() =>
        Simulation.GpuServerFixture.Devices.Select(d => d.Address);

    private static async Task<ReconcileReport> RestartAndRecoverAsync(SimulatedHost crashed, Func<SimulatedHost, Task> check)
    {
        using var restarted = crashed.Restart();
        using var runner = Runner(restarted);
        var report = await runner.RunAsync(dryRun: false, startup: true);
        await check(restarted);

        // Recovery is done for good: a second reconcile finds nothing to do.
        var again = await runner.RunAsync(dryRun: false);
        Assert.Empty(again.Actions);
        return report;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task AttachAsync_CrashBeforeStep_StartupReconcileRollsBackAndNeverRecordsTheAttachment(int step)
    {
        var crash = new ThrowingCrashPoint("attach", step);
        using var host = new SimulatedHost(crashPoint: crash);
        var device = await RegisterAsync(host, Nvme);
        var bystander = Record(host, (await RegisterAsync(host, Nvme2)).Id);

        await Assert.ThrowsAsync<SimulatedCrashException>(() => host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1")));

        Assert.True(crash.Fired);
        Assert.Single(JournalFiles(host));
        var report = await RestartAndRecoverAsync(host, async restarted =>
        {
            AssertRecovered(restarted, device, bystander);
            var attached = await restarted.Manager.AttachAsync(device.Id, new AttachCommand("vm-2"));
            Assert.Equal(DeviceState.Attached, attached.State);
            await restarted.Manager.DetachAsync(device.Id, new DetachCommand("vm-2", Release: true));
        });

        var action = Assert.Single(report.Actions);
        Assert.Equal(device.Id, action.DeviceId);
        Assert.Equal(ReconcileKinds.JournalRolledBack, action.Kind);
        Assert.True(action.Applied);
    }

    [Fact]
    public async Task AttachAsync_CrashPointPastTheLastStep_NeverFires()
    {
        var crash = new ThrowingCrashPoint("attach", 5);
        using var host = new SimulatedHost(crashPoint: crash);
        var device = await RegisterAsync(host, Nvme);

        var attached = await host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        // So steps 1-4 above are every journaled step of this attach.
        Assert.False(crash.Fired);
        Assert.Equal(DeviceState.Attached, attached.State);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    public async Task AttachAsync_GroupBindCrashBeforeStep_StartupReconcileRollsBackEveryFunction(int step)
    {
        var crash = new ThrowingCrashPoint("attach", step);
        using var host = new SimulatedHost(crashPoint: crash);
        var manager = Manager(host, GroupBindOnAttach());
        var device = await RegisterAsync(host, Gpu);
        var bystander = Record(host, (await RegisterAsync(host, Nvme)).Id);

        await Assert.ThrowsAsync<SimulatedCrashException>(() => manager.AttachAsync(device.Id, new AttachCommand("vm-1")));

        Assert.True(crash.Fired);
        var report = await RestartAndRecoverAsync(host, restarted =>
        {
            AssertRecovered(restarted, device, bystander);
            return Task.CompletedTask;
        });

        var action = Assert.Single(report.Actions);
        Assert.Equal(ReconcileKinds.JournalRolledBack, action.Kind);
        Assert.True(action.Applied);
    }

    [Fact]
    public async Task AttachAsync_GroupBindCrashPointPastTheLastStep_NeverFires()
    {
        var crash = new ThrowingCrashPoint("attach", 8);
        using var host = new SimulatedHost(crashPoint: crash);
        var device = await RegisterAsync(host, Gpu);

        await Manager(host, GroupBindOnAttach()).AttachAsync(device.Id, new AttachCommand("vm-1"));

        Assert.False(crash.Fired);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task DetachAsync_ReleaseCrashBeforeStep_StartupReconcileFinishesTheRelease(int step)
    {
        var crash = new ThrowingCrashPoint("detach", step);
        using var host = new SimulatedHost(crashPoint: crash);
        var device = await RegisterAsync(host, Nvme);
        var bystander = Record(host, (await RegisterAsync(host, Nvme2)).Id);
        await host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        await Assert.ThrowsAsync<SimulatedCrashException>(
            () => host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true)));

        Assert.True(crash.Fired);
        var report = await RestartAndRecoverAsync(host, async restarted =>
        {
            AssertRecovered(restarted, device, bystander);
            var attached = await restarted.Manager.AttachAsync(device.Id, new AttachCommand("vm-2"));
            Assert.Equal("vfio-pci", attached.CurrentDriver);
            await restarted.Manager.DetachAsync(device.Id, new DetachCommand("vm-2", Release: true));
        });

        var action = Assert.Single(report.Actions);
        Assert.Equal(device.Id, action.DeviceId);
        Assert.Equal(ReconcileKinds.JournalCompleted, action.Kind);
        Assert.True(action.Applied);
    }

    [Fact]
    public async Task DetachAsync_ReleaseCrashPointPastTheLastStep_NeverFires()
    {
        var crash = new ThrowingCrashPoint("detach", 5);
        using var host = new SimulatedHost(crashPoint: crash);
        var device = await RegisterAsync(host, Nvme);
        await host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        var released = await host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true));

        Assert.False(crash.Fired);
        Assert.Equal("nvme", released.CurrentDriver);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    public async Task DetachAsync_GroupReleaseCrashBeforeStep_StartupReconcileReturnsEveryFunction(int step)
    {
        var crash = new ThrowingCrashPoint("detach", step);
        using var host = new SimulatedHost(crashPoint: crash);
        var manager = Manager(host, GroupBindOnAttach());
        var device = await RegisterAsync(host, Gpu);
        var bystander = Record(host, (await RegisterAsync(host, Nvme)).Id);
        await manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        await Assert.ThrowsAsync<SimulatedCrashException>(
            () => manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true)));

        Assert.True(crash.Fired);
        var report = await RestartAndRecoverAsync(host, restarted =>
        {
            AssertRecovered(restarted, device, bystander);
            return Task.CompletedTask;
        });

        var action = Assert.Single(report.Actions);
        Assert.Equal(ReconcileKinds.JournalCompleted, action.Kind);
        Assert.True(action.Applied);
    }

    [Fact]
    public async Task DetachAsync_GroupReleaseCrashPointPastTheLastStep_NeverFires()
    {
        var crash = new ThrowingCrashPoint("detach", 8);
        using var host = new SimulatedHost(crashPoint: crash);
        var manager = Manager(host, GroupBindOnAttach());
        var device = await RegisterAsync(host, Gpu);
        await manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        await manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true));

        Assert.False(crash.Fired);
        Assert.Equal("nvidia", host.DriverOf(Gpu));
    }
}
