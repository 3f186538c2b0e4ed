using Microsoft.Extensions.Options;
using PciPassthrough.Simulation;
using PciPassthrough.Storage;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>Chooses the kernel the daemon talks to: the host's, or the simulated one.</summary>
public static partial class HostSysfsFactory
{
    public const string SimulatedRootFolder = "simulated-host";

    public static ISysfs Create(IServiceProvider services)
    {
        var options = services.GetRequiredService<IOptions<HostSystemOptions>>().Value;
        if (options.Mode == HostMode.Real)
        {
            return new LinuxSysfs(options.Root);
        }

        var logger = services.GetRequiredService<ILoggerFactory>().CreateLogger(typeof(HostSysfsFactory));
        var root = options.Root;
        // Simulating over the real "/" would write to the real sysfs: without an explicit tree the
        // built-in fixture host is used, kept in the state directory so it survives restarts the
        // way a host's state survives a daemon restart.
        if (Path.GetFullPath(root) == "/")
        {
            var state = services.GetRequiredService<StateDirectory>();
            root = Path.Combine(state.Root, SimulatedRootFolder);
            if (!Directory.Exists(Path.Combine(root, "sys")))
            {
                GpuServerFixture.WriteTo(root);
                LogFixtureCreated(logger, root);
            }
        }

        var simulate = services.GetRequiredService<IOptions<SimulateOptions>>().Value;
        var faults = string.IsNullOrEmpty(simulate.FaultsFile)
            ? null
            : SimulatedFault.LoadFile(simulate.FaultsFile);
        LogSimulated(logger, root);
        return new SimulatedKernel(root, faults);
    }

    [LoggerMessage(EventId = 4101, Level = LogLevel.Information,
        Message = "Created the built-in simulated GPU server under {SimulatedRoot}")]
    private static partial void LogFixtureCreated(ILogger logger, string simulatedRoot);

    [LoggerMessage(EventId = 4102, Level = LogLevel.Warning,
        Message = "Running against a SIMULATED host rooted at {SimulatedRoot}; no real device is touched")]
    private static partial void LogSimulated(ILogger logger, string simulatedRoot);
}
