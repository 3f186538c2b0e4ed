using PciPassthrough.Simulation.Tests;
using PciPassthrough.Tests.TestDoubles;
using static PciPassthrough.Registry.Tests.VfioHosts;

namespace PciPassthrough.Registry.Tests;

/// <summary>
/// The daemon dies right before each journaled step of an operation (and, as a control, one past
/// the last); a restarted daemon's recovery must leave records and kernel agreeing, no function
/// driverless that had a driver, no override left behind, and the journal empty.
/// </summary>
public sealed class DeviceManagerCrashRecoveryTests : IDisposable
{
    private readonly TempDirectory _dir = new("pcipt-crash");

    public void Dispose() => _dir.Dispose();

    /// <summary>(scenario, step to crash before); each scenario's steps plus one that never fires.</summary>
    public static TheoryData<string, int> Crashes()
    {
        var data = new TheoryData<string, int>();
        foreach (var (scenario, steps) in Scenarios)
        {
            for (var n = 1; n <= steps + 1; n++)
            {
                data.Add(scenario, n);
            }
        }

        return data;
    }

    /// <summary>Journaled kernel steps of each scenario on a fault-free host.</summary>
    private static readonly (string Scenario, int Steps)[] Scenarios =
    [
        ("bind-nvme", 3),
        ("bind-gpu-group", 6),
        ("unbind-nvme", 3),
        ("unbind-gpu-group", 6),
        ("delete-nvme", 3),
        ("delete-gpu-group", 6),
        ("reset-nvme", 1),
    ];

