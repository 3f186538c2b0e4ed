using PciPassthrough.Devices;
using PciPassthrough.Vfio;

namespace PciPassthrough.Registry;

/// <summary>Options of a bind, unbind or reset.</summary>
/// <param name="Group">Bind every endpoint of the IOMMU group with the device.</param>
/// <param name="Force">Go ahead although processes hold the device (each write still bounded by the timeout).</param>
/// <param name="DryRun">Return the plan and write nothing.</param>
public sealed record VfioRequest(bool Group = false, bool Force = false, bool DryRun = false);

/// <summary>What a VFIO operation returns: the device afterwards, or the plan of a dry run.</summary>
public sealed record VfioResult(Device? Device, OperationPlan? Plan);
