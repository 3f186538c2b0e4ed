using PciPassthrough.Devices;
using PciPassthrough.Errors;

namespace PciPassthrough.Vfio;

/// <summary>The VFIO operations' domain errors, each with the facts a caller needs to act on it.</summary>
public static class VfioErrors
{
    public static PassthroughException NotAvailable(VfioAvailability availability) =>
        new(ErrorCodes.VfioNotAvailable,
            "vfio-pci cannot be used on this host; missing: " + string.Join(", ", availability.Missing),
            new Dictionary<string, object?> { ["missing"] = availability.Missing });

    public static PassthroughException GroupConflict(PciAddress address, IReadOnlyList<BlockingDevice> blockers) =>
        new(ErrorCodes.IommuGroupConflict,
            $"{address} shares its IOMMU group with devices the host is using: " +
            string.Join(", ", blockers.Select(b => $"{b.PciAddress} ({b.Driver})")),
            new Dictionary<string, object?> { ["blocking_devices"] = blockers });

    public static PassthroughException Held(IReadOnlyList<DeviceHolder> holders) =>
        new(ErrorCodes.InUse,
            "Processes hold the device: " + string.Join(", ", holders.Select(h => $"{h.Command} (pid {h.Pid}) has {h.Path} open")) +
            "; stop them, or retry with ?force=true",
            new Dictionary<string, object?> { ["holders"] = holders });

    public static PassthroughException Attached(string instanceId) =>
        new(ErrorCodes.InUse, $"Device is attached to instance {instanceId}; detach it first",
            new Dictionary<string, object?> { ["attached_to"] = instanceId });

    public static PassthroughException Timeout(string what, IReadOnlyList<DeviceHolder> holders, TimeSpan timeout) =>
        new(ErrorCodes.UnbindTimeout,
            $"The kernel did not finish {what} within {timeout.TotalSeconds:0.###} s; the device is quarantined" +
            (holders.Count > 0 ? "; held by " + string.Join(", ", holders.Select(h => $"{h.Command} (pid {h.Pid})")) : ""),
            new Dictionary<string, object?> { ["holders"] = holders });

    public static PassthroughException Changed(PciAddress address, string recordedVendor, string recordedDevice, string vendor, string device) =>
        new(ErrorCodes.DeviceChanged,
            $"The device at {address} is {vendor}:{device}, not the registered {recordedVendor}:{recordedDevice}; nothing was changed",
            new Dictionary<string, object?>
            {
                ["registered"] = $"{recordedVendor}:{recordedDevice}",
                ["found"] = $"{vendor}:{device}",
            });

    public static PassthroughException Quarantined(string reason) =>
        new(ErrorCodes.Quarantined,
            $"The device is quarantined ({reason}); clear it with POST /devices/{{id}}/reset or a reconcile",
            new Dictionary<string, object?> { ["quarantine_reason"] = reason });

    public static PassthroughException Failed(string message, bool rolledBack, IReadOnlyList<RestoreOutcome> notUndone) =>
        new(ErrorCodes.OperationFailed,
            message + (rolledBack ? "; every change was undone" : "; could not undo: " +
                string.Join("; ", notUndone.Select(o => o.Problem))),
            new Dictionary<string, object?>
            {
                ["rolled_back"] = rolledBack,
                ["not_undone"] = notUndone.Select(o => new
                {
                    pci_address = o.PciAddress.ToString(),
                    expected_driver = o.Expected,
                    actual_driver = o.Actual,
                    problem = o.Problem,
                }).ToList(),
            });
}
