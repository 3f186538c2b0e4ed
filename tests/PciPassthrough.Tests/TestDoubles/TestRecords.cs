using PciPassthrough.Devices;
using PciPassthrough.Registry;

namespace PciPassthrough.Tests.TestDoubles;

/// <summary>Device records for registry and store tests.</summary>
public static class TestRecords
{
    public static readonly DateTime Epoch = new(2026, 1, 2, 3, 4, 5, DateTimeKind.Utc);

    public static DeviceRecord Create(string address, string? name = null, string? id = null, DateTime? createdAt = null) =>
        new()
        {
            Id = id ?? Cuid2Generator.Shared.Next(),
            Name = name ?? DeviceNames.FromAddress(PciAddress.Parse(address)),
            PciAddress = PciAddress.Parse(address),
            VendorId = "10de",
            DeviceId = "2230",
            ClassCode = "030000",
            Type = DeviceType.Gpu,
            IommuGroup = 11,
            CreatedAt = createdAt ?? Epoch,
            UpdatedAt = createdAt ?? Epoch,
            OriginalDriver = "nvidia",
        };
}
