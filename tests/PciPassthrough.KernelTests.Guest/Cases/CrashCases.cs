using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Daemon;
using PciPassthrough.KernelTests.Guest.Kernel;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests.Guest.Cases;

/// <summary>
/// kill -9 of the daemon in the middle of an operation on the real kernel. The daemon journals
/// each kernel step before it makes it (<c>journal/&lt;operation&gt;.json</c> with its <c>step</c>);
/// the case watches that folder and kills the daemon the moment the chosen step is on disk, so
/// the kill lands while the kernel write runs or right after it. After a restart on the same
/// state the device must be consistent: on vfio-pci and recorded bound, or on its host driver and
/// recorded unbound, never without a driver; and the start-up reconcile must say what it did.
/// </summary>
public sealed class CrashCases(CaseContext context)
{
    private static readonly string[] RecoveryKinds = ["journal_completed", "journal_rolled_back"];

    [KernelCase("crash_during_bind_at_unbind_step", Order = 120,
        Description = "kill -9 once the bind of 0000:01:00.0 journals step 2 (unbind from e1000e); after restart the device is consistent")]
    public async Task CrashDuringBindAtUnbindStep() => await CrashBindAsync(2);

    [KernelCase("crash_during_bind_at_probe_step", Order = 130,
        Description = "kill -9 once the bind of 0000:01:00.0 journals step 3 (drivers_probe); after restart the device is consistent")]
    public async Task CrashDuringBindAtProbeStep() => await CrashBindAsync(3);

    [KernelCase("crash_during_attach", Order = 140,
        Description = "kill -9 once the attach of 0000:00:02.0 journals step 2; after restart the device is consistent and a retried attach succeeds")]
    public async Task CrashDuringAttach() => await CrashAttachAsync(2, after =>
        Expect.Equal(null, after.TextOrNull("attached_to"), "attached_to after the interrupted attach (the attachment is recorded only once bound)"));

    [KernelCase("crash_during_attach_at_claim_step", Order = 145,
        Description = "kill -9 once the attach of 0000:00:02.0 journals step 4 (record the attachment, the device already on vfio-pci); after restart it is attached and bound, or neither: never bound for nobody")]
    public async Task CrashDuringAttachAtClaimStep() => await CrashAttachAsync(4, after =>
    {
        var attachedTo = after.TextOrNull("attached_to");
        Expect.True(attachedTo is null ? !after.Bool("bound_to_vfio") : after.Bool("bound_to_vfio"),
            $"after the interrupted attach the device is attached to {attachedTo ?? "nobody"} with bound_to_vfio={after.Bool("bound_to_vfio")}");
    });

    [KernelCase("crash_during_detach_release", Order = 150,
        Description = "kill -9 once a detach with release: true of 0000:00:02.0 journals step 3 (unbind from vfio-pci); after restart it is back on e1000e")]
    public async Task CrashDuringDetachRelease() => await CrashDetachReleaseAsync(3);

    [KernelCase("crash_during_detach_at_claim_step", Order = 155,
        Description = "kill -9 once a detach with release: true of 0000:00:02.0 journals step 1 (drop the claim); after restart it is unattached and back on e1000e")]
    public async Task CrashDuringDetachAtClaimStep() => await CrashDetachReleaseAsync(1);

