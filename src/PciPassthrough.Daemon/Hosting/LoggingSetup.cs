using Serilog;
using Serilog.Formatting.Compact;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>Serilog: readable console lines by default, compact JSON (CLEF) with <c>Log:Format=json</c>.</summary>
public static class LoggingSetup
{
    public const string FormatKey = "Log:Format";

    /// <summary>A console logger for the moments before configuration is read, so start-up failures are seen.</summary>
    public static Serilog.ILogger CreateBootstrapLogger() =>
        new LoggerConfiguration()
            .MinimumLevel.Information()
            .WriteTo.Console(formatProvider: System.Globalization.CultureInfo.InvariantCulture)
            .CreateBootstrapLogger();

    public static void AddLogging(this IHostApplicationBuilder builder)
    {
        var format = builder.Configuration[FormatKey];
        if (format is not null && !format.Equals("text", StringComparison.OrdinalIgnoreCase) &&
            !format.Equals("json", StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidOperationException($"{FormatKey} must be text or json (got '{format}')");
        }

        var json = string.Equals(format, "json", StringComparison.OrdinalIgnoreCase);
        builder.Services.AddSerilog((services, logger) =>
        {
            logger.ReadFrom.Configuration(builder.Configuration)
                .ReadFrom.Services(services)
                .Enrich.FromLogContext();
            if (json)
            {
                logger.WriteTo.Console(new RenderedCompactJsonFormatter());
            }
            else
            {
                logger.WriteTo.Console(
                    outputTemplate: "[{Timestamp:HH:mm:ss} {Level:u3}] {SourceContext}: {Message:lj}{NewLine}{Exception}",
                    formatProvider: System.Globalization.CultureInfo.InvariantCulture);
            }
        },
        // The host gets a logger of its own; the static bootstrap logger stays for start-up
        // failures. Freezing the static logger instead would work once per process only, and
        // several hosts in one process (the tests) would then fail to start.
        preserveStaticLogger: true);
    }
}
