using PciPassthrough.Lifecycle;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>Picks the liveness checker <c>Liveness:Mode</c> names; <c>http</c> gets a resilient HttpClient.</summary>
public static class LivenessSetup
{
    public static IServiceCollection AddLiveness(this IServiceCollection services, IConfiguration configuration)
    {
        var options = configuration.GetSection(LivenessOptions.Section).Get<LivenessOptions>() ?? new LivenessOptions();
        switch (options.Mode)
        {
            case LivenessMode.Http:
                // Validation on start reports a missing or bad URL; until then, a placeholder keeps composition going.
                var url = options.Url is { IsAbsoluteUri: true } u ? u : new Uri("http://127.0.0.1/");
                var baseAddress = url.AbsoluteUri.EndsWith('/') ? url : new Uri(url.AbsoluteUri + "/");
                var attempt = TimeSpan.FromTicks(Math.Max(options.Timeout.Ticks / 3, TimeSpan.FromMilliseconds(50).Ticks));
                services.AddHttpClient(HttpLivenessChecker.ClientName, c => c.BaseAddress = baseAddress)
                    .AddStandardResilienceHandler(r =>
                    {
                        r.TotalRequestTimeout.Timeout = options.Timeout;
                        r.AttemptTimeout.Timeout = attempt;
                        r.Retry.MaxRetryAttempts = 2;
                        r.Retry.Delay = TimeSpan.FromMilliseconds(100);
                        r.CircuitBreaker.SamplingDuration = TimeSpan.FromTicks(Math.Max(attempt.Ticks * 2, TimeSpan.FromSeconds(30).Ticks));
                    });
                services.AddSingleton<IInstanceLivenessChecker, HttpLivenessChecker>();
                break;
            case LivenessMode.None:
                services.AddSingleton<IInstanceLivenessChecker, NoLivenessChecker>();
                break;
            default:
                services.AddSingleton<IInstanceLivenessChecker, ProcessLivenessChecker>();
                break;
        }

        return services;
    }
}