    [KernelCase("crash_during_group_bind", Order = 135,
        Description = "kill -9 once the group bind of 0000:02:00.0/.1 journals step 5 (unbind of the second function); after restart both functions are on the same side, never split")]
    public async Task CrashDuringGroupBind()
    {
        const string device = Topology.MultiFunction0;
        var id = await context.Api.RegisterAsync(device);
        await KillAtStepAsync("bind", 5, () => context.Api.PostAsync($"/devices/{id}/bind?group=true"));
        var after = await RestartAndCheckAsync(id, device, "group bind", Topology.MultiFunction1);
        if (after.Bool("bound_to_vfio"))
        {
            (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(200);
        }

        KernelChecks.OnHostDriver(context.Kernel, Topology.MultiFunction0, "after the interrupted group bind");
        KernelChecks.OnHostDriver(context.Kernel, Topology.MultiFunction1, "after the interrupted group bind");
    }

    /// <summary>An attach of the e1000e killed at <paramref name="step"/>; then the restart's checks, and a retried attach must succeed.</summary>
    private async Task CrashAttachAsync(int step, Action<Daemon.ApiResponse> checkAfterRestart)
    {
        const string device = Topology.Solo;
        const string instance = "vm-crash";
        var vmm = context.StartSleeper();
        var id = await context.Api.RegisterAsync(device);
        await KillAtStepAsync("attach", step, () => context.Api.AttachAsync(id, instance, vmm.Id));
        checkAfterRestart(await RestartAndCheckAsync(id, device, "attach"));

        var retried = (await context.Api.AttachAsync(id, instance, vmm.Id)).Expect(200);
        Expect.Equal(instance, retried.TextOrNull("attached_to"), "attached_to after the retried attach");
        KernelChecks.OnVfio(context.Kernel, device, "after the retried attach");
        (await context.Api.DetachAsync(id, instance, release: true)).Expect(200);
        KernelChecks.OnHostDriver(context.Kernel, device, "after detach with release");
    }

    /// <summary>A detach with release of the attached e1000e killed at <paramref name="step"/>: recovery finishes it.</summary>
    private async Task CrashDetachReleaseAsync(int step)
    {
        const string device = Topology.Solo;
        var vmm = context.StartSleeper();
        var id = await context.Api.RegisterAsync(device);
        (await context.Api.AttachAsync(id, "vm-leaving", vmm.Id)).Expect(200);
        KernelChecks.OnVfio(context.Kernel, device, "after attach");
        await KillAtStepAsync("detach", step, () => context.Api.DetachAsync(id, "vm-leaving", release: true));
        var after = await RestartAndCheckAsync(id, device, "detach");
        Expect.Equal(null, after.TextOrNull("attached_to"), "attached_to after the interrupted detach");
        // The detach was asked to release the device: finishing it is the only consistent end.
        KernelChecks.OnHostDriver(context.Kernel, device, "after the interrupted detach was recovered");
        Expect.Equal(false, after.Bool("bound_to_vfio"), "bound_to_vfio after the interrupted detach");
    }

    private async Task CrashBindAsync(int step)
    {
        const string device = Topology.RootPortNic;
        var id = await context.Api.RegisterAsync(device);
        await KillAtStepAsync("bind", step, () => context.Api.PostAsync($"/devices/{id}/bind"));
        var after = await RestartAndCheckAsync(id, device, "bind");
        if (after.Bool("bound_to_vfio"))
        {
            (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(200);
        }

        KernelChecks.OnHostDriver(context.Kernel, device, "after the interrupted bind (and an unbind if it had completed)");
    }

    /// <summary>Starts the request, watches the journal, and kills the daemon once <paramref name="operation"/> reaches <paramref name="step"/>.</summary>
    private async Task KillAtStepAsync(string operation, int step, Func<Task<ApiResponse>> request)
    {
        var daemon = context.Daemon;
        var pid = daemon.Pid;
        var inFlight = request();
        var sighting = await Task.Run(() => WatchAndKill(daemon, operation, step, inFlight));
        string answer;
        try
        {
            var response = await inFlight;
            answer = $"{response.Status}: {ApiResponse.Truncate(response.Raw)}";
        }
        catch (HttpRequestException e)
        {
            answer = $"no answer ({e.Message})";
        }

        context.Detail("killed_pid", pid);
        context.Detail("request_answer", answer);
        Expect.True(sighting is not null,
            $"the {operation} ended before its journal showed step {step} (answer: {answer}); nothing was interrupted");
        context.Detail("journal_at_kill", sighting!.DeepClone());
        context.Detail("kernel_at_kill", KernelView());
        context.Log($"killed the daemon at {operation} step {sighting["step"]}: {sighting["step_description"]}");
    }

    /// <summary>Polls journal/ (about every millisecond) and kills the daemon at the first entry of the operation at the step.</summary>
    private static JsonObject? WatchAndKill(DaemonHost daemon, string operation, int step, Task inFlight)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromMinutes(2) && !inFlight.IsCompleted)
        {
            if (Directory.Exists(daemon.JournalDirectory))
            {
                foreach (var file in Directory.EnumerateFiles(daemon.JournalDirectory, "*.json"))
                {
                    if (Path.GetFileName(file).StartsWith('.') || ReadEntry(file) is not { } entry ||
                        entry["operation"]?.GetValue<string>() != operation || (entry["step"]?.GetValue<int>() ?? 0) < step)
                    {
                        continue;
                    }

                    daemon.Kill();
                    entry["seen_after_ms"] = clock.ElapsedMilliseconds;
                    entry["entry_file_present_after_kill"] = File.Exists(file);
                    return entry;
                }
            }

            Thread.Sleep(1);
        }

        return null;
    }

