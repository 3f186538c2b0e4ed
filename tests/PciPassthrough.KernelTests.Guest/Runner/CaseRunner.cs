using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Daemon;
using PciPassthrough.KernelTests.Guest.Kernel;

namespace PciPassthrough.KernelTests.Guest.Runner;

/// <summary>
/// Runs every kernel case in order against one daemon, so the daemon starts once (cases that
/// kill it restart it themselves). Between cases it returns the daemon and the kernel to a
/// clean slate: every registered device detached and deleted (which gives back what the daemon
/// bound), the journal empty, and every function on its boot driver. When the daemon cannot be
/// cleaned through its API, its state is wiped and the next case starts it afresh.
/// </summary>
public sealed class CaseRunner(AgentOptions options)
{
    private static readonly TimeSpan CaseTimeout = TimeSpan.FromMinutes(5);

    private readonly GuestKernel _kernel = new();
    private readonly List<CaseResult> _results = [];
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public async Task<int> RunAsync()
    {
        var cases = KernelCaseCatalog.All.Where(c => options.Only is null || options.Only.Contains(c.Name)).ToList();
        Directory.CreateDirectory(options.ResultsDirectory);
        var run = new JsonObject
        {
            ["agent_started_uptime_s"] = Uptime(),
            ["daemon_directory"] = options.DaemonDirectory,
            ["kernel"] = File.ReadAllText("/proc/version").Trim(),
        };
        Console.WriteLine($"agent: {cases.Count} cases; uptime {Uptime():0.0} s");

        _kernel.CaptureBoot();
        using var daemon = new DaemonHost(options);
        daemon.Wipe();
        // The daemon takes long to start under emulation: start it now, while the cases that do
        // not need it run.
        daemon.Start();

        foreach (var info in cases)
        {
            _results.Add(await RunCaseAsync(info, daemon));
            Save(run, daemon);
        }

        await daemon.StopAsync();
        var leftover = _kernel.Capture().Differences(_kernel.Boot, "end", "boot");
        run["left_over_differences_from_boot"] = new JsonArray([.. leftover.Select(l => (JsonNode?)l)]);
        run["total_s"] = _clock.Elapsed.TotalSeconds;
        run["agent_finished_uptime_s"] = Uptime();
        Save(run, daemon);
        var failed = _results.Count(r => !r.Passed);
        Console.WriteLine($"agent: {_results.Count - failed} passed, {failed} failed in {_clock.Elapsed.TotalSeconds:0.0} s");
        return failed == 0 && leftover.Count == 0 ? 0 : 1;
    }

    private async Task<CaseResult> RunCaseAsync(KernelCaseInfo info, DaemonHost daemon)
    {
        var context = new CaseContext(info.Name, daemon, _kernel, options);
        context.Log("start");
        var logMark = GuestKernel.KernelLog().Count;
        var clock = Stopwatch.StartNew();
        string? failure = null;
        Task? task = null;
        try
        {
            if (info.NeedsDaemon)
            {
                await daemon.EnsureReadyAsync();
            }

            var instance = Activator.CreateInstance(info.Method.DeclaringType!, context)!;
            task = (Task)info.Method.Invoke(instance, null)!;
            await task.WaitAsync(CaseTimeout);
        }
        catch (TimeoutException) when (task is { IsCompleted: false })
        {
            failure = $"the case did not finish within {CaseTimeout.TotalMinutes:0} min";
            daemon.Kill();
        }
        catch (Exception e)
        {
            var error = e is TargetInvocationException { InnerException: { } inner } ? inner : e;
            failure = error is CaseFailedException ? error.Message : $"{error.GetType().Name}: {error.Message}\n{error.StackTrace}";
        }

        var duration = clock.ElapsedMilliseconds;
        var cleanup = await CleanUpAsync(context, daemon, info.NeedsDaemon);
        if (cleanup.Count > 0)
        {
            context.Detail("cleanup_problems", cleanup);
            failure = failure is null
                ? "the case passed, but afterwards: " + string.Join("; ", cleanup)
                : failure + " (afterwards: " + string.Join("; ", cleanup) + ")";
        }

        var kernelLog = GuestKernel.KernelLog().Skip(logMark).ToList();
        if (kernelLog.Count > 0)
        {
            context.Detail("kernel_log", kernelLog.TakeLast(60).ToList());
        }

        context.Log(failure is null ? $"PASS in {duration} ms" : $"FAIL in {duration} ms: {failure}");
        return new CaseResult
        {
            Name = info.Name,
            Passed = failure is null,
            Message = failure,
            DurationMs = duration,
            Details = context.Details,
        };
    }

