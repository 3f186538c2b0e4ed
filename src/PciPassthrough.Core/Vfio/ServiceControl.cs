using System.Diagnostics;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using PciPassthrough.Simulation;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Vfio;

/// <summary>
/// Stops and starts the host services that keep devices busy (nvidia-persistenced holds every
/// /dev/nvidia* open, so a GPU cannot leave its driver while it runs). Only services listed in
/// <see cref="VfioOptions.StoppableServices"/> are ever touched.
/// </summary>
public interface IServiceControl
{
    Task StopAsync(string unit, CancellationToken cancellationToken);

    Task StartAsync(string unit, CancellationToken cancellationToken);
}

public static partial class SystemdUnits
{
    [GeneratedRegex(@"\A[A-Za-z0-9][A-Za-z0-9@._:-]{0,200}\.service\z", RegexOptions.CultureInvariant)]
    private static partial Regex UnitName();

    public static bool IsValid(string? unit) => unit is not null && UnitName().IsMatch(unit);

    /// <summary>The systemd service a process runs in, from <c>/proc/PID/cgroup</c>, or null.</summary>
    public static string? UnitOf(ISysfs sysfs, int pid)
    {
        string? cgroup;
        try
        {
            cgroup = sysfs.ReadText($"{SysfsPaths.ProcessDirectory(pid)}/cgroup");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }

        foreach (var line in (cgroup ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            // "0::/system.slice/nvidia-persistenced.service" (cgroup v2) or "1:name=systemd:/system.slice/x.service".
            var segments = line[(line.LastIndexOf(':') + 1)..].Split('/', StringSplitOptions.RemoveEmptyEntries);
            if (segments.Contains(".."))
            {
                continue; // not a path the kernel writes
            }

            var unit = segments.LastOrDefault(s => s.EndsWith(".service", StringComparison.Ordinal));
            if (IsValid(unit))
            {
                return unit;
            }
        }

        return null;
    }
}

/// <summary>The real host: <c>systemctl stop|start</c>, bounded by <see cref="VfioOptions.OperationTimeout"/>.</summary>
public sealed partial class SystemctlServiceControl(IOptions<VfioOptions> options, ILogger<SystemctlServiceControl> logger) : IServiceControl
{
    public Task StopAsync(string unit, CancellationToken cancellationToken) => RunAsync("stop", unit, cancellationToken);

    public Task StartAsync(string unit, CancellationToken cancellationToken) => RunAsync("start", unit, cancellationToken);

    private async Task RunAsync(string verb, string unit, CancellationToken cancellationToken)
    {
        if (!SystemdUnits.IsValid(unit))
        {
            throw new ArgumentException("Not a service unit name", nameof(unit));
        }

        var start = new ProcessStartInfo("systemctl") { RedirectStandardError = true, RedirectStandardOutput = true };
        start.ArgumentList.Add(verb);
        start.ArgumentList.Add(unit);
        using var process = Process.Start(start) ?? throw new IOException("systemctl could not be started");
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(options.Value.OperationTimeout);
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new KernelWriteTimeoutException($"systemctl {verb} {unit}", options.Value.OperationTimeout);
        }

        if (process.ExitCode != 0)
        {
            var error = (await process.StandardError.ReadToEndAsync(cancellationToken)).Trim();
            throw new IOException($"systemctl {verb} {unit} failed ({process.ExitCode}): {error}");
        }

        LogDone(logger, verb, unit);
    }

    [LoggerMessage(EventId = 6201, Level = LogLevel.Warning, Message = "systemctl {Verb} {Unit}")]
    private static partial void LogDone(ILogger logger, string verb, string unit);
}

/// <summary>The simulated host's services (<c>service=</c> faults): stopping one lets go of its devices.</summary>
public sealed class SimulatedServiceControl(ISysfs sysfs) : IServiceControl
{
    public Task StopAsync(string unit, CancellationToken cancellationToken)
    {
        Kernel.SetServiceActive(unit, active: false);
        return Task.CompletedTask;
    }

    public Task StartAsync(string unit, CancellationToken cancellationToken)
    {
        Kernel.SetServiceActive(unit, active: true);
        return Task.CompletedTask;
    }

    private SimulatedKernel Kernel => sysfs as SimulatedKernel
        ?? throw new InvalidOperationException("Simulated services need the simulated kernel");
}
