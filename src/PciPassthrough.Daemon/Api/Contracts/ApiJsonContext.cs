using System.Text.Json.Serialization;

namespace PciPassthrough.Daemon.Api.Contracts;

/// <summary>Source-generated JSON for the API's request and response types (snake_case).</summary>
[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower)]
[JsonSerializable(typeof(DeviceDto))]
[JsonSerializable(typeof(List<DeviceDto>))]
[JsonSerializable(typeof(AvailableDeviceDto))]
[JsonSerializable(typeof(List<AvailableDeviceDto>))]
[JsonSerializable(typeof(CreateDeviceRequest))]
[JsonSerializable(typeof(AttachRequest))]
[JsonSerializable(typeof(DetachRequest))]
[JsonSerializable(typeof(PciPassthrough.Reconcile.ReconcileReport))]
[JsonSerializable(typeof(ApiProblem))]
[JsonSerializable(typeof(OperationPlanDto))]
[JsonSerializable(typeof(PciPassthrough.Vfio.BlockingDevice))]
[JsonSerializable(typeof(PciPassthrough.Vfio.DeviceHolder))]
[JsonSerializable(typeof(List<PciPassthrough.Vfio.BlockingDevice>))]
[JsonSerializable(typeof(List<PciPassthrough.Vfio.DeviceHolder>))]
[JsonSerializable(typeof(HealthReport))]
[JsonSerializable(typeof(PciPassthrough.HostReadiness.HostReport))]
[JsonSerializable(typeof(ReadinessReport))]
public sealed partial class ApiJsonContext : JsonSerializerContext;
