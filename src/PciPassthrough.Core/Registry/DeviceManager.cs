using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using PciPassthrough.Concurrency;
using PciPassthrough.Devices;
using PciPassthrough.Discovery;
using PciPassthrough.Errors;
using PciPassthrough.Journal;
using PciPassthrough.Sysfs;
using PciPassthrough.Vfio;

namespace PciPassthrough.Registry;

/// <summary>
/// The device manager: registered devices (persisted by <see cref="DeviceRegistry"/>) joined with
/// what the host shows (<see cref="IPciDiscovery"/>), and the operations that change a device's
/// driver (<see cref="SysfsVfioBinder"/>), each journaled (<see cref="OperationJournal"/>).
/// Operations are serialized per IOMMU group (a group is one unit for the kernel); operations on
/// different groups run side by side, and no lock is held across the whole registry.
/// Host services that hold a device (<see cref="VfioOptions.StoppableServices"/>) are stopped for
/// the length of a bind through <paramref name="services"/>, and started again after it.
/// </summary>
public sealed partial class DeviceManager(
    DeviceRegistry registry,
    IPciDiscovery discovery,
    ISysfs sysfs,
    SysfsVfioBinder binder,
    OperationJournal journal,
    IOptions<VfioOptions> vfioOptions,
    TimeProvider time,
    ILogger<DeviceManager> logger,
    IServiceControl? services = null) : IDeviceManager
{
    private readonly KeyedLock<PciAddress> _locks = new();

    /// <summary>The per-function locks (held by address; group operations hold every member).</summary>
    public KeyedLock<PciAddress> Locks => _locks;

    public IReadOnlyList<Device> ListDevices() => registry.All().Select(ToDevice).ToList();

    public IReadOnlyList<AvailableDeviceStatus> ListAvailableDevices() =>
        discovery.DiscoverAvailableDevices()
            .Select(d => registry.FindByAddress(d.PciAddress) is { } r
                ? new AvailableDeviceStatus(d, true, r.Id)
                : new AvailableDeviceStatus(d, false, null))
            .ToList();

    public async Task<Device> CreateDeviceAsync(CreateDeviceCommand command, CancellationToken cancellationToken = default)
    {
        // The address first, as everything else hangs off it; then the name.
        if (!PciAddress.TryParse(command.PciAddress, out var address))
        {
            throw DeviceErrors.InvalidPciAddress();
        }

        if (command.Name is not null && !DeviceNames.IsValid(command.Name))
        {
            throw DeviceErrors.InvalidName();
        }

        using var held = await _locks.AcquireAsync(address, cancellationToken);
        var info = discovery.GetDeviceInfo(address) ?? throw DeviceErrors.DeviceNotFound(address.ToString());
        if (info.IsBridge)
        {
            throw new PassthroughException(ErrorCodes.ValidationFailed,
                $"{address} is a PCI bridge (class {info.ClassCode}); bridges cannot be passed through",
                new Dictionary<string, object?>
                {
                    ["errors"] = new Dictionary<string, string[]> { ["pci_address"] = ["is a PCI bridge"] },
                });
        }

        var now = time.GetUtcNow().UtcDateTime;
        var record = new DeviceRecord
        {
            Id = Cuid2Generator.Shared.Next(),
            Name = command.Name ?? DeviceNames.FromAddress(address),
            PciAddress = address,
            VendorId = PciId.Format(info.VendorId),
            DeviceId = PciId.Format(info.DeviceId),
            ClassCode = info.ClassCode.ToString(),
            Type = info.Type,
            IommuGroup = info.IommuGroup,
            CreatedAt = now,
            UpdatedAt = now,
            // A device found on vfio-pci already has no known host driver to go back to.
            OriginalDriver = info.CurrentDriver == SysfsPaths.VfioPciDriver ? null : info.CurrentDriver,
        };

        registry.Add(record);
        LogRegistered(logger, record.Id, record.Name, address, info.CurrentDriver);
        return ToDevice(record, info);
    }

    public Device GetDevice(string idOrName) => ToDevice(Find(idOrName));

    /// <summary>Unregisters a device; a device the daemon bound goes back to its original driver first.</summary>
    public Task DeleteDeviceAsync(string idOrName, CancellationToken cancellationToken = default) =>
        DeleteDeviceAsync(idOrName, force: false, cancellationToken);

    internal DeviceRecord Find(string idOrName) => registry.Find(idOrName) ?? throw DeviceErrors.NotFound();

    /// <summary>Joins a record with the host's view of its address.</summary>
    public Device ToDevice(DeviceRecord record) => ToDevice(record, discovery.GetDeviceInfo(record.PciAddress));

    private Device ToDevice(DeviceRecord record, AvailableDevice? live)
    {
        var changed = live is not null && !SameIdentity(record, live);
        var driver = live?.CurrentDriver;
        var bound = !changed && driver == SysfsPaths.VfioPciDriver;
        var group = live?.IommuGroup ?? record.IommuGroup;
        string? vfioGroupPath = null;
        if (bound && group >= 0 && sysfs.Exists(SysfsPaths.VfioGroup(group)))
        {
            vfioGroupPath = SysfsPaths.VfioGroup(group);
        }

        var state = live is null ? DeviceState.Missing
            : changed ? DeviceState.Changed
            : record.Quarantine is not null ? DeviceState.Quarantined
            : record.Attachment is not null ? DeviceState.Attached
            : bound ? DeviceState.Bound
            : DeviceState.Ready;

        var own = record.Binding?.Functions.FirstOrDefault(f => f.PciAddress == record.PciAddress);
        return new Device
        {
            Id = record.Id,
            Name = record.Name,
            Type = record.Type,
            PciAddress = record.PciAddress,
            VendorId = record.VendorId,
            DeviceId = record.DeviceId,
            ClassCode = record.ClassCode,
            // Names describe the registered device; with another device at the address, or none,
            // there is nothing right to show.
            VendorName = changed ? null : live?.VendorName,
            DeviceName = changed ? null : live?.DeviceName,
            IommuGroup = group,
            BoundToVfio = bound,
            AttachedTo = record.Attachment?.InstanceId,
            CreatedAt = record.CreatedAt,
            CurrentDriver = driver,
            OriginalDriver = own is not null ? own.OriginalDriver : record.OriginalDriver,
            NumaNode = live?.NumaNode,
            SysfsPath = discovery.GetDeviceSysfsPath(record.PciAddress),
            VfioGroupPath = vfioGroupPath,
            State = state,
            Revision = record.Revision,
            QuarantineReason = record.Quarantine?.Reason,
        };
    }

    private static bool SameIdentity(DeviceRecord record, AvailableDevice live) =>
        PciId.Format(live.VendorId) == record.VendorId && PciId.Format(live.DeviceId) == record.DeviceId;

    [LoggerMessage(EventId = 3001, Level = LogLevel.Information,
        Message = "Registered device {DeviceId} ({DeviceName}) at {PciAddress}, driver {Driver}")]
    private static partial void LogRegistered(ILogger logger, string deviceId, string deviceName, PciAddress pciAddress, string? driver);

    [LoggerMessage(EventId = 3002, Level = LogLevel.Information,
        Message = "Deleted device {DeviceId} ({DeviceName}) at {PciAddress}")]
    private static partial void LogDeleted(ILogger logger, string deviceId, string deviceName, PciAddress pciAddress);
}
