using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Lifecycle;
using PciPassthrough.Registry;
using PciPassthrough.Simulation;
using PciPassthrough.Tests.TestDoubles;
using static PciPassthrough.Lifecycle.Tests.LifecycleTestKit;

namespace PciPassthrough.Reconcile.Tests;

/// <summary>The real runner over the simulated GPU server: each kind observed, decided and applied end to end.</summary>
public sealed class ReconcileRunnerTests : IDisposable
{
    private const string Usb = "0000:00:14.0";
    private const string Smbus = "0000:00:1f.4";
    private const string NicPort0 = "0000:5e:00.0";
    private const string NicPort1 = "0000:5e:00.1";

    private readonly SimulatedHost _host = new();

    public void Dispose() => _host.Dispose();

    private static ReconcileActionReport Action(ReconcileReport report, string deviceId, string kind) =>
        Assert.Single(report.Actions, a => a.DeviceId == deviceId && a.Kind == kind);

    private static IReadOnlyList<(string DeviceId, string Kind)> Kinds(ReconcileReport report) =>
        [.. report.Actions.Select(a => (a.DeviceId, a.Kind))];

    /// <summary>Moves a function's IOMMU group to another number, as a reboot with other firmware settings can.</summary>
    private static void RenumberGroup(SimulatedHost host, string address, int from, int to)
    {
        var groups = Path.Combine(host.HostRoot, "sys", "kernel", "iommu_groups");
        Directory.Move(Path.Combine(groups, from.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            Path.Combine(groups, to.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        var deviceDir = new DirectoryInfo(Path.Combine(host.HostRoot, "sys", "bus", "pci", "devices", address)).ResolveLinkTarget(true)!.FullName;
        var link = Path.Combine(deviceDir, "iommu_group");
        File.Delete(link);
        File.CreateSymbolicLink(link, Path.GetRelativePath(deviceDir, Path.Combine(groups, to.ToString(System.Globalization.CultureInfo.InvariantCulture))));
    }

    private static void RemoveFromHost(SimulatedHost host, string address) =>
        File.Delete(Path.Combine(host.HostRoot, "sys", "bus", "pci", "devices", address));

    private static void ChangeVendor(SimulatedHost host, string address, string vendor) =>
        File.WriteAllText(Path.Combine(host.HostRoot, "sys", "bus", "pci", "devices", address, "vendor"), vendor + "\n");

    private static void UnbindByHand(SimulatedHost host, string address, string driver) =>
        host.Kernel.Write(Sysfs.SysfsPaths.DriverUnbind(driver), address);

    /// <summary>A bound NVMe attached to a fake VMM (holder pid 4242) that then exits.</summary>
    private async Task<Device> AttachToAVmmThatExitsAsync()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        _host.Kernel.AddFault(PciAddress.Parse(Nvme), new SimulatedFault.Holder(4242, "qemu-system-x86"));
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", 4242));
        _host.Kernel.KillHolder(4242);
        return device;
    }

    [Fact]
    public async Task RunAsync_AttachedVmmRunning_NothingToDo()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        _host.Kernel.AddFault(PciAddress.Parse(Nvme), new SimulatedFault.Holder(4242, "qemu-system-x86"));
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", 4242));
        using var runner = Runner(_host, restoreStranded: true);

        var report = await runner.RunAsync(dryRun: false);

        Assert.Empty(report.Actions);
        Assert.Empty(report.SuspiciousProcesses);
        Assert.Equal("vm-1", Record(_host, device.Id).Attachment?.InstanceId);
        Assert.False(report.DryRun);
        Assert.InRange(report.FinishedAt, report.StartedAt, DateTime.MaxValue);
    }

    [Fact]
    public async Task RunAsync_VmmExited_OrphanClearedAndStrandedReported()
    {
        var device = await AttachToAVmmThatExitsAsync();
        using var runner = Runner(_host);

        var report = await runner.RunAsync(dryRun: false);

        Assert.Equal([(device.Id, ReconcileKinds.OrphanCleared), (device.Id, ReconcileKinds.StrandedOnVfio)], Kinds(report));
        var orphan = Action(report, device.Id, ReconcileKinds.OrphanCleared);
        Assert.True(orphan.Applied);
        Assert.Equal(Nvme, orphan.PciAddress);
        Assert.Contains("4242", orphan.Detail, StringComparison.Ordinal);
        Assert.False(Action(report, device.Id, ReconcileKinds.StrandedOnVfio).Applied);
        Assert.Null(Record(_host, device.Id).Attachment);
        Assert.Null(AttachedOnDisk(_host, device.Id));
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
        Assert.Same(report, runner.Last);

        var again = await runner.RunAsync(dryRun: false);
        Assert.Equal([(device.Id, ReconcileKinds.StrandedOnVfio)], Kinds(again));
    }

    [Fact]
    public async Task RunAsync_VmmExitedWithRestoreStranded_DeviceBackOnItsOriginalDriver()
    {
        var device = await AttachToAVmmThatExitsAsync();
        using var runner = Runner(_host, restoreStranded: true);

        var report = await runner.RunAsync(dryRun: false);

        Assert.All(report.Actions, a => Assert.True(a.Applied, a.Detail));
        Assert.Equal([(device.Id, ReconcileKinds.OrphanCleared), (device.Id, ReconcileKinds.StrandedOnVfio)], Kinds(report));
        Assert.Equal("nvme", _host.DriverOf(Nvme));
        Assert.Null(_host.Binder.ReadOverride(PciAddress.Parse(Nvme)));
        var record = Record(_host, device.Id);
        Assert.Null(record.Attachment);
        Assert.Null(record.Binding);
        Assert.Equal(DeviceState.Ready, _host.Manager.GetDevice(device.Id).State);
        Assert.Empty((await runner.RunAsync(dryRun: false)).Actions);
    }

    [Fact]
    public async Task RunAsync_NoLiveness_AttachmentNeverCleared()
    {
        var device = await AttachToAVmmThatExitsAsync();
        using var runner = Runner(_host, new NoLivenessChecker(_host.Registry, _host.Discovery, _host.Kernel), restoreStranded: true);

        var report = await runner.RunAsync(dryRun: false);

        Assert.Empty(report.Actions);
        Assert.Equal("vm-1", Record(_host, device.Id).Attachment?.InstanceId);
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
    }

    [Fact]
    public async Task RunAsync_AttachedWithoutPid_NeverCleared()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        using var runner = Runner(_host, restoreStranded: true);

        var report = await runner.RunAsync(dryRun: false);

        Assert.Empty(report.Actions);
        Assert.Equal("vm-1", Record(_host, device.Id).Attachment?.InstanceId);
    }

