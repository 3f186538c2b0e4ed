using PciPassthrough.Daemon.Hosting;

namespace PciPassthrough.Daemon.Api.Problems;

/// <summary>
/// Changes wait for start-up recovery: until every unfinished operation is finished or undone, a
/// change could act on a device whose record and kernel state disagree. Reads are always served.
/// </summary>
public static class ReadinessFilter
{
    public static TBuilder RequireReady<TBuilder>(this TBuilder builder)
        where TBuilder : IEndpointConventionBuilder =>
        builder.AddEndpointFilter(async (context, next) =>
        {
            var startup = context.HttpContext.RequestServices.GetRequiredService<StartupState>();
            if (!startup.IsReady)
            {
                throw new ApiProblemException(ErrorStatus.NotReady,
                    startup.Failure is { } failure
                        ? $"Start-up recovery failed ({failure}); changes are refused until it is fixed"
                        : "The daemon is still recovering unfinished operations; retry shortly");
            }

            return await next(context);
        });
}
