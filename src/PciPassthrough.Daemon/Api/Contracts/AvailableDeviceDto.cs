using System.ComponentModel;
using PciPassthrough.Devices;
using PciPassthrough.Registry;

namespace PciPassthrough.Daemon.Api.Contracts;

/// <summary>A PCI function discovered on the host (the contract's <c>AvailableDevice</c>).</summary>
public sealed record AvailableDeviceDto
{
    [Description("PCI address, DDDD:BB:DD.F")]
    public required string PciAddress { get; init; }

    [Description("Vendor id, 4 lowercase hex digits")]
    public required string VendorId { get; init; }

    [Description("Device id, 4 lowercase hex digits")]
    public required string DeviceId { get; init; }

    [Description("Vendor name from pci.ids, or null when not listed")]
    public required string? VendorName { get; init; }

    [Description("Device name from pci.ids, or null when not listed")]
    public required string? DeviceName { get; init; }

    [Description("IOMMU group number; -1 when the host has no IOMMU")]
    public required int IommuGroup { get; init; }

    [Description("Driver bound now, or null")]
    public required string? CurrentDriver { get; init; }

    [Description("PCI class code, 6 lowercase hex digits")]
    public required string ClassCode { get; init; }

    [Description("Class name from pci.ids (e.g. Ethernet controller), or null")]
    public required string? ClassName { get; init; }

    [Description("gpu for display controllers (PCI class 0x03), pci otherwise")]
    public required DeviceType Type { get; init; }

    [Description("NUMA node, or null when the platform reports none")]
    public required int? NumaNode { get; init; }

    [Description("Whether the device is registered")]
    public required bool Registered { get; init; }

    [Description("Every address in the device's IOMMU group (itself and bridges included), ordered")]
    public required IReadOnlyList<string> IommuGroupMembers { get; init; }

    [Description("Subsystem vendor id, 4 lowercase hex digits, or null")]
    public required string? SubsystemVendorId { get; init; }

    [Description("Subsystem device id, 4 lowercase hex digits, or null")]
    public required string? SubsystemDeviceId { get; init; }

    [Description("Subsystem (board) name from pci.ids, or null when not listed")]
    public required string? SubsystemName { get; init; }

    public static AvailableDeviceDto From(AvailableDeviceStatus status)
    {
        var d = status.Device;
        return new AvailableDeviceDto
        {
            PciAddress = d.PciAddress.ToString(),
            VendorId = PciId.Format(d.VendorId),
            DeviceId = PciId.Format(d.DeviceId),
            VendorName = d.VendorName,
            DeviceName = d.DeviceName,
            IommuGroup = d.IommuGroup,
            CurrentDriver = d.CurrentDriver,
            ClassCode = d.ClassCode.ToString(),
            ClassName = d.ClassName,
            Type = d.Type,
            NumaNode = d.NumaNode,
            Registered = status.Registered,
            IommuGroupMembers = d.IommuGroupMembers.Select(m => m.ToString()).ToList(),
            SubsystemVendorId = d.SubsystemVendorId is { } sv ? PciId.Format(sv) : null,
            SubsystemDeviceId = d.SubsystemDeviceId is { } sd ? PciId.Format(sd) : null,
            SubsystemName = d.SubsystemName,
        };
    }
}
