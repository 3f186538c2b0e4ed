using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.Extensions.Configuration;
using PciPassthrough.Simulation;

namespace PciPassthrough.Tests.TestDoubles;

/// <summary>
/// The real daemon in-process, pointed at a host tree and a state directory of the test's own
/// (both temp directories unless given), so tests never touch the machine's /sys or /var/lib.
/// </summary>
public sealed class PassthroughApplication : WebApplicationFactory<Program>
{
    private readonly TempDirectory? _ownedHost;
    private readonly TempDirectory? _ownedState;
    private readonly Dictionary<string, string?> _settings;

    /// <param name="hostRoot">A sysfs-shaped tree; null builds the built-in GPU server fixture in a temp directory.</param>
    /// <param name="stateDirectory">The state directory; null uses a fresh temp directory.</param>
    /// <param name="settings">Extra configuration keys.</param>
    public PassthroughApplication(string? hostRoot = null, string? stateDirectory = null,
        IReadOnlyDictionary<string, string?>? settings = null)
    {
        if (hostRoot is null)
        {
            _ownedHost = new TempDirectory("pcipt-host");
            GpuServerFixture.WriteTo(_ownedHost.Path);
            hostRoot = _ownedHost.Path;
        }

        if (stateDirectory is null)
        {
            _ownedState = new TempDirectory("pcipt-state");
            stateDirectory = _ownedState.Path;
        }

        HostRoot = hostRoot;
        StateDirectory = stateDirectory;
        _settings = new Dictionary<string, string?>
        {
            ["Host:Root"] = hostRoot,
            ["State:Directory"] = stateDirectory,
            ["Serilog:MinimumLevel:Default"] = "Warning",
        };
        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            _settings[key] = value;
        }
    }

    public string HostRoot { get; }

    public string StateDirectory { get; }

    protected override void ConfigureWebHost(IWebHostBuilder builder)
    {
        builder.UseEnvironment("Testing");
        builder.ConfigureAppConfiguration((_, config) => config.AddInMemoryCollection(_settings));
    }

    protected override void Dispose(bool disposing)
    {
        base.Dispose(disposing);
        if (disposing)
        {
            _ownedHost?.Dispose();
            _ownedState?.Dispose();
        }
    }
}