    [Theory]
    [MemberData(nameof(Crashes))]
    public async Task RecoverJournal_AfterACrashBeforeStepN_RecordAndKernelAgree(string scenario, int n)
    {
        var operation = scenario[..scenario.IndexOf('-', StringComparison.Ordinal)];
        var group = scenario.EndsWith("-group", StringComparison.Ordinal);
        var address = group ? Gpu : Nvme;
        var steps = Scenarios.Single(s => s.Scenario == scenario).Steps;
        var crash = new ThrowingCrashPoint(operation, n);
        using var host = Create(_dir, TimeSpan.FromSeconds(5), crash);
        var device = await host.RegisterAsync(address);
        if (operation is "unbind" or "delete")
        {
            await host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: group));
        }

        if (operation is "bind" or "unbind")
        {
            var plan = operation == "bind"
                ? (await host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: group, DryRun: true))).Plan!
                : (await host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest(DryRun: true))).Plan!;
            Assert.Equal(steps, plan.Steps.Count);
        }

        var crashed = await RunAsync(host, operation, device.Id, group, method: null);

        Assert.Equal(n <= steps, crashed);
        Assert.Equal(n <= steps, crash.Fired);
        Assert.Equal(n <= steps ? 1 : 0, host.Journal.Pending().Count);

        using var restarted = host.Restart();
        var actions = await restarted.Manager.RecoverJournalAsync();

        if (n <= steps)
        {
            var action = Assert.Single(actions);
            Assert.Equal(operation, action.Operation);
            Assert.Equal(address, action.PciAddress);
            Assert.Equal(operation == "bind" ? DeviceManager.JournalRolledBack : DeviceManager.JournalCompleted, action.Kind);
        }
        else
        {
            Assert.Empty(actions);
        }

        Consistency.AssertSettled(restarted);
        var tree = new HostTree(restarted.HostRoot);
        var record = restarted.Registry.Find(device.Id);
        if (operation == "delete")
        {
            // Deleted only once the device is back on its driver; AssertSettled checked the driver.
            Assert.Null(record);
        }
        else
        {
            Assert.NotNull(record);
            var expectBound = operation == "bind" && n > steps;
            Assert.Equal(expectBound, tree.DriverOf(address) == "vfio-pci");
            Assert.Equal(expectBound, restarted.Manager.GetDevice(device.Id).BoundToVfio);
        }

        // The recovered host works: the device can be bound and returned again.
        if (record is not null)
        {
            await restarted.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: group));
            await restarted.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest());
            Consistency.AssertSettled(restarted);
        }
    }

    public static TheoryData<int> RollbackSteps()
    {
        // 6 bind steps, the explicit bind that vfio-pci refuses (7), then the rollback: the audio
        // function's override and probe (8, 9), the GPU's override, unbind and probe (10-12).
        var data = new TheoryData<int>();
        for (var n = 1; n <= 13; n++)
        {
            data.Add(n);
        }

        return data;
    }

    [Theory]
    [MemberData(nameof(RollbackSteps))]
    public async Task RecoverJournal_AfterACrashWhileAFailedGroupBindRollsBack_EverythingBackOnItsDriver(int n)
    {
        var crash = new ThrowingCrashPoint("bind", n);
        using var host = Create(_dir, TimeSpan.FromSeconds(1), crash,
            new Dictionary<PciPassthrough.Devices.PciAddress, IReadOnlyList<PciPassthrough.Simulation.SimulatedFault>>
            {
                [A(GpuAudio)] = [PciPassthrough.Simulation.SimulatedFault.Parse("bind_refused")],
            });
        var device = await host.RegisterAsync(Gpu);

        var crashed = false;
        try
        {
            await host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true));
        }
        catch (SimulatedCrashException)
        {
            crashed = true;
        }
        catch (PciPassthrough.Errors.PassthroughException e) when (e.Code == PciPassthrough.Errors.ErrorCodes.OperationFailed)
        {
            // Past the last step the rollback finishes on its own.
        }

        Assert.Equal(n <= 12, crashed);
        using var restarted = host.Restart();
        var actions = await restarted.Manager.RecoverJournalAsync();

        Assert.Equal(n <= 12 ? [DeviceManager.JournalRolledBack] : [], actions.Select(a => a.Kind));
        Consistency.AssertSettled(restarted);
        Assert.Null(restarted.Registry.Find(device.Id)!.Binding);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public async Task RecoverJournal_AfterACrashDuringAResetWithMethod_ResetMethodsRestored(int n)
    {
        var crash = new ThrowingCrashPoint("reset", n);
        using var host = Create(_dir, TimeSpan.FromSeconds(5), crash);
        var device = await host.RegisterAsync(Nvme);

        var crashed = await RunAsync(host, "reset", device.Id, group: false, method: "flr");
        Assert.Equal(n <= 3, crashed);
        using var restarted = host.Restart();
        var actions = await restarted.Manager.RecoverJournalAsync();

        Assert.All(actions, a => Assert.Equal(DeviceManager.JournalCompleted, a.Kind));
        Assert.Equal("flr bus\n", new HostTree(restarted.HostRoot).Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
        Consistency.AssertSettled(restarted);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    public async Task RecoverJournal_CrashDuringRecoveryItself_NextRecoveryFinishesTheJob(int k)
    {
        // A group bind dies before its last step (the audio function's probe) ...
        using var host = Create(_dir, TimeSpan.FromSeconds(5), new ThrowingCrashPoint("bind", 6));
        var device = await host.RegisterAsync(Gpu);
        Assert.True(await RunAsync(host, "bind", device.Id, group: true, method: null));

        // ... the restarted daemon dies again right before the k-th kernel write of its recovery ...
        using (var recovering = new InterceptedHost(host.HostRoot, host.StateRoot, TimeSpan.FromSeconds(5)))
        {
            recovering.Sysfs.Replace = (_, _, _) => recovering.Sysfs.Writes.Count == k ? throw new SimulatedCrashException("recovery", k) : false;
            await Assert.ThrowsAsync<SimulatedCrashException>(() => recovering.Manager.RecoverJournalAsync());
            Assert.Single(recovering.Journal.Pending());
        }

        // ... and the next start finishes the job.
        using var restarted = host.Restart();
        var actions = await restarted.Manager.RecoverJournalAsync();

        Assert.Equal(DeviceManager.JournalRolledBack, Assert.Single(actions).Kind);
        Consistency.AssertSettled(restarted);
        Assert.Empty(await restarted.Manager.RecoverJournalAsync());
    }

    /// <summary>Runs the operation; true when the crash point stopped it.</summary>
    private static async Task<bool> RunAsync(SimulatedHost host, string operation, string id, bool group, string? method)
    {
        try
        {
            switch (operation)
            {
                case "bind":
                    await host.Manager.BindToVfioAsync(id, new VfioRequest(Group: group));
                    break;
                case "unbind":
                    await host.Manager.UnbindFromVfioAsync(id, new VfioRequest());
                    break;
                case "delete":
                    await host.Manager.DeleteDeviceAsync(id);
                    break;
                case "reset":
                    await host.Manager.ResetAsync(id, method, force: false);
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(operation));
            }

            return false;
        }
        catch (SimulatedCrashException)
        {
            return true;
        }
    }
}
