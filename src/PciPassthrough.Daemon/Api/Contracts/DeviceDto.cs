using System.ComponentModel;
using PciPassthrough.Devices;

namespace PciPassthrough.Daemon.Api.Contracts;

/// <summary>A registered device (the contract's <c>Device</c>).</summary>
public sealed record DeviceDto
{
    /// <summary>cuid2 identifier.</summary>
    [Description("cuid2 identifier (24 lowercase base-36 characters, first one a letter)")]
    public required string Id { get; init; }

    [Description("Unique name; generated from the address (pci-0000-a2-00-0) when none was given")]
    public required string Name { get; init; }

    [Description("gpu for display controllers (PCI class 0x03), pci otherwise")]
    public required DeviceType Type { get; init; }

    [Description("PCI address, DDDD:BB:DD.F")]
    public required string PciAddress { get; init; }

    [Description("Vendor id, 4 lowercase hex digits")]
    public required string VendorId { get; init; }

    [Description("Device id, 4 lowercase hex digits")]
    public required string DeviceId { get; init; }

    [Description("IOMMU group number; -1 when the host has no IOMMU")]
    public required int IommuGroup { get; init; }

    [Description("Whether the device is bound to vfio-pci")]
    public required bool BoundToVfio { get; init; }

    [Description("Instance the device is attached to, or null")]
    public required string? AttachedTo { get; init; }

    [Description("Registration time, RFC 3339 UTC")]
    public required DateTime CreatedAt { get; init; }

    [Description("Vendor name from pci.ids, or null when not listed")]
    public required string? VendorName { get; init; }

    [Description("Device name from pci.ids, or null when not listed")]
    public required string? DeviceName { get; init; }

    [Description("PCI class code, 6 lowercase hex digits")]
    public required string ClassCode { get; init; }

    [Description("Driver bound now, or null")]
    public required string? CurrentDriver { get; init; }

    [Description("Host driver the device is returned to on unbind, or null when it had none")]
    public required string? OriginalDriver { get; init; }

    [Description("NUMA node, or null when the platform reports none")]
    public required int? NumaNode { get; init; }

    [Description("sysfs directory of the device (what a VMM takes as path=)")]
    public required string SysfsPath { get; init; }

    [Description("/dev/vfio/N while bound and usable, else null")]
    public required string? VfioGroupPath { get; init; }

    [Description("ready, bound, attached, missing, changed or quarantined")]
    public required DeviceState State { get; init; }

    [Description("Why the device is quarantined, or null")]
    public required string? QuarantineReason { get; init; }

    public static DeviceDto From(Device device) => new()
    {
        Id = device.Id,
        Name = device.Name,
        Type = device.Type,
        PciAddress = device.PciAddress.ToString(),
        VendorId = device.VendorId,
        DeviceId = device.DeviceId,
        IommuGroup = device.IommuGroup,
        BoundToVfio = device.BoundToVfio,
        AttachedTo = device.AttachedTo,
        CreatedAt = DateTime.SpecifyKind(device.CreatedAt, DateTimeKind.Utc),
        VendorName = device.VendorName,
        DeviceName = device.DeviceName,
        ClassCode = device.ClassCode,
        CurrentDriver = device.CurrentDriver,
        OriginalDriver = device.OriginalDriver,
        NumaNode = device.NumaNode,
        SysfsPath = device.SysfsPath,
        VfioGroupPath = device.VfioGroupPath,
        State = device.State,
        QuarantineReason = device.QuarantineReason,
    };
}
