using PciPassthrough.Daemon.Api.Contracts;

namespace PciPassthrough.Daemon.Api.Problems;

/// <summary>The error codes an endpoint can answer with, for its OpenAPI description.</summary>
public sealed record ErrorResponsesMetadata(IReadOnlyDictionary<int, IReadOnlyList<string>> CodesByStatus);

public static class ErrorResponsesExtensions
{
    /// <summary>Documents the problem responses of an endpoint, grouped by status, with their codes.</summary>
    public static TBuilder ProducesErrors<TBuilder>(this TBuilder builder, params string[] codes)
        where TBuilder : IEndpointConventionBuilder
    {
        var byStatus = codes
            .GroupBy(ErrorStatus.StatusOf)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<string>)g.ToList());
        builder.WithMetadata(new ErrorResponsesMetadata(byStatus));
        foreach (var status in byStatus.Keys)
        {
            builder.WithMetadata(new ProducesResponseTypeMetadata(status, typeof(ApiProblem), ["application/problem+json"]));
        }

        return builder;
    }
}
