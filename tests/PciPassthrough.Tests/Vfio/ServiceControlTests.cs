using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Registry;
using PciPassthrough.Simulation;
using PciPassthrough.Sysfs;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Vfio.Tests;

/// <summary>
/// nvidia-persistenced keeps every /dev/nvidia* open, so a GPU can only leave its driver while
/// the service is stopped: the daemon stops services it is allowed to for the length of a bind.
/// </summary>
public sealed class ServiceControlTests : IDisposable
{
    private const string Gpu = "0000:17:00.0";
    private const string Audio = "0000:17:00.1";
    private const string Persistenced = "nvidia-persistenced.service";

    private readonly SimulatedHost _host = new();

    public void Dispose() => _host.Dispose();

    private static PciAddress A(string address) => PciAddress.Parse(address);

    private int ServicePid()
    {
        foreach (var entry in _host.Kernel.ListDirectory(SysfsPaths.Proc))
        {
            if (int.TryParse(entry, out var pid) && SystemdUnits.UnitOf(_host.Kernel, pid) == Persistenced)
            {
                return pid;
            }
        }

        return 0;
    }

    [Theory]
    [InlineData("0::/system.slice/nvidia-persistenced.service\n", "nvidia-persistenced.service")]
    [InlineData("12:name=systemd:/system.slice/dcgm-exporter.service\n0::/system.slice/dcgm-exporter.service\n", "dcgm-exporter.service")]
    [InlineData("0::/user.slice/user-1000.slice/session-2.scope\n", null)]
    [InlineData("0::/system.slice/../../etc.service\n", null)]
    [InlineData("", null)]
    public void UnitOf_CgroupFile_ServiceOrNull(string cgroup, string? expected)
    {
        using var root = new TempDirectory("pcipt-proc");
        Directory.CreateDirectory(root.Combine("proc", "77"));
        File.WriteAllText(root.Combine("proc", "77", "cgroup"), cgroup);

        Assert.Equal(expected, SystemdUnits.UnitOf(new LinuxSysfs(root.Path), 77));
    }

    [Fact]
    public void ServiceFault_RunningService_HoldsTheDriverNodeAndShowsItsCgroup()
    {
        _host.Kernel.AddFault(A(Gpu), SimulatedFault.Parse("service=nvidia-persistenced"));

        var pid = ServicePid();
        var holders = _host.Binder.FindHolders([A(Gpu)]);

        Assert.NotEqual(0, pid);
        Assert.Equal([new DeviceHolder(pid, "nvidia-persistenced", "/dev/nvidia0")], holders);
    }

    [Fact]
    public async Task ServiceFault_Stopped_HoldsNothingUntilStartedAgain()
    {
        _host.Kernel.AddFault(A(Gpu), SimulatedFault.Parse("service=nvidia-persistenced"));
        var control = new SimulatedServiceControl(_host.Kernel);

        await control.StopAsync(Persistenced, CancellationToken.None);
        var whileStopped = _host.Binder.FindHolders([A(Gpu)]);
        await control.StartAsync(Persistenced, CancellationToken.None);

        Assert.Empty(whileStopped);
        Assert.Single(_host.Binder.FindHolders([A(Gpu)]));
    }

    [Fact]
    public async Task GroupBind_HeldByAStoppableService_StoppedForTheBindAndStartedAgain()
    {
        _host.Kernel.AddFault(A(Gpu), SimulatedFault.Parse("service=nvidia-persistenced"));
        var device = await _host.Manager.CreateDeviceAsync(new CreateDeviceCommand(Gpu, "gpu0"));

        var plan = (await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true, DryRun: true))).Plan!;
        var bound = (await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true))).Device!;

        Assert.Null(plan.WouldFailWith);
        Assert.Equal([Persistenced], plan.ServicesToStop);
        Assert.Equal($"stop {Persistenced} (it holds the device)", plan.Steps[0].Description);
        Assert.Equal($"start {Persistenced} again", plan.Steps[^1].Description);
        Assert.True(bound.BoundToVfio);
        Assert.Equal(("vfio-pci", "vfio-pci"), (_host.DriverOf(Gpu), _host.DriverOf(Audio)));
        Assert.True(_host.Kernel.IsServiceActive(Persistenced));
        // Back on, the service no longer holds the GPU: it left the nvidia driver.
        Assert.DoesNotContain(_host.Binder.FindHolders([A(Gpu)]), h => h.Path == "/dev/nvidia0");
        Assert.Empty(_host.Journal.Pending());
    }

    [Fact]
    public async Task GroupBind_HeldByAServiceNotAllowedToStop_InUseNamingIt()
    {
        _host.Kernel.AddFault(A(Gpu), SimulatedFault.Parse("service=dcgm-exporter"));
        var device = await _host.Manager.CreateDeviceAsync(new CreateDeviceCommand(Gpu, "gpu0"));

        var e = await Assert.ThrowsAsync<PassthroughException>(() =>
            _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true)));

        Assert.Equal(ErrorCodes.InUse, e.Code);
        var holder = Assert.Single(Assert.IsAssignableFrom<IReadOnlyList<DeviceHolder>>(e.Details["holders"]));
        Assert.Equal("dcgm-exporter", holder.Command);
        Assert.True(_host.Kernel.IsServiceActive("dcgm-exporter.service"));
        Assert.Equal("nvidia", _host.DriverOf(Gpu));
    }

    [Fact]
    public async Task GroupBind_FailsAfterStoppingTheService_RolledBackAndServiceStartedAgain()
    {
        _host.Kernel.AddFault(A(Gpu), SimulatedFault.Parse("service=nvidia-persistenced"));
        _host.Kernel.AddFault(A(Audio), new SimulatedFault.BindRefused("vfio-pci"));
        var device = await _host.Manager.CreateDeviceAsync(new CreateDeviceCommand(Gpu, "gpu0"));

        var e = await Assert.ThrowsAsync<PassthroughException>(() =>
            _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true)));

        Assert.Equal(ErrorCodes.OperationFailed, e.Code);
        Assert.Equal(("nvidia", "snd_hda_intel"), (_host.DriverOf(Gpu), _host.DriverOf(Audio)));
        Assert.True(_host.Kernel.IsServiceActive(Persistenced));
        Assert.Empty(_host.Journal.Pending());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public async Task GroupBind_CrashWhileTheServiceIsStopped_RecoveryStartsItAgain(int step)
    {
        using var host = new SimulatedHost(crashPoint: new ThrowingCrashPoint("bind", step + 1));
        host.Kernel.AddFault(A(Gpu), SimulatedFault.Parse("service=nvidia-persistenced"));
        var device = await host.Manager.CreateDeviceAsync(new CreateDeviceCommand(Gpu, "gpu0"));
        await Assert.ThrowsAsync<SimulatedCrashException>(() => host.Manager.BindToVfioAsync(device.Id, new VfioRequest(Group: true)));
        // An in-process "crash" still runs finally blocks (which start the service again); a
        // killed daemon does not. Put the service back in the state a real crash leaves.
        host.Kernel.SetServiceActive(Persistenced, active: false);
        Assert.Equal([Persistenced], Assert.Single(host.Journal.Pending()).StoppedServices);

        using var restarted = host.Restart();
        var action = Assert.Single(await restarted.Manager.RecoverJournalAsync());

        Assert.True(restarted.Kernel.IsServiceActive(Persistenced));
        Assert.Contains($"started {Persistenced} again", action.Detail, StringComparison.Ordinal);
        Assert.Empty(restarted.Journal.Pending());
        Assert.NotNull(restarted.DriverOf(Gpu));
        Assert.NotNull(restarted.DriverOf(Audio));
    }
}
