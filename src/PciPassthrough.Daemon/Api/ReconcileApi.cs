using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using PciPassthrough.Daemon.Api.Problems;
using PciPassthrough.Reconcile;

namespace PciPassthrough.Daemon.Api;

/// <summary><c>/reconcile</c>: repair records and host state now, or see what a repair would do.</summary>
public static class ReconcileApi
{
    public static RouteHandlerBuilder MapReconcileApi(this IEndpointRouteBuilder app) =>
        app.MapPost("/reconcile", ReconcileAsync)
            .WithTags("Reconcile")
            .WithName("reconcile")
            .WithSummary("Reconcile records with the host")
            .WithDescription(
                "Finishes or undoes interrupted operations, clears attachments of instances that are gone, restores drivers, " +
                "records renumbered IOMMU groups, and reports missing, changed, quarantined and stranded devices and suspicious " +
                "processes. ?dry_run=true reports without changing anything. Also runs at start-up and every Reconcile:Interval.")
            .RequireReady()
            .ProducesErrors(ErrorCodes.ValidationFailedCode, ErrorStatus.NotReady);

    /// <param name="dryRun">Report what would be done; change nothing.</param>
    /// <param name="runner">The reconcile runner.</param>
    /// <param name="cancellationToken">Request aborted.</param>
    public static async Task<Ok<ReconcileReport>> ReconcileAsync([FromQuery(Name = "dry_run")] bool? dryRun, ReconcileRunner runner,
        CancellationToken cancellationToken) =>
        TypedResults.Ok(await runner.RunAsync(dryRun ?? false, startup: false, cancellationToken));

    private static class ErrorCodes
    {
        public const string ValidationFailedCode = PciPassthrough.Errors.ErrorCodes.ValidationFailed;
    }
}
