namespace PciPassthrough.Registry;

/// <summary>Register a device for passthrough: its PCI address and an optional unique name.</summary>
public sealed record CreateDeviceCommand(string PciAddress, string? Name = null);
