using Microsoft.OpenApi;
using PciPassthrough.Daemon.Api.Problems;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>The OpenAPI document at /openapi/v1.json, rich enough to generate SDKs from.</summary>
public static class OpenApiSetup
{
    public static IServiceCollection AddPassthroughOpenApi(this IServiceCollection services) =>
        services.AddOpenApi("v1", options =>
        {
            options.AddDocumentTransformer((document, _, _) =>
            {
                document.Info = new OpenApiInfo
                {
                    Title = "PciPassthrough",
                    Version = "v1",
                    Description =
                        "Hands physical PCI devices to virtual machines through Linux VFIO: discovery, registry, " +
                        "vfio-pci binding, attachment and reconcile. Errors are RFC 9457 problem bodies with a stable `code`.",
                };
                return Task.CompletedTask;
            });
            options.AddOperationTransformer((operation, context, _) =>
            {
                var metadata = context.Description.ActionDescriptor.EndpointMetadata
                    .OfType<ErrorResponsesMetadata>().LastOrDefault();
                if (metadata is null || operation.Responses is null)
                {
                    return Task.CompletedTask;
                }

                foreach (var (status, codes) in metadata.CodesByStatus)
                {
                    var key = status.ToString(System.Globalization.CultureInfo.InvariantCulture);
                    if (operation.Responses.TryGetValue(key, out var response) && response is OpenApiResponse r)
                    {
                        r.Description = "Problem body; code is one of: " + string.Join(", ", codes);
                    }
                }

                return Task.CompletedTask;
            });
        });
}
