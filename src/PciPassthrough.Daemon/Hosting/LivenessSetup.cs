using Microsoft.Extensions.Http.Resilience;
using Microsoft.Extensions.Options;
using PciPassthrough.Lifecycle;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>
/// The liveness checker <c>Liveness:Mode</c> names, chosen from the validated options when first
/// needed; <c>http</c> mode gets a named HttpClient with a timeout-and-retry pipeline.
/// </summary>
public static class LivenessSetup
{
    public static IServiceCollection AddLiveness(this IServiceCollection services)
    {
        services.AddHttpClient(HttpLivenessChecker.ClientName, (sp, client) =>
            {
                var url = sp.GetRequiredService<IOptions<LivenessOptions>>().Value.Url;
                if (url is { IsAbsoluteUri: true })
                {
                    // A base address without a trailing slash would drop its last segment from "instances/...".
                    client.BaseAddress = url.AbsoluteUri.EndsWith('/') ? url : new Uri(url.AbsoluteUri + "/");
                }
            })
            .AddStandardResilienceHandler()
            .Configure((resilience, sp) =>
            {
                var timeout = sp.GetRequiredService<IOptions<LivenessOptions>>().Value.Timeout;
                var attempt = TimeSpan.FromTicks(Math.Max(timeout.Ticks / 3, TimeSpan.FromMilliseconds(50).Ticks));
                resilience.TotalRequestTimeout.Timeout = timeout;
                resilience.AttemptTimeout.Timeout = attempt;
                resilience.Retry.MaxRetryAttempts = 2;
                resilience.Retry.Delay = TimeSpan.FromMilliseconds(100);
                resilience.CircuitBreaker.SamplingDuration = TimeSpan.FromTicks(Math.Max(attempt.Ticks * 2, TimeSpan.FromSeconds(30).Ticks));
            });

        services.AddSingleton<ProcessLivenessChecker>();
        services.AddSingleton<HttpLivenessChecker>();
        services.AddSingleton<NoLivenessChecker>();
        services.AddSingleton<IInstanceLivenessChecker>(sp => sp.GetRequiredService<IOptions<LivenessOptions>>().Value.Mode switch
        {
            LivenessMode.Http => sp.GetRequiredService<HttpLivenessChecker>(),
            LivenessMode.None => sp.GetRequiredService<NoLivenessChecker>(),
            _ => sp.GetRequiredService<ProcessLivenessChecker>(),
        });
        return services;
    }
}
