using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using PciPassthrough.Daemon.Api.Problems;

namespace PciPassthrough.Daemon.Api.Contracts;

/// <summary>Body of <c>POST /devices</c>.</summary>
public sealed record CreateDeviceRequest
{
    // An empty string is an address that fails the format (invalid_pci_address), not a missing field.
    [Required(AllowEmptyStrings = true)]
    [Description("PCI address, DDDD:BB:DD.F or BB:DD.F (hex, case-insensitive)")]
    public string? PciAddress { get; init; }

    [Description("Optional unique name matching ^[a-zA-Z0-9][a-zA-Z0-9_.-]+$, at most 63 characters")]
    public string? Name { get; init; }

    public static ValueTask<CreateDeviceRequest?> BindAsync(HttpContext context) =>
        JsonBody.ReadAsync(context, ApiJsonContext.Default.CreateDeviceRequest);
}
