using Microsoft.AspNetCore.Http.HttpResults;
using PciPassthrough.Daemon.Api.Contracts;
using PciPassthrough.Daemon.Api.Problems;
using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Registry;

namespace PciPassthrough.Daemon.Api;

/// <summary>
/// <c>/devices</c>: the registry and discovery. <c>{id}</c> is a device id or name; anything that
/// is neither is <c>404 not_found</c> and is never used to build a path.
/// </summary>
public static class DevicesApi
{
    public static RouteGroupBuilder MapDevicesApi(this IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/devices").WithTags("Devices");

        group.MapGet("", ListDevices)
            .WithName("listDevices")
            .WithSummary("List registered devices")
            .WithDescription("Every registered device, ordered by created_at then id, with its live state on the host.");

        group.MapPost("", CreateDeviceAsync)
            .WithName("createDevice")
            .WithSummary("Register a device for passthrough")
            .WithDescription("Registers the PCI function at pci_address. Without a name, one is generated from the address (pci-0000-a2-00-0).")
            .Accepts<CreateDeviceRequest>("application/json")
            .ProducesErrors(ErrorCodes.InvalidPciAddress, ErrorCodes.InvalidName, ErrorCodes.ValidationFailed,
                ErrorStatus.InvalidJson, ErrorCodes.DeviceNotFound, ErrorCodes.AlreadyExists, ErrorCodes.NameExists,
                ErrorStatus.UnsupportedMediaType, ErrorStatus.PayloadTooLarge, ErrorCodes.StorageUnavailable);

        group.MapGet("/available", ListAvailableDevices)
            .WithName("listAvailableDevices")
            .WithSummary("Discover PCI devices on the host")
            .WithDescription("Every PCI function on the host except bridges (class 0x06), ordered by address. ?type=gpu keeps display controllers only.")
            .ProducesErrors(ErrorCodes.ValidationFailed);

        group.MapGet("/{id}", GetDevice)
            .WithName("getDevice")
            .WithSummary("Get a device by id or name")
            .ProducesErrors(ErrorCodes.NotFound);

        group.MapDelete("/{id}", DeleteDeviceAsync)
            .WithName("deleteDevice")
            .WithSummary("Unregister a device")
            .WithDescription("Refused with in_use while the device is attached to an instance.")
            .ProducesErrors(ErrorCodes.NotFound, ErrorCodes.InUse, ErrorCodes.StorageUnavailable);

        return group;
    }

    public static Ok<List<DeviceDto>> ListDevices(IDeviceManager devices) =>
        TypedResults.Ok(devices.ListDevices().Select(DeviceDto.From).ToList());

    public static async Task<Created<DeviceDto>> CreateDeviceAsync(
        CreateDeviceRequest request, IDeviceManager devices, CancellationToken cancellationToken)
    {
        var device = await devices.CreateDeviceAsync(new CreateDeviceCommand(request.PciAddress!, request.Name), cancellationToken);
        return TypedResults.Created($"/devices/{device.Id}", DeviceDto.From(device));
    }

    /// <param name="type">gpu or pci: keep only devices of that type.</param>
    /// <param name="devices">The device manager.</param>
    public static Ok<List<AvailableDeviceDto>> ListAvailableDevices(string? type, IDeviceManager devices)
    {
        DeviceType? filter = type switch
        {
            null => null,
            "gpu" => DeviceType.Gpu,
            "pci" => DeviceType.Pci,
            _ => throw ApiProblemException.Validation("type", "must be gpu or pci"),
        };
        return TypedResults.Ok(devices.ListAvailableDevices()
            .Where(d => filter is null || d.Device.Type == filter)
            .Select(AvailableDeviceDto.From)
            .ToList());
    }

    public static Ok<DeviceDto> GetDevice(string id, IDeviceManager devices) =>
        TypedResults.Ok(DeviceDto.From(devices.GetDevice(id)));

    public static async Task<NoContent> DeleteDeviceAsync(string id, IDeviceManager devices, CancellationToken cancellationToken)
    {
        await devices.DeleteDeviceAsync(id, cancellationToken);
        return TypedResults.NoContent();
    }
}
