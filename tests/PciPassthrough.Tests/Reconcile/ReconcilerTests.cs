using PciPassthrough.Devices;
using PciPassthrough.Discovery;
using PciPassthrough.Journal;
using PciPassthrough.Lifecycle;
using PciPassthrough.Registry;
using PciPassthrough.Vfio;

namespace PciPassthrough.Reconcile.Tests;

/// <summary>Every rule of the pure reconciler, on hand-built observations (no I/O anywhere).</summary>
public sealed class ReconcilerTests
{
    private const string Vfio = "vfio-pci";
    private static readonly DateTime T0 = new(2026, 3, 4, 5, 6, 7, DateTimeKind.Utc);
    private static readonly PciAddress Nvme = PciAddress.Parse("0000:3b:00.0");
    private static readonly PciAddress Gpu = PciAddress.Parse("0000:17:00.0");
    private static readonly PciAddress Audio = PciAddress.Parse("0000:17:00.1");

    private static DeviceRecord NewRecord(string id, PciAddress address, int group = 21, string? originalDriver = "nvme") => new()
    {
        Id = id,
        Name = "dev-" + id,
        PciAddress = address,
        VendorId = "144d",
        DeviceId = "a80a",
        ClassCode = "010802",
        Type = DeviceType.Pci,
        IommuGroup = group,
        CreatedAt = T0,
        UpdatedAt = T0,
        Revision = 3,
        OriginalDriver = originalDriver,
    };

    private static AvailableDevice Live(PciAddress address, string? driver, int group = 21, int vendor = 0x144d, int device = 0xa80a) => new()
    {
        PciAddress = address,
        VendorId = vendor,
        DeviceId = device,
        ClassCode = new PciClassCode(0x010802),
        IommuGroup = group,
        IommuGroupMembers = [address],
        CurrentDriver = driver,
    };

    private static BindingRecord Binding(params (PciAddress Address, string? Original)[] functions) => new()
    {
        BoundAt = T0,
        Functions = [.. functions.Select(f => new BoundFunction { PciAddress = f.Address, OriginalDriver = f.Original })],
    };

    private static AttachmentRecord Attachment(int? pid = 4242) =>
        new() { InstanceId = "vm-1", Pid = pid, PidStartTime = pid is null ? null : 5242, AttachedAt = T0 };

    private static QuarantineRecord Quarantine() => new() { Reason = "the kernel did not finish an unbind", Code = "unbind_timeout", Since = T0 };

    private static JournalEntry Entry(string deviceId, string operation, PciAddress address, params (PciAddress Address, string? Original)[] functions) => new()
    {
        OperationId = "op" + deviceId + operation,
        Operation = operation,
        DeviceId = deviceId,
        PciAddress = address,
        Functions = [.. functions.Select(f => new BoundFunction { PciAddress = f.Address, OriginalDriver = f.Original })],
        Step = 2,
        StepDescription = "unbind",
        StartedAt = T0,
    };

    private static DeviceObservation Observe(DeviceRecord record, AvailableDevice? live, InstanceState? liveness = null, int holders = 0) =>
        new(record, live, liveness, [.. Enumerable.Range(0, holders).Select(i => new DeviceHolder(900 + i, "qemu", "/dev/vfio/21"))]);

    /// <summary>An input whose driver map is what each observation shows for its own address, plus <paramref name="drivers"/>.</summary>
    private static ReconcileInput Input(IReadOnlyList<DeviceObservation> devices, IReadOnlyList<JournalEntry>? journal = null,
        IReadOnlyDictionary<PciAddress, string?>? drivers = null, bool restoreStranded = false, bool startup = false)
    {
        var map = new Dictionary<PciAddress, string?>();
        foreach (var d in devices)
        {
            map[d.Record.PciAddress] = d.Live?.CurrentDriver;
        }

        foreach (var (address, driver) in drivers ?? new Dictionary<PciAddress, string?>())
        {
            map[address] = driver;
        }

        return new ReconcileInput(devices, journal ?? [], map, restoreStranded, startup);
    }

    private static IReadOnlyList<string> Kinds(IReadOnlyList<PlannedAction> actions) => [.. actions.Select(a => a.Kind)];

    // journal

    [Theory]
    [InlineData("bind")]
    [InlineData("attach")]
    public void Plan_InterruptedBindWhoseFunctionsAllReachedVfio_JournalCompleted(string operation)
    {
        var entry = Entry("gpu", operation, Gpu, (Gpu, "nvidia"), (Audio, "snd_hda_intel"));

        var actions = Reconciler.Plan(Input([], [entry], new Dictionary<PciAddress, string?> { [Gpu] = Vfio, [Audio] = Vfio }));

        var action = Assert.Single(actions);
        Assert.Equal(ReconcileKinds.JournalCompleted, action.Kind);
        Assert.Equal(Remedy.RecoverJournal, action.Remedy);
        Assert.Same(entry, action.Entry);
        Assert.Equal("gpu", action.DeviceId);
        Assert.Equal(Gpu, action.PciAddress);
    }

