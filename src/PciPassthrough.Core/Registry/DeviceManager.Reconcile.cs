using PciPassthrough.Errors;
using PciPassthrough.Vfio;

namespace PciPassthrough.Registry;

/// <summary>The repairs a reconcile applies, each re-checked under the device's lock.</summary>
public sealed partial class DeviceManager
{
    /// <summary>Forgets an attachment whose instance is gone; false when the device's attachment changed meanwhile.</summary>
    public async Task<bool> ClearAttachmentAsync(string deviceId, AttachmentRecord expected, CancellationToken cancellationToken = default)
    {
        var record = Find(deviceId);
        using var held = await _locks.AcquireAsync(LockSet(record), cancellationToken);
        record = Reload(record);
        if (record.Attachment != expected)
        {
            return false;
        }

        registry.Update(record with { Attachment = null, UpdatedAt = Now() });
        return true;
    }

    /// <summary>
    /// Returns an unattached, unquarantined device (and what was bound with it) to its original
    /// driver; a device the daemon never bound gets its registered driver back.
    /// </summary>
    public async Task<string> RestoreDriverAsync(string deviceId, CancellationToken cancellationToken = default)
    {
        var record = Find(deviceId);
        using var held = await _locks.AcquireAsync(LockSet(record), cancellationToken);
        record = Reload(record);
        if (record.Attachment is not null || record.Quarantine is not null)
        {
            throw new PassthroughException(ErrorCodes.InUse, "the device was attached or quarantined meanwhile; left alone");
        }

        IReadOnlyList<BoundFunction> functions = record.Binding?.Functions ??
            [new BoundFunction { PciAddress = record.PciAddress, OriginalDriver = record.OriginalDriver }];
        var steps = binder.PlanRestore(functions);
        var toRestore = functions.Where(f => steps.Any(s => s.PciAddress == f.PciAddress.ToString())).ToList();
        var holders = binder.FindHolders(toRestore.Select(f => f.PciAddress));
        if (holders.Count > 0)
        {
            throw VfioErrors.Held(holders);
        }

        var plan = new OperationPlan
        {
            Operation = "unbind",
            DeviceId = record.Id,
            PciAddress = record.PciAddress.ToString(),
            IommuGroup = record.IommuGroup,
            Group = record.Binding?.Group ?? false,
            Steps = steps,
            Members = [],
            Blockers = [],
            Holders = [],
            Functions = toRestore,
        };
        await RunRestoreAsync(record, plan, "unbind", cancellationToken);
        return string.Join(", ", toRestore.Select(f => $"{f.PciAddress} on {f.OriginalDriver ?? "no driver"}"));
    }

    /// <summary>Records the IOMMU group number the kernel shows now.</summary>
    public async Task UpdateIommuGroupAsync(string deviceId, int group, CancellationToken cancellationToken = default)
    {
        var record = Find(deviceId);
        using var held = await _locks.AcquireAsync(LockSet(record), cancellationToken);
        record = Reload(record);
        if (record.IommuGroup != group)
        {
            registry.Update(record with { IommuGroup = group, UpdatedAt = Now() });
        }
    }
}