    [Fact]
    public async Task RunAsync_DryRun_ChangesNothingAndReportsWhatARealRunDoes()
    {
        // Every kind at once: an interrupted bind, an orphan on a stranded device, a missing, a
        // changed and a renumbered device, and one that lost its driver.
        using (var crashing = new SimulatedHost(_host.HostRoot, _host.StateRoot, crashPoint: new ThrowingCrashPoint("bind", 2)))
        {
            var interrupted = await RegisterAsync(crashing, Nvme2);
            await Assert.ThrowsAsync<SimulatedCrashException>(() => crashing.Manager.BindToVfioAsync(interrupted.Id, new VfioRequest()));
        }

        using var host = _host.Restart();
        var orphan = await RegisterAsync(host, Nvme);
        await host.Manager.BindToVfioAsync(orphan.Id, new VfioRequest());
        WriteProcess(host.HostRoot, 4242, startTime: 5_242);
        await host.Manager.AttachAsync(orphan.Id, new AttachCommand("vm-1", 4242));
        RemoveProcess(host.HostRoot, 4242);
        var missing = await RegisterAsync(host, NicPort1);
        RemoveFromHost(host, NicPort1);
        var changed = await RegisterAsync(host, NicPort0);
        ChangeVendor(host, NicPort0, "0x8087");
        var renumbered = await RegisterAsync(host, Usb);
        RenumberGroup(host, Usb, 1, 101);
        var driverless = await RegisterAsync(host, Smbus);
        UnbindByHand(host, Smbus, "i801_smbus");
        using var runner = Runner(host, restoreStranded: true);
        var tree = Snapshot(host.HostRoot);
        var state = Snapshot(host.StateRoot);

        var dry = await runner.RunAsync(dryRun: true);

        SameSnapshot(tree, Snapshot(host.HostRoot));
        SameSnapshot(state, Snapshot(host.StateRoot));
        Assert.True(dry.DryRun);
        Assert.All(dry.Actions, a => Assert.False(a.Applied));
        Assert.Null(runner.Last);
        var expected = new HashSet<(string, string)>
        {
            (host.Registry.FindByAddress(PciAddress.Parse(Nvme2))!.Id, ReconcileKinds.JournalRolledBack),
            (orphan.Id, ReconcileKinds.OrphanCleared),
            (orphan.Id, ReconcileKinds.StrandedOnVfio),
            (missing.Id, ReconcileKinds.Missing),
            (changed.Id, ReconcileKinds.Changed),
            (renumbered.Id, ReconcileKinds.GroupRenumbered),
            (driverless.Id, ReconcileKinds.DriverRestored),
        };
        Assert.Equal(expected, Kinds(dry).ToHashSet());

        var real = await runner.RunAsync(dryRun: false);

        Assert.False(real.DryRun);
        Assert.Equal(expected, Kinds(real).ToHashSet());
        Assert.All(real.Actions.Where(a => a.Kind is not (ReconcileKinds.Missing or ReconcileKinds.Changed)), a => Assert.True(a.Applied, a.Detail));
        Assert.Equal("nvme", host.DriverOf(Nvme2));
        Assert.Equal("nvme", host.DriverOf(Nvme));
        Assert.Equal("i801_smbus", host.DriverOf(Smbus));
        Assert.Equal(101, Record(host, renumbered.Id).IommuGroup);
        Assert.Empty(JournalFiles(host));
    }