    [Theory]
    [InlineData("bind", Vfio, "snd_hda_intel")]
    [InlineData("bind", Vfio, null)]
    [InlineData("attach", null, Vfio)]
    [InlineData("attach", "nvidia", "snd_hda_intel")]
    [InlineData("bind", null, null)]
    public void Plan_InterruptedBindNotEveryFunctionOnVfio_JournalRolledBack(string operation, string? gpuDriver, string? audioDriver)
    {
        var entry = Entry("gpu", operation, Gpu, (Gpu, "nvidia"), (Audio, "snd_hda_intel"));

        var actions = Reconciler.Plan(Input([], [entry], new Dictionary<PciAddress, string?> { [Gpu] = gpuDriver, [Audio] = audioDriver }));

        var action = Assert.Single(actions);
        Assert.Equal(ReconcileKinds.JournalRolledBack, action.Kind);
        Assert.Equal(Remedy.RecoverJournal, action.Remedy);
        Assert.Same(entry, action.Entry);
    }

    [Fact]
    public void Plan_InterruptedBindWithoutFunctions_JournalRolledBack()
    {
        var entry = Entry("nvme", "bind", Nvme);

        var action = Assert.Single(Reconciler.Plan(Input([], [entry], new Dictionary<PciAddress, string?> { [Nvme] = Vfio })));

        Assert.Equal(ReconcileKinds.JournalRolledBack, action.Kind);
    }

    [Theory]
    [InlineData("unbind", Vfio)]
    [InlineData("unbind", null)]
    [InlineData("delete", Vfio)]
    [InlineData("delete", "nvme")]
    [InlineData("detach", Vfio)]
    [InlineData("detach", null)]
    [InlineData("reset", Vfio)]
    [InlineData("reset", "nvme")]
    public void Plan_InterruptedUnbindDeleteDetachOrReset_JournalCompleted(string operation, string? driver)
    {
        var entry = Entry("nvme", operation, Nvme, (Nvme, "nvme"));

        var action = Assert.Single(Reconciler.Plan(Input([], [entry], new Dictionary<PciAddress, string?> { [Nvme] = driver })));

        Assert.Equal(ReconcileKinds.JournalCompleted, action.Kind);
        Assert.Equal(Remedy.RecoverJournal, action.Remedy);
        Assert.Same(entry, action.Entry);
    }

    [Fact]
    public void Plan_DeviceWithAPendingEntry_GetsNoOtherAction()
    {
        // Without the entry this device would be orphaned and stranded (see the test further down).
        var record = NewRecord("nvme", Nvme) with { Binding = Binding((Nvme, "nvme")), Attachment = Attachment() };
        var entry = Entry("nvme", "detach", Nvme, (Nvme, "nvme"));

        var actions = Reconciler.Plan(Input([Observe(record, Live(Nvme, Vfio), InstanceState.Gone)], [entry]));

        Assert.Equal([ReconcileKinds.JournalCompleted], Kinds(actions));
    }

    [Fact]
    public void Plan_MissingOrChangedDeviceWithAPendingEntry_OnlyTheJournalAction()
    {
        var missing = NewRecord("a", Nvme);
        var changed = NewRecord("b", Gpu, group: 11);
        var journal = new[] { Entry("a", "unbind", Nvme, (Nvme, "nvme")), Entry("b", "bind", Gpu, (Gpu, "nvidia")) };

        var actions = Reconciler.Plan(Input([Observe(missing, null), Observe(changed, Live(Gpu, null, 11, vendor: 0x10de))], journal));

        Assert.Equal([ReconcileKinds.JournalCompleted, ReconcileKinds.JournalRolledBack], Kinds(actions));
        Assert.All(actions, a => Assert.Equal(Remedy.RecoverJournal, a.Remedy));
    }

