using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Simulation;
using PciPassthrough.Tests.TestDoubles;
using PciPassthrough.Vfio;
using static PciPassthrough.Lifecycle.Tests.LifecycleTestKit;

namespace PciPassthrough.Registry.Tests;

/// <summary>Attach, detach and If-Match on the device manager over the simulated GPU server.</summary>
public sealed class DeviceManagerLifecycleTests : IDisposable
{
    private readonly SimulatedHost _host = new();

    public void Dispose() => _host.Dispose();

    private static VfioOptions GroupBindOnAttach() =>
        new() { GroupBindOnAttach = true, OperationTimeout = TimeSpan.FromSeconds(5), VerifyPollInterval = TimeSpan.FromMilliseconds(2) };

    private string Token(string id) => Preconditions.VersionOf(id, Record(_host, id).Revision);

    private static string[] ErrorFields(PassthroughException e) =>
        [.. ((IReadOnlyDictionary<string, string[]>)e.Details["errors"]!).Keys];

    [Fact]
    public async Task AttachAsync_UnboundNvmeWithPid_BindsAndRecordsAttachment()
    {
        var device = await RegisterAsync(_host, Nvme);
        WriteProcess(_host.HostRoot, 4321, startTime: 987_654);
        var before = DateTime.UtcNow;

        var attached = await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", 4321));

        var after = DateTime.UtcNow;
        Assert.Equal(DeviceState.Attached, attached.State);
        Assert.Equal("vm-1", attached.AttachedTo);
        Assert.True(attached.BoundToVfio);
        Assert.Equal("vfio-pci", attached.CurrentDriver);
        Assert.Equal("nvme", attached.OriginalDriver);
        Assert.Equal("/dev/vfio/21", attached.VfioGroupPath);
        Assert.Equal("/sys/bus/pci/devices/0000:3b:00.0", attached.SysfsPath);
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
        Assert.True(File.Exists(Path.Combine(_host.HostRoot, "dev", "vfio", "21")));

        var record = Record(_host, device.Id);
        var attachment = Assert.IsType<AttachmentRecord>(record.Attachment);
        Assert.Equal("vm-1", attachment.InstanceId);
        Assert.Equal(4321, attachment.Pid);
        Assert.Equal(987_654, attachment.PidStartTime);
        Assert.InRange(attachment.AttachedAt, before, after);
        var bound = Assert.Single(record.Binding!.Functions);
        Assert.Equal(PciAddress.Parse(Nvme), bound.PciAddress);
        Assert.Equal("nvme", bound.OriginalDriver);

        var onDisk = RecordOnDisk(_host, device.Id).GetProperty("attachment");
        Assert.Equal("vm-1", onDisk.GetProperty("instance_id").GetString());
        Assert.Equal(4321, onDisk.GetProperty("pid").GetInt32());
        Assert.Equal(987_654, onDisk.GetProperty("pid_start_time").GetInt64());
        Assert.Empty(JournalFiles(_host));
    }

    [Fact]
    public async Task AttachAsync_WithoutPid_RecordsAttachmentWithoutProcess()
    {
        var device = await RegisterAsync(_host, Nvme);

        var attached = await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        Assert.Equal(DeviceState.Attached, attached.State);
        var attachment = Record(_host, device.Id).Attachment!;
        Assert.Equal("vm-1", attachment.InstanceId);
        Assert.Null(attachment.Pid);
        Assert.Null(attachment.PidStartTime);
    }

    [Fact]
    public async Task AttachAsync_DeviceAlreadyBound_AttachesWithoutRebinding()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        var binding = Record(_host, device.Id).Binding;