    [Fact]
    public async Task RunAsync_GroupRenumbered_NewNumberRecordedOnDisk()
    {
        var device = await RegisterAsync(_host, Nvme);
        RenumberGroup(_host, Nvme, 21, 64);
        using var runner = Runner(_host);

        var report = await runner.RunAsync(dryRun: false);

        var action = Assert.Single(report.Actions);
        Assert.Equal(ReconcileKinds.GroupRenumbered, action.Kind);
        Assert.True(action.Applied);
        Assert.Contains("64", action.Detail, StringComparison.Ordinal);
        Assert.Equal(64, Record(_host, device.Id).IommuGroup);
        Assert.Equal(64, RecordOnDisk(_host, device.Id).GetProperty("iommu_group").GetInt32());
        Assert.Empty((await runner.RunAsync(dryRun: false)).Actions);

        // The device still works under its new number.
        var attached = await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        Assert.Equal("/dev/vfio/64", attached.VfioGroupPath);
    }

    [Fact]
    public async Task RunAsync_DeviceGoneFromTheHost_MissingReportedAndRecordKept()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        var record = Record(_host, device.Id);
        RemoveFromHost(_host, Nvme);
        using var runner = Runner(_host, restoreStranded: true);

        var report = await runner.RunAsync(dryRun: false);

