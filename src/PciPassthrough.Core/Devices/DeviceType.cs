using System.Text.Json.Serialization;

namespace PciPassthrough.Devices;

/// <summary>The kind of device, as clients filter on it.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<DeviceType>))]
public enum DeviceType
{
    /// <summary>Any PCI function that is not a display controller.</summary>
    [JsonStringEnumMemberName("pci")]
    Pci,

    /// <summary>A display controller (PCI base class 0x03).</summary>
    [JsonStringEnumMemberName("gpu")]
    Gpu,
}

public static class DeviceTypes
{
    /// <summary>
    /// A device is a GPU when its PCI base class is 0x03 (display controller: VGA, 3D, other);
    /// compute accelerators that report class 0x12 are left as <see cref="DeviceType.Pci"/>.
    /// </summary>
    public static DeviceType FromClassCode(PciClassCode classCode) =>
        classCode.BaseClass == 0x03 ? DeviceType.Gpu : DeviceType.Pci;
}
