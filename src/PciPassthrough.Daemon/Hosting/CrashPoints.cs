using Microsoft.Extensions.Options;
using PciPassthrough.Journal;
using PciPassthrough.Simulation;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Daemon.Hosting;

/// <summary><c>Simulate:CrashAt</c> makes the simulated daemon die mid-operation, for crash tests.</summary>
public static class CrashPoints
{
    public static ICrashPoint Create(IServiceProvider services)
    {
        var spec = services.GetRequiredService<IOptions<SimulateOptions>>().Value.CrashAt;
        if (string.IsNullOrWhiteSpace(spec))
        {
            return new NoCrashPoint();
        }

        if (services.GetRequiredService<IOptions<HostSystemOptions>>().Value.Mode != HostMode.Simulated)
        {
            throw new InvalidOperationException("Simulate:CrashAt applies to the simulated host only (--simulate)");
        }

        return ProcessExitCrashPoint.FromSpec(spec)!;
    }
}
