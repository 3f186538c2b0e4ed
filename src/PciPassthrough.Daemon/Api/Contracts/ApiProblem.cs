using System.ComponentModel;

namespace PciPassthrough.Daemon.Api.Contracts;

/// <summary>
/// The error body (RFC 9457 problem details) every failure returns; documented for clients.
/// Extra members carry facts for the caller, e.g. <c>blocking_devices</c>, <c>attached_to</c>, <c>holders</c>, <c>errors</c>.
/// </summary>
public sealed record ApiProblem
{
    [Description("URI identifying the problem type")]
    public required string Type { get; init; }

    [Description("Short summary of the problem type")]
    public required string Title { get; init; }

    [Description("HTTP status code")]
    public required int Status { get; init; }

    [Description("What went wrong, for a human")]
    public required string Detail { get; init; }

    [Description("Stable error code to branch on (not_found, in_use, invalid_pci_address, ...)")]
    public required string Code { get; init; }

    [Description("Same text as detail, for clients that read message")]
    public required string Message { get; init; }

    [Description("Request path")]
    public string? Instance { get; init; }

    [Description("Invalid fields and why, for validation_failed")]
    public IReadOnlyDictionary<string, string[]>? Errors { get; init; }
}
