using PciPassthrough.Discovery;

namespace PciPassthrough.Registry;

/// <summary>A discovered device and whether it is registered.</summary>
public sealed record AvailableDeviceStatus(AvailableDevice Device, bool Registered, string? RegisteredId);
