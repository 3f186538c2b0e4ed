namespace PciPassthrough.Errors;

/// <summary>Factories for the registry's domain errors, so every message and code is written once.</summary>
public static class DeviceErrors
{
    public static PassthroughException NotFound() =>
        new(ErrorCodes.NotFound, "No registered device has that id or name");

    public static PassthroughException AlreadyExists(string pciAddress, string existingId) =>
        new(ErrorCodes.AlreadyExists, $"PCI address {pciAddress} is already registered",
            new Dictionary<string, object?> { ["device_id"] = existingId });

    public static PassthroughException NameExists(string name) =>
        new(ErrorCodes.NameExists, $"The name '{name}' is already taken");

    public static PassthroughException InvalidName() =>
        new(ErrorCodes.InvalidName,
            $"Device name must match {Devices.DeviceNames.Pattern}, be at most {Devices.DeviceNames.MaxLength} characters and not be \"available\"");

    public static PassthroughException InvalidPciAddress() =>
        new(ErrorCodes.InvalidPciAddress,
            "Invalid PCI address format; expected DDDD:BB:DD.F or BB:DD.F (hex; device 00-1f, function 0-7)");

    public static PassthroughException DeviceNotFound(string pciAddress) =>
        new(ErrorCodes.DeviceNotFound, $"No PCI device {pciAddress} exists on this host");

    public static PassthroughException StorageUnavailable(string what, Exception inner) =>
        new(ErrorCodes.StorageUnavailable, $"The state directory cannot be written ({what}); nothing was changed",
            null, inner);
}
