using System.Text.Json.Serialization;

namespace PciPassthrough.Registry;

/// <summary>Source-generated JSON for the files in the state directory (snake_case, like the API).</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    RespectRequiredConstructorParameters = true,
    RespectNullableAnnotations = true,
    AllowTrailingCommas = false)]
[JsonSerializable(typeof(DeviceRecord))]
internal sealed partial class RegistryJsonContext : JsonSerializerContext;
