using Microsoft.AspNetCore.Http.HttpResults;
using PciPassthrough.HostReadiness;

namespace PciPassthrough.Daemon.Api;

/// <summary><c>/host</c>: is this host ready for passthrough, and what to fix when it is not.</summary>
public static class HostApi
{
    public static RouteHandlerBuilder MapHostApi(this IEndpointRouteBuilder app) =>
        app.MapGet("/host", GetHost)
            .WithTags("Host")
            .WithName("getHost")
            .WithSummary("Host readiness for passthrough")
            .WithDescription("IOMMU (groups, interrupt remapping), vfio-pci and /dev/vfio, the kernel command line, and findings with remedies.");

    public static Ok<HostReport> GetHost(HostInspector inspector) => TypedResults.Ok(inspector.Inspect());
}