        var action = Assert.Single(report.Actions);
        Assert.Equal(ReconcileKinds.Missing, action.Kind);
        Assert.False(action.Applied);
        Assert.Equal(record, Record(_host, device.Id));
        Assert.True(File.Exists(Path.Combine(_host.State.Devices, device.Id + ".json")));
        Assert.Equal(DeviceState.Missing, _host.Manager.GetDevice(device.Id).State);
    }

    [Fact]
    public async Task RunAsync_AnotherDeviceAtTheAddress_ChangedReportedAndBindingRefused()
    {
        var device = await RegisterAsync(_host, Nvme);
        ChangeVendor(_host, Nvme, "0x1b36");
        using var runner = Runner(_host);

        var report = await runner.RunAsync(dryRun: false);

        var action = Assert.Single(report.Actions);
        Assert.Equal(ReconcileKinds.Changed, action.Kind);
        Assert.False(action.Applied);
        Assert.Contains("1b36", action.Detail, StringComparison.Ordinal);
        Assert.Equal(DeviceState.Changed, _host.Manager.GetDevice(device.Id).State);
        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1")));
        Assert.Equal(ErrorCodes.DeviceChanged, e.Code);
        Assert.Equal("nvme", _host.DriverOf(Nvme));
    }

    [Fact]
    public async Task RunAsync_BoundFunctionLostItsDriver_DriverRestored()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        UnbindByHand(_host, Nvme, "vfio-pci");
        using var runner = Runner(_host);

        var report = await runner.RunAsync(dryRun: false);

        var action = Assert.Single(report.Actions);
        Assert.Equal(ReconcileKinds.DriverRestored, action.Kind);
        Assert.True(action.Applied, action.Detail);
        Assert.Equal("nvme", _host.DriverOf(Nvme));
        Assert.Null(Record(_host, device.Id).Binding);
    }

    [Fact]
    public async Task RunAsync_OneDevicesApplyThrows_TheOthersStillApplied()
    {
        var held = await RegisterAsync(_host, Nvme);
        var free = await RegisterAsync(_host, Nvme2);
        UnbindByHand(_host, Nvme, "nvme");
        UnbindByHand(_host, Nvme2, "nvme");
        // The nvme driver refuses the first device: its restore fails, the other's goes ahead.
        _host.Kernel.AddFault(PciAddress.Parse(Nvme), new SimulatedFault.BindRefused("nvme"));
        using var runner = Runner(_host);

        var report = await runner.RunAsync(dryRun: false);

        Assert.Equal([(held.Id, ReconcileKinds.DriverRestored), (free.Id, ReconcileKinds.DriverRestored)], Kinds(report));
        var refused = Action(report, held.Id, ReconcileKinds.DriverRestored);
        Assert.False(refused.Applied);
        Assert.Contains("not applied", refused.Detail, StringComparison.Ordinal);
        Assert.Contains("nvme", refused.Detail, StringComparison.Ordinal);
        Assert.True(Action(report, free.Id, ReconcileKinds.DriverRestored).Applied);
        Assert.Null(_host.DriverOf(Nvme));
        Assert.Equal("nvme", _host.DriverOf(Nvme2));
    }

    [Fact]
    public async Task RunAsync_LivenessThrowsForOneInstance_ThatOneKeptTheOthersCleared()
    {
        var kept = await RegisterAsync(_host, Nvme);
        var cleared = await RegisterAsync(_host, Nvme2);
        WriteProcess(_host.HostRoot, 600, startTime: 1);
        WriteProcess(_host.HostRoot, 601, startTime: 1);
        await _host.Manager.AttachAsync(kept.Id, new AttachCommand("vm-flaky", 600));
        await _host.Manager.AttachAsync(cleared.Id, new AttachCommand("vm-gone", 601));
        RemoveProcess(_host.HostRoot, 600);
        RemoveProcess(_host.HostRoot, 601);
        using var runner = Runner(_host, new ThrowingFor("vm-flaky", ProcessLiveness(_host)));

        var report = await runner.RunAsync(dryRun: false);

        Assert.Equal("vm-flaky", Record(_host, kept.Id).Attachment?.InstanceId);
        Assert.Null(Record(_host, cleared.Id).Attachment);
        Assert.DoesNotContain(report.Actions, a => a.DeviceId == kept.Id);
        Assert.True(Action(report, cleared.Id, ReconcileKinds.OrphanCleared).Applied);
    }

    [Fact]
    public async Task RunAsync_HolderOfAnUnattachedDevicesGroup_ListedAsSuspiciousAndNotStranded()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        _host.Kernel.AddFault(PciAddress.Parse(Nvme), new SimulatedFault.Holder(7777, "rogue-vmm"));
        using var runner = Runner(_host, restoreStranded: true);

        var report = await runner.RunAsync(dryRun: false);

        var process = Assert.Single(report.SuspiciousProcesses);
        Assert.Equal(7777, process.Pid);
        Assert.Equal("rogue-vmm", process.Command);
        Assert.Equal("/dev/vfio/21", process.VfioGroup);
        Assert.Empty(report.Actions);
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
    }

    [Fact]
    public async Task RunAsync_QuarantinedDeviceWithAnUnfinishedBindOutsideStartup_ReportedAndLeftAlone()
    {
        using var host = await QuarantinedByAHungUnbindAsync();
        var device = host.Registry.All().Single();
        using var runner = Runner(host, restoreStranded: true);

        var report = await runner.RunAsync(dryRun: false, startup: false);

        var action = Assert.Single(report.Actions);
        Assert.Equal(ReconcileKinds.Quarantined, action.Kind);
        Assert.False(action.Applied);
        Assert.Single(JournalFiles(host));
        Assert.NotNull(Record(host, device.Id).Quarantine);
    }

    [Fact]
    public async Task RunAsync_StartupWithAQuarantinedDevicesUnfinishedBind_RolledBack()
    {
        using var host = await QuarantinedByAHungUnbindAsync();
        var device = host.Registry.All().Single();
        using var restarted = host.Restart();
        using var runner = Runner(restarted);

        var report = await runner.RunAsync(dryRun: false, startup: true);

        var action = Assert.Single(report.Actions);
        Assert.Equal(ReconcileKinds.JournalRolledBack, action.Kind);
        Assert.True(action.Applied, action.Detail);
        Assert.Empty(JournalFiles(restarted));
        Assert.Equal("nvme", restarted.DriverOf(Nvme));
        Assert.Null(restarted.Binder.ReadOverride(PciAddress.Parse(Nvme)));
        Assert.Null(Record(restarted, device.Id).Binding);
    }

    [Fact]
    public async Task RunAsync_StartupRecoveredAQuarantinedDevice_QuarantineLifted()
    {
        using var host = await QuarantinedByAHungUnbindAsync();
        var device = host.Registry.All().Single();
        using var restarted = host.Restart();
        using var runner = Runner(restarted);

        await runner.RunAsync(dryRun: false, startup: true);

        // Records and kernel agree again; the contract's way out of a quarantine is "reset or
        // reconcile", and the architecture's "until a reset or a restart recovers it".
        Assert.Null(Record(restarted, device.Id).Quarantine);
        Assert.Equal(DeviceState.Ready, restarted.Manager.GetDevice(device.Id).State);
        var attached = await restarted.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        Assert.Equal(DeviceState.Attached, attached.State);
    }

    [Fact]
    public async Task RunAsync_AttachmentReplacedBetweenObservingAndApplying_NewAttachmentKept()
    {
        var device = await RegisterAsync(_host, Nvme);
        WriteProcess(_host.HostRoot, 600, startTime: 1);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-old", 600));
        RemoveProcess(_host.HostRoot, 600);
        // While the runner asks about vm-old, the orchestrator detaches it and attaches vm-new.
        var liveness = new OnAsk(async () =>
        {
            await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-old"));
            await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-new"));
        }, ProcessLiveness(_host));
        using var runner = Runner(_host, liveness);

        var report = await runner.RunAsync(dryRun: false);

        var action = Action(report, device.Id, ReconcileKinds.OrphanCleared);
        Assert.False(action.Applied);
        Assert.Contains("kept", action.Detail, StringComparison.Ordinal);
        Assert.Equal("vm-new", Record(_host, device.Id).Attachment?.InstanceId);
    }

    [Fact]
    public async Task RunAsync_TwoRunsAtOnce_SerializedSoEachRepairIsAppliedOnce()
    {
        var device = await AttachToAVmmThatExitsAsync();
        using var runner = Runner(_host, restoreStranded: true);

        var reports = await Task.WhenAll(Task.Run(() => runner.RunAsync(dryRun: false)), Task.Run(() => runner.RunAsync(dryRun: false)));

        var applied = reports.SelectMany(r => r.Actions).Where(a => a.Applied).Select(a => a.Kind).Order(StringComparer.Ordinal).ToList();
        Assert.Equal([ReconcileKinds.OrphanCleared, ReconcileKinds.StrandedOnVfio], applied);
        Assert.Single(reports, r => r.Actions.Count == 0);
        Assert.Equal("nvme", _host.DriverOf(Nvme));
        Assert.Null(Record(_host, device.Id).Attachment);
    }

    [Fact]
    public async Task RunAsync_OperationInFlight_LeftToFinishOnItsOwn()
    {
        using var host = new SimulatedHost(timeout: TimeSpan.FromMinutes(1),
            faults: new Dictionary<PciAddress, IReadOnlyList<SimulatedFault>> { [PciAddress.Parse(Nvme)] = [new SimulatedFault.UnbindHangs()] });
        var busy = await RegisterAsync(host, Nvme);
        var attached = await RegisterAsync(host, Nvme2);
        await host.Manager.AttachAsync(attached.Id, new AttachCommand("vm-1"));
        var binding = host.Manager.BindToVfioAsync(busy.Id, new VfioRequest());
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (!host.Journal.Pending().Any(e => e.DeviceId == busy.Id && e.Step >= 2))
        {
            await Task.Delay(5, timeout.Token);
        }

        // The runner reads the journal before asking liveness; once it asks, the bind may finish.
        var asked = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var runner = Runner(host, new OnAsk(() =>
        {
            asked.TrySetResult();
            return Task.CompletedTask;
        }, ProcessLiveness(host)));
        var reconcile = runner.RunAsync(dryRun: false);
        await asked.Task.WaitAsync(timeout.Token);
        host.Kernel.ReleaseHangs();

        var bound = await binding;
        var report = await reconcile;

        var action = Assert.Single(report.Actions, a => a.DeviceId == busy.Id);
        Assert.False(action.Applied);
        Assert.Contains("ended on its own", action.Detail, StringComparison.Ordinal);
        Assert.Equal(DeviceState.Bound, bound.Device!.State);
        Assert.Equal("vfio-pci", host.DriverOf(Nvme));
        Assert.Equal("nvme", Record(host, busy.Id).Binding!.Functions.Single().OriginalDriver);
        Assert.Empty(JournalFiles(host));
    }

    /// <summary>A bind whose unbind from nvme hung (then finished late): quarantined, journal entry left, device driverless.</summary>
    private static async Task<SimulatedHost> QuarantinedByAHungUnbindAsync()
    {
        var host = new SimulatedHost(timeout: TimeSpan.FromSeconds(1),
            faults: new Dictionary<PciAddress, IReadOnlyList<SimulatedFault>> { [PciAddress.Parse(Nvme)] = [new SimulatedFault.UnbindHangs()] });
        var device = await RegisterAsync(host, Nvme);
        var e = await Assert.ThrowsAsync<PassthroughException>(() => host.Manager.BindToVfioAsync(device.Id, new VfioRequest()));
        Assert.Equal(ErrorCodes.UnbindTimeout, e.Code);
        host.Kernel.ReleaseHangs();
        using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (host.Writer.StuckWrites > 0)
        {
            await Task.Delay(10, wait.Token);
        }

        Assert.Null(host.DriverOf(Nvme));
        Assert.NotNull(Record(host, device.Id).Quarantine);
        Assert.Single(JournalFiles(host));
        return host;
    }

    /// <summary>Runs something the first time liveness is asked about an instance, then answers as the inner checker.</summary>
    private sealed class OnAsk(Func<Task> first, IInstanceLivenessChecker inner) : IInstanceLivenessChecker
    {
        private int _asked;

        public async Task<InstanceState> IsInstanceRunningAsync(AttachmentRecord attachment, CancellationToken cancellationToken)
        {
            if (Interlocked.Exchange(ref _asked, 1) == 0)
            {
                await first();
            }

            return await inner.IsInstanceRunningAsync(attachment, cancellationToken);
        }

        public IReadOnlyList<string> GetInstanceDevices(string id) => inner.GetInstanceDevices(id);

        public IReadOnlyDictionary<string, IReadOnlyList<string>> ListAllInstanceDevices() => inner.ListAllInstanceDevices();

        public IReadOnlyList<SuspiciousProcess> DetectSuspiciousVmmProcesses() => inner.DetectSuspiciousVmmProcesses();
    }

    /// <summary>Liveness that cannot answer for one instance (its orchestrator errs); the rest as the inner checker says.</summary>
    private sealed class ThrowingFor(string instanceId, IInstanceLivenessChecker inner) : IInstanceLivenessChecker
    {
        public Task<InstanceState> IsInstanceRunningAsync(AttachmentRecord attachment, CancellationToken cancellationToken) =>
            attachment.InstanceId == instanceId
                ? throw new HttpRequestException("orchestrator answered garbage")
                : inner.IsInstanceRunningAsync(attachment, cancellationToken);

        public IReadOnlyList<string> GetInstanceDevices(string id) => inner.GetInstanceDevices(id);

        public IReadOnlyDictionary<string, IReadOnlyList<string>> ListAllInstanceDevices() => inner.ListAllInstanceDevices();

        public IReadOnlyList<SuspiciousProcess> DetectSuspiciousVmmProcesses() => inner.DetectSuspiciousVmmProcesses();
    }
}