    [Fact]
    public void Plan_QuarantinedDeviceWithAPendingEntryOutsideStartup_QuarantinedReportOnly()
    {
        var record = NewRecord("nvme", Nvme) with { Quarantine = Quarantine(), Binding = Binding((Nvme, "nvme")) };
        var entry = Entry("nvme", "unbind", Nvme, (Nvme, "nvme"));

        var actions = Reconciler.Plan(Input([Observe(record, Live(Nvme, null))], [entry], startup: false));

        var action = Assert.Single(actions);
        Assert.Equal(ReconcileKinds.Quarantined, action.Kind);
        Assert.Equal(Remedy.None, action.Remedy);
        Assert.Null(action.Entry);
        Assert.Contains("reset", action.Detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("unbind", ReconcileKinds.JournalCompleted)]
    [InlineData("bind", ReconcileKinds.JournalRolledBack)]
    public void Plan_QuarantinedDeviceWithAPendingEntryAtStartup_Recovered(string operation, string kind)
    {
        var record = NewRecord("nvme", Nvme) with { Quarantine = Quarantine(), Binding = Binding((Nvme, "nvme")) };
        var entry = Entry("nvme", operation, Nvme, (Nvme, "nvme"));

        var actions = Reconciler.Plan(Input([Observe(record, Live(Nvme, null))], [entry], startup: true));

        var action = Assert.Single(actions);
        Assert.Equal(kind, action.Kind);
        Assert.Equal(Remedy.RecoverJournal, action.Remedy);
        Assert.Same(entry, action.Entry);
    }

    [Fact]
    public void Plan_EntryOfADeviceWithoutRecord_StillRecovered()
    {
        var entry = Entry("deleted", "delete", Nvme, (Nvme, "nvme"));

        var action = Assert.Single(Reconciler.Plan(Input([], [entry], new Dictionary<PciAddress, string?> { [Nvme] = null })));

        Assert.Equal(ReconcileKinds.JournalCompleted, action.Kind);
        Assert.Equal(Remedy.RecoverJournal, action.Remedy);
    }

    [Fact]
    public void Plan_SeveralEntries_OneActionEachInJournalOrder()
    {
        var first = Entry("a", "unbind", Nvme, (Nvme, "nvme"));
        var second = Entry("b", "bind", Gpu, (Gpu, "nvidia"));

        var actions = Reconciler.Plan(Input([], [first, second], new Dictionary<PciAddress, string?> { [Nvme] = null, [Gpu] = Vfio }));

        Assert.Equal([first, second], actions.Select(a => a.Entry));
        Assert.Equal([ReconcileKinds.JournalCompleted, ReconcileKinds.JournalCompleted], Kinds(actions));
    }

    // per device

    [Fact]
    public void Plan_NothingAtTheAddress_MissingReportedAndNothingElse()
    {
        var record = NewRecord("nvme", Nvme) with { Attachment = Attachment(), Binding = Binding((Nvme, "nvme")) };

        var actions = Reconciler.Plan(Input([Observe(record, null, InstanceState.Gone)]));

        var action = Assert.Single(actions);
        Assert.Equal(ReconcileKinds.Missing, action.Kind);
        Assert.Equal(Remedy.None, action.Remedy);
        Assert.Equal("nvme", action.DeviceId);
    }

    [Theory]
    [InlineData(0x8086, 0xa80a)]
    [InlineData(0x144d, 0xa808)]
    public void Plan_AnotherDeviceAtTheAddress_ChangedReportedAndNothingElse(int vendor, int device)
    {
        var record = NewRecord("nvme", Nvme) with { Attachment = Attachment(), Binding = Binding((Nvme, "nvme")) };

        var actions = Reconciler.Plan(Input([Observe(record, Live(Nvme, Vfio, vendor: vendor, device: device), InstanceState.Gone)]));

        var action = Assert.Single(actions);
        Assert.Equal(ReconcileKinds.Changed, action.Kind);
        Assert.Equal(Remedy.None, action.Remedy);
        Assert.Contains("144d:a80a", action.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void Plan_GroupRenumbered_UpdateGroupWithTheNewNumber()
    {
        var record = NewRecord("nvme", Nvme, group: 21);

        var action = Assert.Single(Reconciler.Plan(Input([Observe(record, Live(Nvme, "nvme", group: 64))])));

        Assert.Equal(ReconcileKinds.GroupRenumbered, action.Kind);
        Assert.Equal(Remedy.UpdateGroup, action.Remedy);
        Assert.Equal(64, action.IommuGroup);
    }

    [Fact]
    public void Plan_GroupRenumberedAndStranded_BothReported()
    {
        var record = NewRecord("nvme", Nvme, group: 21) with { Binding = Binding((Nvme, "nvme")) };

        var actions = Reconciler.Plan(Input([Observe(record, Live(Nvme, Vfio, group: 64))]));

        Assert.Equal([ReconcileKinds.GroupRenumbered, ReconcileKinds.StrandedOnVfio], Kinds(actions));
    }

    [Fact]
    public void Plan_QuarantinedDevice_QuarantinedReportedAndLeftToTheOperator()
    {
        var record = NewRecord("nvme", Nvme) with
        {
            Quarantine = Quarantine(),
            Binding = Binding((Nvme, "nvme")),
            Attachment = Attachment(),
        };

        var actions = Reconciler.Plan(Input([Observe(record, Live(Nvme, Vfio), InstanceState.Gone)], restoreStranded: true));

        var action = Assert.Single(actions);
        Assert.Equal(ReconcileKinds.Quarantined, action.Kind);
        Assert.Equal(Remedy.None, action.Remedy);
        Assert.Contains("did not finish an unbind", action.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void Plan_AttachedInstanceGone_OrphanClearedNamingThatAttachment()
    {
        var attachment = Attachment(pid: 4242);
        var record = NewRecord("nvme", Nvme) with { Binding = Binding((Nvme, "nvme")), Attachment = attachment };

        var actions = Reconciler.Plan(Input([Observe(record, Live(Nvme, Vfio), InstanceState.Gone, holders: 1)]));

        var action = Assert.Single(actions);
        Assert.Equal(ReconcileKinds.OrphanCleared, action.Kind);
        Assert.Equal(Remedy.ClearAttachment, action.Remedy);
        Assert.Same(attachment, action.Attachment);
        Assert.Contains("vm-1", action.Detail, StringComparison.Ordinal);
        Assert.Contains("4242", action.Detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(InstanceState.Running, 4242)]
    [InlineData(InstanceState.Unknown, 4242)]
    [InlineData(InstanceState.Unknown, null)]
    [InlineData(InstanceState.Running, null)]
    public void Plan_AttachedInstanceNotKnownToBeGone_NothingCleared(InstanceState liveness, int? pid)
    {
        var record = NewRecord("nvme", Nvme) with { Binding = Binding((Nvme, "nvme")), Attachment = Attachment(pid) };

        // Nobody holds the group (the VMM may not have opened it yet): still not stranded while attached.
        var actions = Reconciler.Plan(Input([Observe(record, Live(Nvme, Vfio), liveness)], restoreStranded: true));

        Assert.Empty(actions);
    }

    [Fact]
    public void Plan_UnboundDeviceWithoutDriverThatHadOne_DriverRestored()
    {
        var record = NewRecord("nvme", Nvme, originalDriver: "nvme");

        var action = Assert.Single(Reconciler.Plan(Input([Observe(record, Live(Nvme, null))])));

        Assert.Equal(ReconcileKinds.DriverRestored, action.Kind);
        Assert.Equal(Remedy.RestoreDriver, action.Remedy);
        Assert.Contains("nvme", action.Detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(null, null)]
    [InlineData("nvme", "nvme")]
    [InlineData("nvme", "uio_pci_generic")]
    [InlineData(null, Vfio)]
    [InlineData("nvme", Vfio)]
    public void Plan_UnboundDeviceWithADriverOrNoneToGoBackTo_NothingToDo(string? originalDriver, string? driver)
    {
        // A device on vfio-pci that the daemon did not bind is not its to return.
        var record = NewRecord("nvme", Nvme, originalDriver: originalDriver);

        Assert.Empty(Reconciler.Plan(Input([Observe(record, Live(Nvme, driver))], restoreStranded: true)));
    }

    [Fact]
    public void Plan_BoundFunctionLostItsDriver_DriverRestored()
    {
        var record = NewRecord("gpu", Gpu, group: 11, originalDriver: "nvidia") with
        {
            VendorId = "10de",
            DeviceId = "2230",
            Binding = Binding((Gpu, "nvidia"), (Audio, "snd_hda_intel")),
        };

        var actions = Reconciler.Plan(Input(
            [Observe(record, Live(Gpu, Vfio, group: 11, vendor: 0x10de, device: 0x2230))],
            drivers: new Dictionary<PciAddress, string?> { [Audio] = null }));

        var action = Assert.Single(actions);
        Assert.Equal(ReconcileKinds.DriverRestored, action.Kind);
        Assert.Equal(Remedy.RestoreDriver, action.Remedy);
        Assert.Contains(Audio.ToString(), action.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void Plan_BoundFunctionWithoutDriverThatNeverHadOne_NotRestored()
    {
        var record = NewRecord("gpu", Gpu, group: 11) with
        {
            VendorId = "10de",
            DeviceId = "2230",
            Binding = Binding((Gpu, "nvidia"), (Audio, null)),
        };

        var actions = Reconciler.Plan(Input(
            [Observe(record, Live(Gpu, Vfio, group: 11, vendor: 0x10de, device: 0x2230), holders: 1)],
            drivers: new Dictionary<PciAddress, string?> { [Audio] = null }));

        Assert.Empty(actions);
    }

    [Fact]
    public void Plan_BoundByTheDaemonAndUnused_StrandedReportedOnlyByDefault()
    {
        var record = NewRecord("nvme", Nvme) with { Binding = Binding((Nvme, "nvme")) };

        var action = Assert.Single(Reconciler.Plan(Input([Observe(record, Live(Nvme, Vfio))])));

        Assert.Equal(ReconcileKinds.StrandedOnVfio, action.Kind);
        Assert.Equal(Remedy.None, action.Remedy);
        Assert.Contains("RestoreStranded", action.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void Plan_BoundByTheDaemonAndUnusedWithRestoreStranded_StrandedRestored()
    {
        var record = NewRecord("nvme", Nvme) with { Binding = Binding((Nvme, "nvme")) };

        var action = Assert.Single(Reconciler.Plan(Input([Observe(record, Live(Nvme, Vfio))], restoreStranded: true)));

        Assert.Equal(ReconcileKinds.StrandedOnVfio, action.Kind);
        Assert.Equal(Remedy.RestoreDriver, action.Remedy);
    }

    [Fact]
    public void Plan_BoundAndAProcessHoldsTheGroup_NotStranded()
    {
        var record = NewRecord("nvme", Nvme) with { Binding = Binding((Nvme, "nvme")) };

        Assert.Empty(Reconciler.Plan(Input([Observe(record, Live(Nvme, Vfio), holders: 1)], restoreStranded: true)));
    }

    [Fact]
    public void Plan_BoundAndAttachedToARunningInstance_NotStranded()
    {
        var record = NewRecord("nvme", Nvme) with { Binding = Binding((Nvme, "nvme")), Attachment = Attachment() };

        Assert.Empty(Reconciler.Plan(Input([Observe(record, Live(Nvme, Vfio), InstanceState.Running)], restoreStranded: true)));
    }

    [Theory]
    [InlineData(false, Remedy.None)]
    [InlineData(true, Remedy.RestoreDriver)]
    public void Plan_InstanceGoneAndNothingHoldsTheDevice_OrphanClearedAndStrandedInOnePass(bool restoreStranded, Remedy strandedRemedy)
    {
        var record = NewRecord("nvme", Nvme) with { Binding = Binding((Nvme, "nvme")), Attachment = Attachment() };

        var actions = Reconciler.Plan(Input([Observe(record, Live(Nvme, Vfio), InstanceState.Gone)], restoreStranded: restoreStranded));

        Assert.Equal([ReconcileKinds.OrphanCleared, ReconcileKinds.StrandedOnVfio], Kinds(actions));
        Assert.Equal([Remedy.ClearAttachment, strandedRemedy], actions.Select(a => a.Remedy));
    }

    [Fact]
    public void Plan_SeveralDevices_EachJudgedOnItsOwn()
    {
        var stranded = NewRecord("a", Nvme) with { Binding = Binding((Nvme, "nvme")) };
        var missing = NewRecord("b", PciAddress.Parse("0000:d8:00.0"), group: 51);
        var fine = NewRecord("c", PciAddress.Parse("0000:5e:00.0"), group: 31, originalDriver: "i40e");
        var journaled = NewRecord("d", Gpu, group: 11);
        var entry = Entry("d", "bind", Gpu, (Gpu, "nvidia"));

        var actions = Reconciler.Plan(Input(
            [
                Observe(stranded, Live(Nvme, Vfio)),
                Observe(missing, null),
                Observe(fine, Live(fine.PciAddress, "i40e", group: 31)),
                Observe(journaled, Live(Gpu, "nvidia", group: 11)),
            ],
            [entry]));

        Assert.Equal(
            [("d", ReconcileKinds.JournalRolledBack), ("a", ReconcileKinds.StrandedOnVfio), ("b", ReconcileKinds.Missing)],
            actions.Select(a => (a.DeviceId, a.Kind)));
    }

    [Fact]
    public void Plan_SameInput_SameActions()
    {
        var record = NewRecord("nvme", Nvme) with { Binding = Binding((Nvme, "nvme")), Attachment = Attachment() };
        var input = Input([Observe(record, Live(Nvme, Vfio, group: 30), InstanceState.Gone)], restoreStranded: true);

        var first = Reconciler.Plan(input);
        var second = Reconciler.Plan(input);

        Assert.Equal(first, second);
        Assert.Equal(3, first.Count);
    }

    [Fact]
    public void Plan_NothingRegisteredNothingJournaled_NoActions()
    {
        Assert.Empty(Reconciler.Plan(Input([])));
    }
}
