using System.Text.Json.Serialization;

namespace PciPassthrough.Devices;

/// <summary>A registered device as it stands now: its record joined with what the host shows.</summary>
public sealed record Device
{
    public required string Id { get; init; }

    public required string Name { get; init; }

    public required DeviceType Type { get; init; }

    public required PciAddress PciAddress { get; init; }

    public required string VendorId { get; init; }

    public required string DeviceId { get; init; }

    public required string ClassCode { get; init; }

    public string? VendorName { get; init; }

    public string? DeviceName { get; init; }

    /// <summary>The live IOMMU group; the recorded one when the device is missing.</summary>
    public required int IommuGroup { get; init; }

    public required bool BoundToVfio { get; init; }

    public string? AttachedTo { get; init; }

    public required DateTime CreatedAt { get; init; }

    public string? CurrentDriver { get; init; }

    public string? OriginalDriver { get; init; }

    public int? NumaNode { get; init; }

    public required string SysfsPath { get; init; }

    public string? VfioGroupPath { get; init; }

    public required DeviceState State { get; init; }

    /// <summary>The record's revision, the basis of the ETag.</summary>
    public required long Revision { get; init; }

    /// <summary>The version token (ETag without quotes): changes with every change of the record.</summary>
    public string Version => Registry.Preconditions.VersionOf(Id, Revision);

    /// <summary>Why the device is quarantined, when it is.</summary>
    public string? QuarantineReason { get; init; }
}

/// <summary>Where a registered device stands, most pressing first.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<DeviceState>))]
public enum DeviceState
{
    /// <summary>On the host, not bound to vfio-pci by anyone.</summary>
    [JsonStringEnumMemberName("ready")]
    Ready,

    /// <summary>On vfio-pci, free to attach.</summary>
    [JsonStringEnumMemberName("bound")]
    Bound,

    /// <summary>Held by an instance.</summary>
    [JsonStringEnumMemberName("attached")]
    Attached,

    /// <summary>No device at the registered address any more; the record is kept.</summary>
    [JsonStringEnumMemberName("missing")]
    Missing,

    /// <summary>A different device (vendor/device id) is at the registered address.</summary>
    [JsonStringEnumMemberName("changed")]
    Changed,

    /// <summary>An operation failed half-way; reset or reconcile clears it.</summary>
    [JsonStringEnumMemberName("quarantined")]
    Quarantined,
}
