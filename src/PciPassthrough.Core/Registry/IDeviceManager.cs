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

    /// <summary>Unregisters a device; one the daemon bound goes back to its original driver first.</summary>
    /// <exception cref="Errors.PassthroughException"><c>not_found</c>, <c>in_use</c>, <c>quarantined</c>, <c>storage_unavailable</c>.</exception>
    Task DeleteDeviceAsync(string idOrName, CancellationToken cancellationToken = default);

    /// <inheritdoc cref="DeleteDeviceAsync(string, CancellationToken)"/>
    /// <param name="idOrName">Device id or name.</param>
    /// <param name="force">Go ahead although processes hold the device.</param>
    /// <param name="cancellationToken">Cancels the wait for the device's lock.</param>
    Task DeleteDeviceAsync(string idOrName, bool force, CancellationToken cancellationToken);

    /// <inheritdoc cref="DeleteDeviceAsync(string, CancellationToken)"/>
    /// <param name="idOrName">Device id or name.</param>
    /// <param name="force">Go ahead although processes hold the device.</param>
    /// <param name="ifMatch">Revisions the caller expects (If-Match); null: no precondition.</param>
    /// <param name="cancellationToken">Cancels the wait for the device's lock.</param>
    Task DeleteDeviceAsync(string idOrName, bool force, IReadOnlyCollection<string>? ifMatch, CancellationToken cancellationToken);

    /// <summary>Binds a device (or its whole IOMMU group) to vfio-pci; idempotent (the seed's BindToVFIO).</summary>
    Task<VfioResult> BindToVfioAsync(string idOrName, VfioRequest request, CancellationToken cancellationToken = default);

    /// <summary>Returns a device to its original driver; idempotent (the seed's UnbindFromVFIO).</summary>
    Task<VfioResult> UnbindFromVfioAsync(string idOrName, VfioRequest request, CancellationToken cancellationToken = default);

    /// <summary>Attaches a device to an instance, exclusively (the seed's MarkAttached).</summary>
    Task<Device> AttachAsync(string idOrName, AttachCommand command, CancellationToken cancellationToken = default);

    /// <summary>Detaches a device from its instance (the seed's MarkDetached).</summary>
    Task<Device> DetachAsync(string idOrName, DetachCommand command, CancellationToken cancellationToken = default);

    /// <summary>Resets a device through the kernel and lifts a quarantine.</summary>
    Task<Device> ResetAsync(string idOrName, string? method, bool force, CancellationToken cancellationToken = default);
}
