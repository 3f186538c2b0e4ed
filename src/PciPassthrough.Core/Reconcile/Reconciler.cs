using PciPassthrough.Devices;
using PciPassthrough.Lifecycle;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Reconcile;

/// <summary>
/// Decides what to repair and what to report from one observation of records, sysfs, the
/// journal and liveness. Pure: no I/O, the same input always gives the same actions, so every
/// rule is tested on plain values. <see cref="ReconcileRunner"/> observes and applies.
/// </summary>
/// <remarks>
/// Per device, in order: an unfinished operation is recovered first and nothing else is decided
/// for that device until it is; a missing or changed device is reported and left alone; a
/// renumbered group is recorded; a quarantined device is reported and left to the operator; an
/// attachment whose instance is gone is cleared; a function left without the driver it should
/// have gets it back; a device bound by the daemon that nobody holds or uses is reported as
/// stranded, and restored when <see cref="ReconcileInput.RestoreStranded"/> says so.
/// </remarks>
public static class Reconciler
{
    public static IReadOnlyList<PlannedAction> Plan(ReconcileInput input)
    {
        var actions = new List<PlannedAction>();
        var inFlight = new HashSet<string>(StringComparer.Ordinal);
        var quarantined = input.Devices.Where(d => d.Record.Quarantine is not null).Select(d => d.Record.Id)
            .ToHashSet(StringComparer.Ordinal);

        foreach (var entry in input.Journal)
        {
            inFlight.Add(entry.DeviceId);
            if (quarantined.Contains(entry.DeviceId) && !input.Startup)
            {
                // A quarantined device may still have a write stuck in the kernel: trying again
                // every interval would only pile up stuck writes. A reset (or a restart) recovers it.
                actions.Add(new PlannedAction(entry.DeviceId, entry.PciAddress, ReconcileKinds.Quarantined,
                    $"unfinished {entry.Operation} (step {entry.Step}) waits for POST /devices/{{id}}/reset", Remedy.None));
                continue;
            }

            var record = input.Devices.FirstOrDefault(d => d.Record.Id == entry.DeviceId)?.Record;
            var kind = entry.Operation is "bind" or "attach" && !entry.BindReachedItsEnd(input.Drivers.GetValueOrDefault, record?.Attachment)
                ? ReconcileKinds.JournalRolledBack
                : ReconcileKinds.JournalCompleted;
            var detail = kind == ReconcileKinds.JournalRolledBack
                ? $"interrupted {entry.Operation} at step {entry.Step}: return {entry.Functions.Count} function(s) to their original drivers"
                : $"interrupted {entry.Operation} at step {entry.Step}: finish it";
            actions.Add(new PlannedAction(entry.DeviceId, entry.PciAddress, kind, detail, Remedy.RecoverJournal) { Entry = entry });
        }

        foreach (var device in input.Devices)
        {
            if (!inFlight.Contains(device.Record.Id))
            {
                PlanDevice(device, input, actions);
            }
        }

        return actions;
    }

    private static void PlanDevice(DeviceObservation device, ReconcileInput input, List<PlannedAction> actions)
    {
        var record = device.Record;
        var address = record.PciAddress;
        if (device.Live is not { } live)
        {
            actions.Add(new PlannedAction(record.Id, address, ReconcileKinds.Missing,
                $"no device at {address}; the record is kept (state missing)", Remedy.None));
            return;
        }

        var vendor = PciId.Format(live.VendorId);
        var product = PciId.Format(live.DeviceId);
        if (vendor != record.VendorId || product != record.DeviceId)
        {
            actions.Add(new PlannedAction(record.Id, address, ReconcileKinds.Changed,
                $"{address} is now {vendor}:{product}, registered as {record.VendorId}:{record.DeviceId}; binding is refused",
                Remedy.None));
            return;
        }

        if (live.IommuGroup != record.IommuGroup)
        {
            actions.Add(new PlannedAction(record.Id, address, ReconcileKinds.GroupRenumbered,
                $"IOMMU group {record.IommuGroup} is now {live.IommuGroup}", Remedy.UpdateGroup) { IommuGroup = live.IommuGroup });
        }

        if (record.Quarantine is { } quarantine)
        {
            actions.Add(new PlannedAction(record.Id, address, ReconcileKinds.Quarantined,
                $"quarantined since {quarantine.Since:u}: {quarantine.Reason}", Remedy.None));
            return;
        }

        var attached = record.Attachment is not null;
        if (record.Attachment is { } attachment && device.Liveness == InstanceState.Gone)
        {
            actions.Add(new PlannedAction(record.Id, address, ReconcileKinds.OrphanCleared,
                $"instance {attachment.InstanceId} is gone" + (attachment.Pid is { } pid ? $" (pid {pid} exited)" : ""),
                Remedy.ClearAttachment) { Attachment = attachment });
            attached = false;
        }

        if (attached)
        {
            return;
        }

        if (record.Binding is null)
        {
            if (live.CurrentDriver is null && record.OriginalDriver is { } original)
            {
                actions.Add(new PlannedAction(record.Id, address, ReconcileKinds.DriverRestored,
                    $"{address} has no driver; binding its original driver {original}", Remedy.RestoreDriver));
            }

            return;
        }

        var lost = record.Binding.Functions.Where(f => input.Drivers.GetValueOrDefault(f.PciAddress) is null && f.OriginalDriver is not null).ToList();
        if (lost.Count > 0)
        {
            actions.Add(new PlannedAction(record.Id, address, ReconcileKinds.DriverRestored,
                $"{string.Join(", ", lost.Select(f => f.PciAddress))} lost vfio-pci and has no driver; returning the device to its original drivers",
                Remedy.RestoreDriver));
            return;
        }

        if (live.CurrentDriver == SysfsPaths.VfioPciDriver && device.VfioHolders.Count == 0)
        {
            actions.Add(new PlannedAction(record.Id, address, ReconcileKinds.StrandedOnVfio,
                input.RestoreStranded
                    ? "bound to vfio-pci by the daemon, attached to no instance and held by no process; returning it to its original driver"
                    : "bound to vfio-pci by the daemon, attached to no instance and held by no process (Reconcile:RestoreStranded is off)",
                input.RestoreStranded ? Remedy.RestoreDriver : Remedy.None));
        }
    }
}
