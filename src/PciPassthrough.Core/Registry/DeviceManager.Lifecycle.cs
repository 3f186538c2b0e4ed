using Microsoft.Extensions.Logging;
using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Lifecycle;
using PciPassthrough.Sysfs;
using PciPassthrough.Vfio;

namespace PciPassthrough.Registry;

public sealed partial class DeviceManager
{
    /// <summary>
    /// Hands the device to an instance, exclusively. The same instance again is answered as the
    /// first time (a retried lifecycle hook is safe); another instance gets <c>in_use</c> naming the
    /// owner. A device not on vfio-pci yet is bound first (its whole group with
    /// <see cref="VfioOptions.GroupBindOnAttach"/>).
    /// </summary>
    public async Task<Device> AttachAsync(string idOrName, AttachCommand command, CancellationToken cancellationToken = default)
    {
        if (!InstanceIds.IsValid(command.InstanceId))
        {
            throw Validation("instance_id", $"must match [A-Za-z0-9][A-Za-z0-9_.:@-]* and be at most {InstanceIds.MaxLength} characters");
        }

        if (command.Pid is <= 0)
        {
            throw Validation("pid", "must be a positive process id");
        }

        var record = Find(idOrName);
        using var held = await _locks.AcquireAsync(LockSet(record), cancellationToken);
        record = Reload(record);
        if (record.Attachment is { } existing)
        {
            if (existing.InstanceId == command.InstanceId)
            {
                // A retried hook: the device is already this instance's. If-Match is not checked
                // here, so a retry carrying the ETag read before the first attempt succeeds too.
                return ToDevice(record);
            }

            throw VfioErrors.Attached(existing.InstanceId);
        }

        Preconditions.Check(record, command.IfMatch);
        long? startTime = null;
        if (command.Pid is { } pid)
        {
            startTime = ProcessInfo.StartTime(sysfs, pid) ?? throw Validation("pid", $"no process {pid} is running");
        }

        var plan = PlanBind(record, new VfioRequest(Group: vfioOptions.Value.GroupBindOnAttach));
        ThrowIfRefused(record, plan);
        record = plan.Functions.Count > 0
            ? await RunBindAsync(record, plan, "attach", cancellationToken, command.InstanceId,
                async (bound, steps) =>
                {
                    // A journaled step of its own: recovery of an attach that stopped anywhere
                    // before the attachment is on disk undoes the bind.
                    await steps.StepAsync($"record the attachment to {command.InstanceId}", CancellationToken.None);
                    return RecordAttachment(bound, command, startTime);
                })
            : RecordAttachment(record, command, startTime);
        LogAttached(logger, record.Id, record.PciAddress, command.InstanceId, command.Pid);
        return ToDevice(record);
    }

