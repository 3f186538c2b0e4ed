using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using PciPassthrough.Daemon.Api.Contracts;
using PciPassthrough.Daemon.Api.Problems;
using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Registry;

namespace PciPassthrough.Daemon.Api;

/// <summary>
/// <c>/devices</c>: the registry, discovery, VFIO binding and attachment. <c>{id}</c> is a device id
/// or name; anything that is neither is <c>404 not_found</c> and is never used to build a path.
/// Device responses carry an <c>ETag</c>; changes honour <c>If-Match</c> (<c>412 precondition_failed</c>).
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
            .RequireReady()
            .WithName("createDevice")
            .WithSummary("Register a device for passthrough")
            .WithDescription("Registers the PCI function at pci_address. Without a name, one is generated from the address (pci-0000-a2-00-0).")
            .Accepts<CreateDeviceRequest>("application/json")
            .ProducesErrors(ErrorCodes.InvalidPciAddress, ErrorCodes.InvalidName, ErrorCodes.ValidationFailed,
                ErrorStatus.InvalidJson, ErrorCodes.DeviceNotFound, ErrorCodes.AlreadyExists, ErrorCodes.NameExists,
                ErrorStatus.UnsupportedMediaType, ErrorStatus.PayloadTooLarge, ErrorCodes.StorageUnavailable, ErrorStatus.NotReady);

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
            .RecordsOperation("delete")
            .WithSummary("Unregister a device")
            .WithDescription("Refused with in_use while the device is attached to an instance. A device the daemon bound is returned to its original driver first.")
            .RequireReady()
            .ProducesErrors(ErrorCodes.NotFound, ErrorCodes.InUse, ErrorCodes.Quarantined, ErrorCodes.OperationFailed,
                ErrorCodes.UnbindTimeout, ErrorCodes.PreconditionFailed, ErrorCodes.StorageUnavailable, ErrorStatus.NotReady);

        group.MapPost("/{id}/bind", BindDeviceAsync)
            .WithName("bindDevice")
            .RecordsOperation("bind")
            .WithSummary("Bind a device to vfio-pci")
            .WithDescription(
                "driver_override, unbind from the current driver, drivers_probe, then verify the driver link and /dev/vfio/N; " +
                "any failure is rolled back. Idempotent. ?group=true binds every endpoint of the IOMMU group; " +
                "?dry_run=true returns the plan and writes nothing; ?force=true goes ahead although processes hold the device.")
            .RequireReady()
            .Produces<OperationPlanDto>(StatusCodes.Status200OK)
            .ProducesErrors(ErrorCodes.NotFound, ErrorCodes.DeviceNotFound, ErrorCodes.DeviceChanged, ErrorCodes.Quarantined,
                ErrorCodes.VfioNotAvailable, ErrorCodes.IommuGroupConflict, ErrorCodes.InUse, ErrorCodes.UnbindTimeout,
                ErrorCodes.OperationFailed, ErrorCodes.PreconditionFailed, ErrorCodes.StorageUnavailable,
                ErrorCodes.ValidationFailed, ErrorStatus.NotReady);

        group.MapPost("/{id}/unbind", UnbindDeviceAsync)
            .WithName("unbindDevice")
            .RecordsOperation("unbind")
            .WithSummary("Return a device to its original driver")
            .WithDescription(
                "Restores the driver and driver_override the device had before the daemon bound it (and every function bound with it). " +
                "Idempotent; refused while attached. ?dry_run=true returns the plan.")
            .RequireReady()
            .Produces<OperationPlanDto>(StatusCodes.Status200OK)
            .ProducesErrors(ErrorCodes.NotFound, ErrorCodes.DeviceNotFound, ErrorCodes.DeviceChanged, ErrorCodes.Quarantined,
                ErrorCodes.InUse, ErrorCodes.UnbindTimeout, ErrorCodes.OperationFailed, ErrorCodes.PreconditionFailed,
                ErrorCodes.StorageUnavailable, ErrorCodes.ValidationFailed, ErrorStatus.NotReady);

        group.MapPost("/{id}/attach", AttachDeviceAsync)
            .WithName("attachDevice")
            .RecordsOperation("attach")
            .WithSummary("Attach a device to an instance")
            .WithDescription(
                "Exclusive: another instance gets in_use with attached_to; the same instance again gets 200 and the same body. " +
                "Binds to vfio-pci first when needed. The response carries sysfs_path and vfio_group_path for the VMM.")
            .RequireReady()
            .Accepts<AttachRequest>("application/json")
            .ProducesErrors(ErrorCodes.NotFound, ErrorCodes.InUse, ErrorCodes.DeviceNotFound, ErrorCodes.DeviceChanged,
                ErrorCodes.Quarantined, ErrorCodes.VfioNotAvailable, ErrorCodes.IommuGroupConflict, ErrorCodes.UnbindTimeout,
                ErrorCodes.OperationFailed, ErrorCodes.NotBound, ErrorCodes.PreconditionFailed, ErrorCodes.ValidationFailed,
                ErrorStatus.InvalidJson, ErrorStatus.UnsupportedMediaType, ErrorCodes.StorageUnavailable, ErrorStatus.NotReady);

        group.MapPost("/{id}/detach", DetachDeviceAsync)
            .WithName("detachDevice")
            .RecordsOperation("detach")
            .WithSummary("Detach a device from its instance")
            .WithDescription("Idempotent; another instance gets not_owner. release: true also returns the device to its original driver.")
            .RequireReady()
            .Accepts<DetachRequest>("application/json")
            .ProducesErrors(ErrorCodes.NotFound, ErrorCodes.NotOwner, ErrorCodes.Quarantined, ErrorCodes.InUse,
                ErrorCodes.UnbindTimeout, ErrorCodes.OperationFailed, ErrorCodes.PreconditionFailed, ErrorCodes.ValidationFailed,
                ErrorStatus.InvalidJson, ErrorStatus.UnsupportedMediaType, ErrorCodes.StorageUnavailable, ErrorStatus.NotReady);

        group.MapPost("/{id}/reset", ResetDeviceAsync)
            .WithName("resetDevice")
            .RecordsOperation("reset")
            .WithSummary("Reset a device through the kernel")
            .WithDescription("Writes the function's reset attribute (?method= selects flr, pm, bus... for this reset), " +
                "finishes or undoes anything left half-done and clears a quarantine. Refused while attached.")
            .RequireReady()
            .ProducesErrors(ErrorCodes.NotFound, ErrorCodes.DeviceNotFound, ErrorCodes.DeviceChanged, ErrorCodes.InUse,
                ErrorCodes.Quarantined, ErrorCodes.ResetUnsupported, ErrorCodes.UnbindTimeout, ErrorCodes.OperationFailed,
                ErrorCodes.ValidationFailed, ErrorStatus.NotReady);

        return group;
    }

    public static Ok<List<DeviceDto>> ListDevices(IDeviceManager devices) =>
        TypedResults.Ok(devices.ListDevices().Select(DeviceDto.From).ToList());

    public static async Task<Created<DeviceDto>> CreateDeviceAsync(
        CreateDeviceRequest request, IDeviceManager devices, HttpContext context, CancellationToken cancellationToken)
    {
        var device = await devices.CreateDeviceAsync(new CreateDeviceCommand(request.PciAddress!, request.Name), cancellationToken);
        return TypedResults.Created($"/devices/{device.Id}", DeviceHttp.Respond(context, device));
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

    public static Ok<DeviceDto> GetDevice(string id, IDeviceManager devices, HttpContext context) =>
        TypedResults.Ok(DeviceHttp.Respond(context, devices.GetDevice(id)));

    /// <param name="id">Device id or name.</param>
    /// <param name="force">Go ahead although processes hold the device.</param>
    /// <param name="devices">The device manager.</param>
    /// <param name="context">The request.</param>
    /// <param name="cancellationToken">Request aborted.</param>
    public static async Task<NoContent> DeleteDeviceAsync(string id, bool? force, IDeviceManager devices, HttpContext context,
        CancellationToken cancellationToken)
    {
        await devices.DeleteDeviceAsync(id, force ?? false, DeviceHttp.IfMatch(context.Request), cancellationToken);
        return TypedResults.NoContent();
    }

    /// <param name="id">Device id or name.</param>
    /// <param name="group">Bind every endpoint of the IOMMU group with the device.</param>
    /// <param name="dryRun">Return the plan; write nothing.</param>
    /// <param name="force">Go ahead although processes hold the device.</param>
    /// <param name="devices">The device manager.</param>
    /// <param name="context">The request.</param>
    /// <param name="cancellationToken">Request aborted.</param>
    public static async Task<Results<Ok<DeviceDto>, Ok<OperationPlanDto>>> BindDeviceAsync(string id, bool? group,
        [FromQuery(Name = "dry_run")] bool? dryRun, bool? force, IDeviceManager devices, HttpContext context,
        CancellationToken cancellationToken) =>
        ToResult(context, await devices.BindToVfioAsync(id,
            new VfioRequest(group ?? false, force ?? false, dryRun ?? false, DeviceHttp.IfMatch(context.Request)), cancellationToken));

    /// <param name="id">Device id or name.</param>
    /// <param name="group">Accepted for symmetry with bind: every function bound with the device is restored anyway.</param>
    /// <param name="dryRun">Return the plan; write nothing.</param>
    /// <param name="force">Go ahead although processes hold the device.</param>
    /// <param name="devices">The device manager.</param>
    /// <param name="context">The request.</param>
    /// <param name="cancellationToken">Request aborted.</param>
    public static async Task<Results<Ok<DeviceDto>, Ok<OperationPlanDto>>> UnbindDeviceAsync(string id, bool? group,
        [FromQuery(Name = "dry_run")] bool? dryRun, bool? force, IDeviceManager devices, HttpContext context,
        CancellationToken cancellationToken)
    {
        _ = group;
        return ToResult(context, await devices.UnbindFromVfioAsync(id,
            new VfioRequest(false, force ?? false, dryRun ?? false, DeviceHttp.IfMatch(context.Request)), cancellationToken));
    }

    public static async Task<Ok<DeviceDto>> AttachDeviceAsync(string id, AttachRequest request, IDeviceManager devices,
        HttpContext context, CancellationToken cancellationToken)
    {
        var device = await devices.AttachAsync(id,
            new AttachCommand(request.InstanceId!, request.Pid, DeviceHttp.IfMatch(context.Request)), cancellationToken);
        return TypedResults.Ok(DeviceHttp.Respond(context, device));
    }

    public static async Task<Ok<DeviceDto>> DetachDeviceAsync(string id, DetachRequest request, IDeviceManager devices,
        HttpContext context, CancellationToken cancellationToken)
    {
        var device = await devices.DetachAsync(id,
            new DetachCommand(request.InstanceId!, request.Release ?? false, DeviceHttp.IfMatch(context.Request)), cancellationToken);
        return TypedResults.Ok(DeviceHttp.Respond(context, device));
    }

    /// <param name="id">Device id or name.</param>
    /// <param name="method">Reset method for this reset only (one the device lists in reset_method).</param>
    /// <param name="force">Go ahead although processes hold the device.</param>
    /// <param name="devices">The device manager.</param>
    /// <param name="context">The request.</param>
    /// <param name="cancellationToken">Request aborted.</param>
    public static async Task<Ok<DeviceDto>> ResetDeviceAsync(string id, string? method, bool? force, IDeviceManager devices,
        HttpContext context, CancellationToken cancellationToken)
    {
        // Kernel reset method names: flr, af_flr, pm, bus, cxl_bus, device_specific...
        if (method is not null && (method.Length is 0 or > 32 || !method.All(c => char.IsAsciiLetterLower(c) || c == '_')))
        {
            throw ApiProblemException.Validation("method", "must be a reset method name such as flr, af_flr, pm or bus");
        }

        return TypedResults.Ok(DeviceHttp.Respond(context, await devices.ResetAsync(id, method, force ?? false, cancellationToken)));
    }

    private static Results<Ok<DeviceDto>, Ok<OperationPlanDto>> ToResult(HttpContext context, VfioResult result) =>
        result.Plan is { } plan
            ? TypedResults.Ok(OperationPlanDto.From(plan))
            : TypedResults.Ok(DeviceHttp.Respond(context, result.Device!));
}
