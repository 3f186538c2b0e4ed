namespace PciPassthrough.Daemon.Hosting;

/// <summary>Flags without a value that the configuration command line cannot express on its own.</summary>
public static class CommandLineSwitches
{
    /// <summary>
    /// <c>--simulate</c> becomes <c>--Host:Mode=Simulated</c>. The content root defaults to the
    /// daemon's own directory rather than the working directory: its appsettings.json lives there,
    /// and started from <c>/</c> (as systemd does) ASP.NET would otherwise watch the whole file system.
    /// </summary>
    public static WebApplicationOptions Expand(string[] args)
    {
        var expanded = args.Select(a => a == "--simulate" ? "--Host:Mode=Simulated" : a).ToArray();
        var explicitRoot = expanded.Any(a => a.StartsWith("--contentRoot", StringComparison.OrdinalIgnoreCase)) ||
            Environment.GetEnvironmentVariable("ASPNETCORE_CONTENTROOT") is not null;
        return new WebApplicationOptions
        {
            Args = expanded,
            ContentRootPath = explicitRoot ? null : AppContext.BaseDirectory,
        };
    }
}
