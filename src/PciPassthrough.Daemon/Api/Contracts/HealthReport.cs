using System.ComponentModel;

namespace PciPassthrough.Daemon.Api.Contracts;

/// <summary>Body of <c>/healthz</c>.</summary>
public sealed record HealthReport([property: Description("ok while the process serves requests")] string Status);

/// <summary>Body of <c>/readyz</c>: what start-up has done and what needs an operator.</summary>
public sealed record ReadinessReport
{
    [Description("ready; starting while the registry loads or unfinished operations are recovered; failed")]
    public required string Status { get; init; }

    [Description("Whether every device record has been loaded")]
    public required bool RegistryLoaded { get; init; }

    [Description("Number of registered devices")]
    public required int Devices { get; init; }

    [Description("Resolved state directory")]
    public required string StateDirectory { get; init; }

    [Description("Record files that could not be read at start-up, moved to the quarantine folder")]
    public required IReadOnlyList<QuarantinedRecordDto> QuarantinedRecords { get; init; }

    [Description("The start-up reconcile's report (interrupted operations finished or undone first), once done")]
    public required PciPassthrough.Reconcile.ReconcileReport? StartupReconcile { get; init; }

    [Description("Why start-up could not finish, or null")]
    public required string? Failure { get; init; }
}

public sealed record QuarantinedRecordDto(string File, string QuarantinePath, string Reason, DateTime At);
