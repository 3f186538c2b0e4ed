using System.ComponentModel;
using System.ComponentModel.DataAnnotations;
using PciPassthrough.Daemon.Api.Problems;

namespace PciPassthrough.Daemon.Api.Contracts;

/// <summary>Body of <c>POST /devices/{id}/attach</c>.</summary>
public sealed record AttachRequest
{
    [Required]
    [Description("The instance (VM) taking the device")]
    public string? InstanceId { get; init; }

    [Description("The VMM process; liveness follows it (with its start time) when given")]
    public int? Pid { get; init; }

    public static ValueTask<AttachRequest?> BindAsync(HttpContext context) =>
        JsonBody.ReadAsync(context, ApiJsonContext.Default.AttachRequest);
}

/// <summary>Body of <c>POST /devices/{id}/detach</c>.</summary>
public sealed record DetachRequest
{
    [Required]
    [Description("The instance giving the device back; must be the one holding it")]
    public string? InstanceId { get; init; }

    [Description("Also return the device to its original driver")]
    public bool? Release { get; init; }

    public static ValueTask<DetachRequest?> BindAsync(HttpContext context) =>
        JsonBody.ReadAsync(context, ApiJsonContext.Default.DetachRequest);
}