        var attached = await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        Assert.Equal(DeviceState.Attached, attached.State);
        Assert.Equal(binding, Record(_host, device.Id).Binding);
        Assert.Equal("nvme", Record(_host, device.Id).Binding!.Functions.Single().OriginalDriver);
    }

    [Fact]
    public async Task AttachAsync_SameInstanceAgain_SameResultAndRecordUntouched()
    {
        var device = await RegisterAsync(_host, Nvme);
        WriteProcess(_host.HostRoot, 4321, startTime: 555);
        var first = await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", 4321));
        var revision = Record(_host, device.Id).Revision;
        var bytes = File.ReadAllBytes(Path.Combine(_host.State.Devices, device.Id + ".json"));

        var second = await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", 4321));

        Assert.Equal(first, second);
        Assert.Equal(revision, Record(_host, device.Id).Revision);
        Assert.Equal(bytes, File.ReadAllBytes(Path.Combine(_host.State.Devices, device.Id + ".json")));
    }

    [Fact]
    public async Task AttachAsync_AnotherInstance_InUseNamingOwnerAndNothingChanged()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        var record = Record(_host, device.Id);

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-2")));

        Assert.Equal(ErrorCodes.InUse, e.Code);
        Assert.Equal("vm-1", e.Details["attached_to"]);
        Assert.Equal(record, Record(_host, device.Id));
    }

    public static TheoryData<string?> InvalidInstanceIds() => new()
    {
        null,
        "",
        new string('a', 200),
        new string('a', 129),
        "vm 1",
        " vm1",
        "vm/1",
        "../etc",
        "vm\01",
        "-vm",
        "vm\n",
    };

    [Theory]
    [MemberData(nameof(InvalidInstanceIds))]
    public async Task AttachAsync_InvalidInstanceId_ValidationFailedAndNothingWritten(string? instanceId)
    {
        var device = await RegisterAsync(_host, Nvme);
        var state = Snapshot(_host.StateRoot);

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.AttachAsync(device.Id, new AttachCommand(instanceId!)));

        Assert.Equal(ErrorCodes.ValidationFailed, e.Code);
        Assert.Equal(["instance_id"], ErrorFields(e));
        Assert.Equal("nvme", _host.DriverOf(Nvme));
        SameSnapshot(state, Snapshot(_host.StateRoot));
    }

    [Theory]
    [MemberData(nameof(InvalidInstanceIds))]
    public async Task DetachAsync_InvalidInstanceId_ValidationFailed(string? instanceId)
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.DetachAsync(device.Id, new DetachCommand(instanceId!)));

        Assert.Equal(ErrorCodes.ValidationFailed, e.Code);
        Assert.Equal("vm-1", Record(_host, device.Id).Attachment!.InstanceId);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(-1)]
    [InlineData(int.MinValue)]
    public async Task AttachAsync_NonPositivePid_ValidationFailed(int pid)
    {
        var device = await RegisterAsync(_host, Nvme);

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", pid)));

        Assert.Equal(ErrorCodes.ValidationFailed, e.Code);
        Assert.Equal(["pid"], ErrorFields(e));
        Assert.Null(Record(_host, device.Id).Attachment);
    }

    [Fact]
    public async Task AttachAsync_PidWithoutProcEntry_ValidationFailedAndDeviceNotBound()
    {
        var device = await RegisterAsync(_host, Nvme);
        var state = Snapshot(_host.StateRoot);

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", 999_999)));

        Assert.Equal(ErrorCodes.ValidationFailed, e.Code);
        Assert.Equal(["pid"], ErrorFields(e));
        Assert.Equal("nvme", _host.DriverOf(Nvme));
        SameSnapshot(state, Snapshot(_host.StateRoot));
    }

    [Fact]
    public async Task AttachAsync_GpuSharingGroupWithoutGroupBind_IommuGroupConflictAndNothingWritten()
    {
        var device = await RegisterAsync(_host, Gpu);
        var tree = Snapshot(_host.HostRoot);
        var state = Snapshot(_host.StateRoot);

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1")));

        Assert.Equal(ErrorCodes.IommuGroupConflict, e.Code);
        var blockers = Assert.IsAssignableFrom<IReadOnlyList<BlockingDevice>>(e.Details["blocking_devices"]);
        var blocker = Assert.Single(blockers);
        Assert.Equal(GpuAudio, blocker.PciAddress);
        Assert.Equal("snd_hda_intel", blocker.Driver);
        SameSnapshot(tree, Snapshot(_host.HostRoot));
        SameSnapshot(state, Snapshot(_host.StateRoot));
    }

    [Fact]
    public async Task AttachAsync_GpuWithGroupBindOnAttach_BindsWholeGroupAndDetachReleaseRestoresIt()
    {
        var manager = Manager(_host, GroupBindOnAttach());
        var device = await RegisterAsync(_host, Gpu);

        var attached = await manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        Assert.Equal(DeviceState.Attached, attached.State);
        Assert.Equal("/dev/vfio/11", attached.VfioGroupPath);
        Assert.Equal("vfio-pci", _host.DriverOf(Gpu));
        Assert.Equal("vfio-pci", _host.DriverOf(GpuAudio));
        var binding = Record(_host, device.Id).Binding!;
        Assert.True(binding.Group);
        Assert.Equal(
            [(PciAddress.Parse(Gpu), "nvidia"), (PciAddress.Parse(GpuAudio), "snd_hda_intel")],
            binding.Functions.Select(f => (f.PciAddress, f.OriginalDriver)).Order().ToArray());

        var released = await manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true));

        Assert.Equal(DeviceState.Ready, released.State);
        Assert.Equal("nvidia", _host.DriverOf(Gpu));
        Assert.Equal("snd_hda_intel", _host.DriverOf(GpuAudio));
        Assert.Null(Record(_host, device.Id).Binding);
    }

    [Fact]
    public async Task AttachAsync_64InstancesAtOnce_ExactlyOneWinsAndTheRecordOnDiskNamesIt()
    {
        var device = await RegisterAsync(_host, Nvme);

        var results = await Task.WhenAll(Enumerable.Range(0, 64).Select(i => Task.Run(async () =>
        {
            try
            {
                return (Instance: $"vm-{i}", Device: (Device?)await _host.Manager.AttachAsync(device.Id, new AttachCommand($"vm-{i}")),
                    Error: (PassthroughException?)null);
            }
            catch (PassthroughException e)
            {
                return (Instance: $"vm-{i}", Device: null, Error: e);
            }
        })));

        var winner = Assert.Single(results, r => r.Device is not null);
        Assert.Equal(winner.Instance, winner.Device!.AttachedTo);
        var losers = results.Where(r => r.Device is null).ToList();
        Assert.Equal(63, losers.Count);
        Assert.All(losers, l =>
        {
            Assert.Equal(ErrorCodes.InUse, l.Error!.Code);
            Assert.Equal(winner.Instance, l.Error.Details["attached_to"]);
        });
        Assert.Equal(winner.Instance, AttachedOnDisk(_host, device.Id));
        Assert.Equal(winner.Instance, Record(_host, device.Id).Attachment!.InstanceId);
        // One bind only: a second would have recorded vfio-pci as the original driver.
        Assert.Equal("nvme", Record(_host, device.Id).Binding!.Functions.Single().OriginalDriver);
        Assert.Empty(JournalFiles(_host));
        using var restarted = _host.Restart();
        Assert.Equal(winner.Instance, Record(restarted, device.Id).Attachment!.InstanceId);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AttachDetach_ConcurrentInterleavings_FinalRecordAgreesWithLastSuccessfulCall(bool preBound)
    {
        var device = await RegisterAsync(_host, Nvme);
        if (preBound)
        {
            await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        }

        for (var round = 0; round < 5; round++)
        {
            var outcomes = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => Task.Run(async () =>
            {
                var instance = $"vm-{round}-{i}";
                var mine = new List<(string Call, string Instance, Device? Device, PassthroughException? Error)>();
                for (var n = 0; n < 3; n++)
                {
                    foreach (var call in new[] { "attach", "detach" })
                    {
                        try
                        {
                            var result = call == "attach"
                                ? await _host.Manager.AttachAsync(device.Id, new AttachCommand(instance))
                                : await _host.Manager.DetachAsync(device.Id, new DetachCommand(instance));
                            mine.Add((call, instance, result, null));
                        }
                        catch (PassthroughException e)
                        {
                            mine.Add((call, instance, null, e));
                        }
                    }
                }

                return mine;
            })));

            var all = outcomes.SelectMany(o => o).ToList();
            var successes = all.Where(o => o.Device is not null).ToList();
            Assert.Contains(successes, s => s.Call == "attach");
            foreach (var s in successes)
            {
                Assert.Equal(s.Call == "attach" ? s.Instance : null, s.Device!.AttachedTo);
            }

            foreach (var failure in all.Where(o => o.Error is not null))
            {
                Assert.Equal(failure.Call == "attach" ? ErrorCodes.InUse : ErrorCodes.NotOwner, failure.Error!.Code);
                Assert.NotEqual(failure.Instance, failure.Error.Details["attached_to"]);
            }

            // Calls that saw the same revision saw the same attachment; the last one is what is stored.
            foreach (var sameRevision in successes.GroupBy(s => s.Device!.Revision))
            {
                Assert.Single(sameRevision.Select(s => s.Device!.AttachedTo).Distinct());
            }

            var last = successes.MaxBy(s => s.Device!.Revision).Device!;
            var record = Record(_host, device.Id);
            Assert.Equal(last.Revision, record.Revision);
            Assert.Equal(last.AttachedTo, record.Attachment?.InstanceId);
            Assert.Equal(last.AttachedTo, AttachedOnDisk(_host, device.Id));
            Assert.Equal("vfio-pci", _host.DriverOf(Nvme));

            if (record.Attachment is { } attachment)
            {
                await _host.Manager.DetachAsync(device.Id, new DetachCommand(attachment.InstanceId));
            }
        }

        Assert.Equal("nvme", Record(_host, device.Id).Binding!.Functions.Single().OriginalDriver);
        Assert.Empty(JournalFiles(_host));
    }

    [Fact]
    public async Task DetachAsync_ByOwner_ClearsAttachmentAndDeviceStaysBound()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        var detached = await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1"));

        Assert.Null(detached.AttachedTo);
        Assert.Equal(DeviceState.Bound, detached.State);
        Assert.Equal("/dev/vfio/21", detached.VfioGroupPath);
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
        var record = Record(_host, device.Id);
        Assert.Null(record.Attachment);
        Assert.NotNull(record.Binding);
        Assert.Null(AttachedOnDisk(_host, device.Id));
    }

    [Fact]
    public async Task DetachAsync_ByOwnerWithRelease_RestoresOriginalDriver()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        var released = await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true));

        Assert.Null(released.AttachedTo);
        Assert.Equal(DeviceState.Ready, released.State);
        Assert.Equal("nvme", released.CurrentDriver);
        Assert.Null(released.VfioGroupPath);
        Assert.Equal("nvme", _host.DriverOf(Nvme));
        Assert.Null(_host.Binder.ReadOverride(PciAddress.Parse(Nvme)));
        Assert.False(File.Exists(Path.Combine(_host.HostRoot, "dev", "vfio", "21")));
        var record = Record(_host, device.Id);
        Assert.Null(record.Attachment);
        Assert.Null(record.Binding);
        Assert.Empty(JournalFiles(_host));
    }

    [Fact]
    public async Task DetachAsync_NotAttached_OkAndNothingChanged()
    {
        var device = await RegisterAsync(_host, Nvme);
        var state = Snapshot(_host.StateRoot);

        var detached = await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1"));

        Assert.Equal(DeviceState.Ready, detached.State);
        SameSnapshot(state, Snapshot(_host.StateRoot));
    }

    [Fact]
    public async Task DetachAsync_NotAttachedWithRelease_UnbindsBoundDevice()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());

        var released = await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true));

        Assert.Equal(DeviceState.Ready, released.State);
        Assert.Equal("nvme", _host.DriverOf(Nvme));
        Assert.Null(Record(_host, device.Id).Binding);
    }

    [Fact]
    public async Task DetachAsync_NotOwner_NotOwnerNamingOwnerAndNothingChanged()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        var state = Snapshot(_host.StateRoot);

        var e = await Assert.ThrowsAsync<PassthroughException>(
            () => _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-2", Release: true)));

        Assert.Equal(ErrorCodes.NotOwner, e.Code);
        Assert.Equal("vm-1", e.Details["attached_to"]);
        SameSnapshot(state, Snapshot(_host.StateRoot));
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
    }

    [Fact]
    public async Task DetachAsync_ReleaseWhileTheVmmStillHoldsTheGroup_RefusedAndAttachmentKept()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        _host.Kernel.AddFault(PciAddress.Parse(Nvme), new SimulatedFault.Holder(4242, "qemu-system-x86"));
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", 4242));

        var e = await Assert.ThrowsAsync<PassthroughException>(
            () => _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true)));

        // A refused request changes nothing: the VMM still has /dev/vfio/21 open, so the device
        // must stay attached, or another instance could be handed a device a VM still uses.
        Assert.Equal(ErrorCodes.InUse, e.Code);
        Assert.Equal("vm-1", Record(_host, device.Id).Attachment?.InstanceId);
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
        await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-2")));
    }

    [Fact]
    public async Task AttachAsync_QuarantinedDevice_QuarantinedAndNotAttached()
    {
        using var host = new SimulatedHost(timeout: TimeSpan.FromSeconds(1),
            faults: new Dictionary<PciAddress, IReadOnlyList<SimulatedFault>> { [PciAddress.Parse(Nvme)] = [new SimulatedFault.UnbindHangs()] });
        var device = await RegisterAsync(host, Nvme);
        var timeout = await Assert.ThrowsAsync<PassthroughException>(() => host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1")));
        Assert.Equal(ErrorCodes.UnbindTimeout, timeout.Code);
        Assert.Null(Record(host, device.Id).Attachment);

        var e = await Assert.ThrowsAsync<PassthroughException>(() => host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1")));

        Assert.Equal(ErrorCodes.Quarantined, e.Code);
        Assert.Null(Record(host, device.Id).Attachment);
        host.Kernel.ReleaseHangs();
    }

    [Fact]
    public async Task DeleteDeviceAsync_WhileAttached_InUseNamingOwner()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.DeleteDeviceAsync(device.Id));

        Assert.Equal(ErrorCodes.InUse, e.Code);
        Assert.Equal("vm-1", e.Details["attached_to"]);
        Assert.NotNull(_host.Registry.Find(device.Id));
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
    }

    [Fact]
    public async Task UnbindFromVfioAsync_WhileAttached_InUseNamingOwner()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        var record = Record(_host, device.Id);

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest()));

        Assert.Equal(ErrorCodes.InUse, e.Code);
        Assert.Equal("vm-1", e.Details["attached_to"]);
        Assert.Equal(record, Record(_host, device.Id));
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
    }

    [Fact]
    public async Task ResetAsync_WhileAttached_InUseNamingOwnerAndNoReset()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));

        var e = await Assert.ThrowsAsync<PassthroughException>(() => _host.Manager.ResetAsync(device.Id, null, force: true));

        Assert.Equal(ErrorCodes.InUse, e.Code);
        Assert.Equal("vm-1", e.Details["attached_to"]);
        Assert.Equal(0, _host.Kernel.ResetCount(PciAddress.Parse(Nvme)));
    }

    [Fact]
    public async Task BindToVfioAsync_StaleETag_PreconditionFailedAndNothingChanged()
    {
        var device = await RegisterAsync(_host, Nvme);
        var stale = Token(device.Id);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true));
        var state = Snapshot(_host.StateRoot);

        var e = await Assert.ThrowsAsync<PassthroughException>(
            () => _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(IfMatch: [stale])));

        Assert.Equal(ErrorCodes.PreconditionFailed, e.Code);
        Assert.Equal($"\"{Token(device.Id)}\"", e.Details["current_etag"]);
        Assert.Equal("nvme", _host.DriverOf(Nvme));
        SameSnapshot(state, Snapshot(_host.StateRoot));

        var bound = await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest(IfMatch: [Token(device.Id)]));
        Assert.Equal(DeviceState.Bound, bound.Device!.State);
    }

    [Fact]
    public async Task UnbindFromVfioAsync_StaleETag_PreconditionFailedAndNothingChanged()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        var stale = Token(device.Id);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1"));
        var state = Snapshot(_host.StateRoot);

        var e = await Assert.ThrowsAsync<PassthroughException>(
            () => _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest(IfMatch: [stale])));

        Assert.Equal(ErrorCodes.PreconditionFailed, e.Code);
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
        SameSnapshot(state, Snapshot(_host.StateRoot));

        var unbound = await _host.Manager.UnbindFromVfioAsync(device.Id, new VfioRequest(IfMatch: [Token(device.Id)]));
        Assert.Equal(DeviceState.Ready, unbound.Device!.State);
    }

    [Fact]
    public async Task AttachAsync_StaleETag_PreconditionFailedAndNotAttached()
    {
        var device = await RegisterAsync(_host, Nvme);
        var stale = Token(device.Id);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        var state = Snapshot(_host.StateRoot);

        var e = await Assert.ThrowsAsync<PassthroughException>(
            () => _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", IfMatch: [stale])));

        Assert.Equal(ErrorCodes.PreconditionFailed, e.Code);
        SameSnapshot(state, Snapshot(_host.StateRoot));

        var attached = await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", IfMatch: [Token(device.Id)]));
        Assert.Equal("vm-1", attached.AttachedTo);
    }

    [Fact]
    public async Task AttachAsync_StaleETagOnUnboundDevice_PreconditionFailedBeforeAnyKernelWrite()
    {
        var device = await RegisterAsync(_host, Nvme);
        var stale = Preconditions.VersionOf(device.Id, device.Revision - 1);
        var tree = Snapshot(_host.HostRoot);

        var e = await Assert.ThrowsAsync<PassthroughException>(
            () => _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", IfMatch: [stale])));

        Assert.Equal(ErrorCodes.PreconditionFailed, e.Code);
        SameSnapshot(tree, Snapshot(_host.HostRoot));
    }

    [Fact]
    public async Task DetachAsync_ETagReadBeforeTheAttach_PreconditionFailedAndStillAttached()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        var beforeAttach = Token(device.Id);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        var state = Snapshot(_host.StateRoot);

        var e = await Assert.ThrowsAsync<PassthroughException>(
            () => _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", IfMatch: [beforeAttach])));

        Assert.Equal(ErrorCodes.PreconditionFailed, e.Code);
        SameSnapshot(state, Snapshot(_host.StateRoot));

        var detached = await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", IfMatch: [Token(device.Id)]));
        Assert.Null(detached.AttachedTo);
    }

    [Fact]
    public async Task DeleteDeviceAsync_StaleETag_PreconditionFailedAndRecordKept()
    {
        var device = await RegisterAsync(_host, Nvme);
        var stale = Token(device.Id);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        var state = Snapshot(_host.StateRoot);

        var e = await Assert.ThrowsAsync<PassthroughException>(
            () => _host.Manager.DeleteDeviceAsync(device.Id, force: false, ifMatch: [stale], CancellationToken.None));

        Assert.Equal(ErrorCodes.PreconditionFailed, e.Code);
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
        SameSnapshot(state, Snapshot(_host.StateRoot));

        await _host.Manager.DeleteDeviceAsync(device.Id, force: false, ifMatch: [Token(device.Id)], CancellationToken.None);
        Assert.Null(_host.Registry.Find(device.Id));
        Assert.Equal("nvme", _host.DriverOf(Nvme));
    }

    [Fact]
    public async Task AttachAsync_IfMatchListingStaleAndCurrent_Passes()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());

        var attached = await _host.Manager.AttachAsync(device.Id,
            new AttachCommand("vm-1", IfMatch: [Preconditions.VersionOf(device.Id, 1), Token(device.Id)]));

        Assert.Equal("vm-1", attached.AttachedTo);
    }

    [Fact]
    public async Task AttachAsync_ETagOfAnotherDeviceWithTheSameRevision_PreconditionFailed()
    {
        var device = await RegisterAsync(_host, Nvme);
        var other = await RegisterAsync(_host, Nvme2);
        Assert.Equal(device.Revision, other.Revision);

        var e = await Assert.ThrowsAsync<PassthroughException>(
            () => _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", IfMatch: [other.Version])));

        Assert.Equal(ErrorCodes.PreconditionFailed, e.Code);
    }

    [Fact]
    public async Task AttachAsync_RetryThatFindsItsWorkDone_OkEvenWithTheNowStaleETag()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());
        var token = Token(device.Id);
        var first = await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", IfMatch: [token]));
        Assert.NotEqual(token, first.Version);

        var retry = await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1", IfMatch: [token]));

        Assert.Equal(first, retry);
    }

    [Fact]
    public async Task DetachAsync_RetryThatFindsItsWorkDone_OkEvenWithTheNowStaleETag()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        var token = Token(device.Id);
        var first = await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", IfMatch: [token]));
        Assert.NotEqual(token, first.Version);

        var retry = await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", IfMatch: [token]));

        Assert.Equal(first, retry);
    }

    [Fact]
    public async Task DetachAsync_ReleaseRetryThatFindsItsWorkDone_OkEvenWithTheNowStaleETag()
    {
        var device = await RegisterAsync(_host, Nvme);
        await _host.Manager.AttachAsync(device.Id, new AttachCommand("vm-1"));
        var token = Token(device.Id);
        var first = await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true, IfMatch: [token]));
        Assert.Equal("nvme", _host.DriverOf(Nvme));

        var retry = await _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true, IfMatch: [token]));

        Assert.Equal(first, retry);
    }

    [Fact]
    public async Task DetachAsync_ReleaseOfABoundDeviceWithStaleETag_PreconditionFailedAndStillBound()
    {
        var device = await RegisterAsync(_host, Nvme);
        var stale = Token(device.Id);
        await _host.Manager.BindToVfioAsync(device.Id, new VfioRequest());

        var e = await Assert.ThrowsAsync<PassthroughException>(
            () => _host.Manager.DetachAsync(device.Id, new DetachCommand("vm-1", Release: true, IfMatch: [stale])));

        Assert.Equal(ErrorCodes.PreconditionFailed, e.Code);
        Assert.Equal("vfio-pci", _host.DriverOf(Nvme));
    }
    [Fact]
    public async Task AttachAsync_ProcessAlreadyHoldsTheGroup_InUseNamingItUnlessItIsTheVmm()
    {
        var device = await _host.Manager.CreateDeviceAsync(new Registry.CreateDeviceCommand("0000:3b:00.0", "nvme0"));
        await _host.Manager.BindToVfioAsync(device.Id, new Registry.VfioRequest());
        _host.Kernel.AddFault(PciAddress.Parse("0000:3b:00.0"), new SimulatedFault.Holder(4242, "qemu-system"));

        var stranger = await Assert.ThrowsAsync<PassthroughException>(() =>
            _host.Manager.AttachAsync(device.Id, new Registry.AttachCommand("vm-1")));
        var own = await _host.Manager.AttachAsync(device.Id, new Registry.AttachCommand("vm-1", 4242));

        Assert.Equal(ErrorCodes.InUse, stranger.Code);
        var holder = Assert.Single(Assert.IsAssignableFrom<IReadOnlyList<DeviceHolder>>(stranger.Details["holders"]));
        Assert.Equal((4242, "/dev/vfio/21"), (holder.Pid, holder.Path));
        Assert.Equal("vm-1", own.AttachedTo);
    }

    [Fact]
    public async Task AttachAsync_GroupMemberBackOnAHostDriver_IommuGroupConflictAndNotAttached()
    {
        var device = await _host.Manager.CreateDeviceAsync(new Registry.CreateDeviceCommand("0000:17:00.0", "gpu0"));
        await _host.Manager.BindToVfioAsync(device.Id, new Registry.VfioRequest(Group: true));
        // Someone gives the audio function back to the host behind the daemon's back.
        _host.Kernel.Write("/sys/bus/pci/devices/0000:17:00.1/driver_override", "\n");
        _host.Kernel.Write("/sys/bus/pci/drivers/vfio-pci/unbind", "0000:17:00.1");
        _host.Kernel.Write("/sys/bus/pci/drivers_probe", "0000:17:00.1");
        Assert.Equal("snd_hda_intel", _host.DriverOf("0000:17:00.1"));

        var e = await Assert.ThrowsAsync<PassthroughException>(() =>
            _host.Manager.AttachAsync(device.Id, new Registry.AttachCommand("vm-1")));

        Assert.Equal(ErrorCodes.IommuGroupConflict, e.Code);
        Assert.Null(_host.Registry.Find(device.Id)!.Attachment);
    }
}