    /// <summary>Returns daemon and kernel to the clean slate; lists what was wrong.</summary>
    private async Task<List<string>> CleanUpAsync(CaseContext context, DaemonHost daemon, bool usedDaemon)
    {
        var problems = new List<string>();
        try
        {
            context.ReleaseResources();
        }
        catch (Exception e)
        {
            problems.Add($"releasing the case's resources failed: {e.Message}");
        }

        // A case that does not use the daemon runs while it starts: leave that start alone.
        var skipDaemon = !usedDaemon && !daemon.IsReady;
        var wipe = !skipDaemon && !daemon.IsRunning;
        if (!skipDaemon && daemon.IsRunning)
        {
            try
            {
                await ForgetDevicesAsync(daemon.Api, problems);
            }
            catch (Exception e)
            {
                problems.Add($"cleaning the registry through the API failed: {e.Message}");
                wipe = true;
            }

            if (Directory.Exists(daemon.JournalDirectory) && Directory.EnumerateFiles(daemon.JournalDirectory).Any())
            {
                problems.Add("the journal is not empty after the case: " + string.Join("; ", Directory.EnumerateFiles(daemon.JournalDirectory).Select(Cases.KernelChecks.Describe)));
                // A reconcile finishes or undoes what is left; a restart only when even that fails.
                try
                {
                    var reconciled = await daemon.Api.PostAsync("/reconcile");
                    wipe |= reconciled.Status != 200 || Directory.EnumerateFiles(daemon.JournalDirectory).Any();
                }
                catch (HttpRequestException e)
                {
                    problems.Add($"POST /reconcile failed: {e.Message}");
                    wipe = true;
                }
            }
        }

        if (wipe)
        {
            // A daemon that died (or cannot be cleaned) starts afresh for the next case.
            daemon.Wipe();
        }

        try
        {
            var restored = await _kernel.RestoreBootStateAsync();
            if (restored.Count > 0)
            {
                context.Detail("cleanup_raw_restore", restored);
            }
        }
        catch (Exception e)
        {
            problems.Add($"restoring the boot drivers failed: {e.Message}");
        }

        var differences = _kernel.Capture().Differences(_kernel.Boot, "now", "boot");
        if (differences.Count > 0)
        {
            problems.Add("the kernel is not back in its boot state: " + string.Join("; ", differences));
        }

        return problems;
    }

    /// <summary>
    /// Detaches and deletes every registered device. A device the daemon bound must come back
    /// on its boot driver from the DELETE alone: that is the daemon's contract, so a DELETE that
    /// leaves it elsewhere is reported.
    /// </summary>
    private async Task ForgetDevicesAsync(DaemonApi api, List<string> problems)
    {
        var list = (await api.GetAsync("/devices")).Expect(200);
        foreach (var device in list.Json.AsArray().OfType<JsonObject>())
        {
            var id = device["id"]!.GetValue<string>();
            var address = device["pci_address"]!.GetValue<string>();
            if (device["attached_to"] is JsonValue attached)
            {
                (await api.DetachAsync(id, attached.GetValue<string>(), release: false)).Expect(200);
            }

            var deleted = await api.DeleteAsync($"/devices/{id}");
            if (deleted.Status == 409 && deleted.Code == "quarantined")
            {
                problems.Add($"{address} was quarantined after the case: {device["quarantine_reason"]}");
                (await api.PostAsync($"/devices/{id}/reset")).Expect(200);
                deleted = await api.DeleteAsync($"/devices/{id}");
            }

            deleted.Expect(204);
            if (Topology.BootDrivers.TryGetValue(address, out var boot) && _kernel.DriverOf(address) != boot &&
                !await _kernel.WaitForDriverAsync(address, boot, TimeSpan.FromSeconds(2)))
            {
                problems.Add($"DELETE /devices/{id} answered 204 but left {address} on {_kernel.DriverOf(address) ?? "no driver"}, not {boot}");
            }
        }
    }

    private void Save(JsonObject run, DaemonHost daemon)
    {
        run["daemon_starts"] = new JsonArray([.. daemon.Starts.Select(s => (JsonNode?)new JsonObject
        {
            ["number"] = s.Number,
            ["ready_s"] = s.ReadySeconds,
            ["log"] = Path.GetFileName(s.Log),
        })]);
        run["elapsed_s"] = _clock.Elapsed.TotalSeconds;
        new CasesFile { Run = run, Cases = _results }.Write(Path.Combine(options.ResultsDirectory, CasesFile.FileName));
    }

    private static double Uptime() =>
        double.Parse(File.ReadAllText("/proc/uptime").Split(' ')[0], CultureInfo.InvariantCulture);
}
