using System.Diagnostics;
using PciPassthrough.Diagnostics;
using PciPassthrough.Errors;

namespace PciPassthrough.Daemon.Api.Problems;

/// <summary>Counts and times an endpoint's operation, with its error code as the outcome.</summary>
public static class OperationMetricsFilter
{
    public static TBuilder RecordsOperation<TBuilder>(this TBuilder builder, string operation)
        where TBuilder : IEndpointConventionBuilder =>
        builder.AddEndpointFilter(async (context, next) =>
        {
            var metrics = context.HttpContext.RequestServices.GetRequiredService<PassthroughMetrics>();
            var started = Stopwatch.GetTimestamp();
            try
            {
                var result = await next(context);
                metrics.OperationFinished(operation, "ok", Stopwatch.GetElapsedTime(started));
                return result;
            }
            catch (PassthroughException e)
            {
                metrics.OperationFinished(operation, e.Code, Stopwatch.GetElapsedTime(started));
                throw;
            }
        });
}
