using PciPassthrough.Devices;

namespace PciPassthrough.Registry;

/// <summary>Device registry operations (the registry half of the device manager).</summary>
public interface IDeviceManager
{
    /// <summary>Every registered device, ordered by creation time then id.</summary>
    IReadOnlyList<Device> ListDevices();

    /// <summary>Every PCI function on the host except bridges, with whether it is registered.</summary>
    IReadOnlyList<AvailableDeviceStatus> ListAvailableDevices();

    /// <summary>Registers a device.</summary>
    /// <exception cref="Errors.PassthroughException">
    /// <c>invalid_pci_address</c>, <c>invalid_name</c>, <c>device_not_found</c>, <c>already_exists</c>,
    /// <c>name_exists</c>, <c>storage_unavailable</c>.
    /// </exception>
    Task<Device> CreateDeviceAsync(CreateDeviceCommand command, CancellationToken cancellationToken = default);

    /// <summary>A device by id or name.</summary>
    /// <exception cref="Errors.PassthroughException"><c>not_found</c>.</exception>
    Device GetDevice(string idOrName);

    /// <summary>Unregisters a device.</summary>
    /// <exception cref="Errors.PassthroughException"><c>not_found</c>, <c>in_use</c>, <c>storage_unavailable</c>.</exception>
    Task DeleteDeviceAsync(string idOrName, CancellationToken cancellationToken = default);
}