    private static JsonObject? ReadEntry(string file)
    {
        try
        {
            return JsonNode.Parse(File.ReadAllText(file)) as JsonObject;
        }
        catch (Exception e) when (e is IOException or JsonException)
        {
            return null; // replaced or removed while read
        }
    }

    /// <summary>
    /// Restarts the daemon on the same state, waits for /readyz, and checks that record and kernel
    /// agree, the device has a driver, the journal is empty, and the start-up reconcile recovered
    /// the operation. Returns the device as the daemon shows it.
    /// </summary>
    private async Task<Daemon.ApiResponse> RestartAndCheckAsync(string id, string device, string operation, params string[] others)
    {
        var kernel = context.Kernel;
        var ready = await context.Daemon.EnsureReadyAsync();
        var actions = ready["startup_reconcile"]?["actions"]?.AsArray().OfType<JsonObject>().ToList() ?? [];
        context.Detail("startup_reconcile_actions", new JsonArray([.. actions.Select(a => a.DeepClone())]));
        var recovery = actions.FirstOrDefault(a => a["pci_address"]?.GetValue<string>() == device && RecoveryKinds.Contains(a["kind"]?.GetValue<string>()));
        Expect.True(recovery is not null,
            $"the start-up reconcile should report journal_completed or journal_rolled_back for {device}: {ready["startup_reconcile"]?.ToJsonString()}");

        var after = (await context.Api.GetAsync($"/devices/{id}")).Expect(200);
        context.Detail("kernel_after_restart", KernelView());
        context.Detail("device_after_restart", after.Json.DeepClone());
        var bound = after.Bool("bound_to_vfio");
        var functions = others.Prepend(device).ToList();
        var onVfio = functions.All(f => kernel.DriverOf(f) == "vfio-pci") && bound && GuestKernel.VfioGroupNodeExists(kernel.GroupOf(device));
        var onHost = functions.All(f => kernel.DriverOf(f) == Topology.BootDrivers[f] && kernel.OverrideOf(f) == "(null)") && !bound;
        var seen = string.Join(", ", functions.Select(f => $"{f} on {kernel.DriverOf(f) ?? "NO DRIVER"} (driver_override {kernel.OverrideOf(f)})"));
        Expect.True(functions.All(f => kernel.DriverOf(f) is not null), $"after the restart a function has no driver (the {operation} left it stranded): {seen}");
        Expect.True(onVfio || onHost,
            $"after the restart {seen} while the daemon says bound_to_vfio={bound}: expected every function on vfio-pci and bound, " +
            "or every function on its host driver without override and not bound");
        Expect.True(after.Text("state") is not "quarantined", $"{device} is quarantined after the restart: {after.TextOrNull("quarantine_reason")}");
        KernelChecks.JournalEmpty(context.Daemon, "after the start-up reconcile");
        context.Detail("outcome", $"{recovery!["kind"]}: " + (onVfio ? "on vfio-pci and recorded bound" : "on the host drivers and recorded unbound"));
        return after;
    }

    private JsonObject KernelView()
    {
        var kernel = context.Kernel;
        var view = new JsonObject();
        foreach (var address in new[] { Topology.RootPortNic, Topology.Solo, Topology.MultiFunction0, Topology.MultiFunction1 })
        {
            view[address] = $"driver={kernel.DriverOf(address) ?? "none"} override={kernel.OverrideOf(address)}";
        }

        view["dev_vfio"] = string.Join(" ", kernel.DevVfio());
        return view;
    }
}