    /// <summary>
    /// Takes the device back from an instance. Idempotent: a device attached to nobody is answered
    /// 200. Only the owner may detach (<c>not_owner</c>). With <see cref="DetachCommand.Release"/> the
    /// device also goes back to its original driver.
    /// </summary>
    public async Task<Device> DetachAsync(string idOrName, DetachCommand command, CancellationToken cancellationToken = default)
    {
        if (!InstanceIds.IsValid(command.InstanceId))
        {
            throw Validation("instance_id", $"must match [A-Za-z0-9][A-Za-z0-9_.:@-]* and be at most {InstanceIds.MaxLength} characters");
        }

        var record = Find(idOrName);
        using var held = await _locks.AcquireAsync(LockSet(record), cancellationToken);
        record = Reload(record);
        if (record.Attachment is { } attachment)
        {
            if (attachment.InstanceId != command.InstanceId)
            {
                throw new PassthroughException(ErrorCodes.NotOwner,
                    $"Device is attached to instance {attachment.InstanceId}, not {command.InstanceId}",
                    new Dictionary<string, object?> { ["attached_to"] = attachment.InstanceId });
            }

        }

        // If-Match guards changes only: a retried detach that finds nothing to do answers 200.
        var release = command.Release ? PlanUnbind(record with { Attachment = null }, new VfioRequest()) : null;
        if (record.Attachment is not null || release is { Functions.Count: > 0 })
        {
            Preconditions.Check(record, command.IfMatch);
        }

        // A release that would be refused (the VMM still holds the group, a quarantine) refuses
        // the whole detach: dropping the attachment first would let another instance take a
        // device the first one still uses.
        if (release is not null)
        {
            ThrowIfRefused(record with { Attachment = null }, release);
        }

        // With a release, dropping the claim is the first change of one journaled operation: a
        // crash before the device is back on its driver is finished by recovery, never left with
        // the claim gone and the device still on vfio-pci.
        record = release is null
            ? RecordDetachment(record, command.InstanceId)
            : await RunRestoreAsync(record, release, "detach", cancellationToken,
                async (attached, steps) =>
                {
                    await steps.StepAsync($"drop the claim of {command.InstanceId}", CancellationToken.None);
                    return RecordDetachment(attached, command.InstanceId);
                },
                command.InstanceId);
        return ToDevice(record);
    }

    /// <summary>Gives a device that is on vfio-pci to the instance, after checking nobody else can reach it.</summary>
    private DeviceRecord RecordAttachment(DeviceRecord record, AttachCommand command, long? pidStartTime)
    {
        if (discovery.GetCurrentDriver(record.PciAddress) != SysfsPaths.VfioPciDriver)
        {
            throw new PassthroughException(ErrorCodes.NotBound, $"{record.PciAddress} is not on vfio-pci; it cannot be attached");
        }

        // Bound earlier, the group may have changed since: a member back on a host driver makes
        // the group unusable for a VMM (the kernel refuses to hand it over).
        var blockers = binder.FindGroupBlockers(record.PciAddress, []);
        if (blockers.Count > 0)
        {
            throw VfioErrors.GroupConflict(record.PciAddress, blockers);
        }

        // Attach comes before the VMM opens the group. A process already holding it that is not
        // the VMM named here is some other user: handing the device over would give it to two.
        var strangers = binder.FindHolders([record.PciAddress]).Where(h => h.Pid != command.Pid).ToList();
        if (strangers.Count > 0)
        {
            throw VfioErrors.Held(strangers);
        }

        return registry.Update(record with
        {
            Attachment = new AttachmentRecord
            {
                InstanceId = command.InstanceId,
                Pid = command.Pid,
                PidStartTime = pidStartTime,
                AttachedAt = Now(),
            },
            UpdatedAt = Now(),
        });
    }

    /// <summary>Drops the instance's claim on the device (no kernel change).</summary>
    private DeviceRecord RecordDetachment(DeviceRecord record, string instanceId)
    {
        if (record.Attachment is null)
        {
            return record;
        }

        record = registry.Update(record with { Attachment = null, UpdatedAt = Now() });
        LogDetached(logger, record.Id, record.PciAddress, instanceId);
        return record;
    }

    private static PassthroughException Validation(string field, string message) =>
        new(ErrorCodes.ValidationFailed, $"{field} {message}",
            new Dictionary<string, object?> { ["errors"] = new Dictionary<string, string[]> { [field] = [message] } });

    [LoggerMessage(EventId = 3301, Level = LogLevel.Information,
        Message = "Attached device {DeviceId} at {PciAddress} to instance {InstanceId} (pid {Pid})")]
    private static partial void LogAttached(ILogger logger, string deviceId, PciAddress pciAddress, string instanceId, int? pid);

    [LoggerMessage(EventId = 3302, Level = LogLevel.Information,
        Message = "Detached device {DeviceId} at {PciAddress} from instance {InstanceId}")]
    private static partial void LogDetached(ILogger logger, string deviceId, PciAddress pciAddress, string instanceId);
}
