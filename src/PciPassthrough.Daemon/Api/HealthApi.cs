using Microsoft.AspNetCore.Http.HttpResults;
using PciPassthrough.Daemon.Api.Contracts;
using PciPassthrough.Daemon.Hosting;
using PciPassthrough.Registry;
using PciPassthrough.Storage;

namespace PciPassthrough.Daemon.Api;

/// <summary>Liveness and readiness probes for service managers and load balancers.</summary>
public static class HealthApi
{
    public static IEndpointRouteBuilder MapHealthApi(this IEndpointRouteBuilder app)
    {
        app.MapGet("/healthz", Health)
            .WithTags("Health")
            .WithName("getHealth")
            .WithSummary("Liveness: 200 while the process serves requests");

        app.MapGet("/readyz", Readiness)
            .WithTags("Health")
            .WithName("getReadiness")
            .WithSummary("Readiness: 200 once the registry is loaded and start-up recovery is done, 503 before")
            .Produces<ReadinessReport>(StatusCodes.Status503ServiceUnavailable);
        return app;
    }

    public static Ok<HealthReport> Health() => TypedResults.Ok(new HealthReport("ok"));

    public static Results<Ok<ReadinessReport>, JsonHttpResult<ReadinessReport>> Readiness(
        StartupState startup, DeviceRegistry registry, StateDirectory state)
    {
        var report = new ReadinessReport
        {
            Status = startup.IsReady ? "ready" : startup.Failure is not null ? "failed" : "starting",
            RegistryLoaded = registry.IsLoaded,
            Devices = registry.Count,
            StateDirectory = state.Root,
            QuarantinedRecords = registry.Quarantined
                .Select(q => new QuarantinedRecordDto(q.FileName, q.QuarantinePath, q.Reason, q.At))
                .ToList(),
            StartupReconcile = startup.StartupReconcile,
            Failure = startup.Failure,
        };
        return startup.IsReady
            ? TypedResults.Ok(report)
            : TypedResults.Json(report, statusCode: StatusCodes.Status503ServiceUnavailable);
    }
}
