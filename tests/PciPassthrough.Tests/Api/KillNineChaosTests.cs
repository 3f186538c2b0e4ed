using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Tests.TestDoubles;
using Xunit.Abstractions;

namespace PciPassthrough.Daemon.Api.Tests;

/// <summary>
/// An orchestrator's calls against the real daemon process on a simulated host, with the process
/// killed by SIGKILL at random moments (not at chosen journal steps) and restarted on the same
/// state directory and tree. Every answer the daemon gave must match a model of the contract,
/// and after every restart each device must be exactly where the acknowledged calls left it (or,
/// for the one call in flight at the kill, where that call would have left it): records agree with
/// sysfs, nothing is driverless, split or lost, and no intent is left in the journal.
/// </summary>
public sealed class KillNineChaosTests(ITestOutputHelper output) : IDisposable
{
    private const int Rounds = 10;
    private const string SeedVariable = "PCIPT_CHAOS_SEED";

    /// <summary>Devices an orchestrator hands to VMs: alone in their groups, and a GPU whose audio function shares its group.</summary>
    private static readonly Target[] VmDevices =
    [
        new("0000:3b:00.0", "nvme", Companion: null),
        new("0000:d8:00.0", "nvme", Companion: null),
        new("0000:5e:00.0", "i40e", Companion: null),
        new("0000:af:00.0", "nvidia", Companion: ("0000:af:00.1", "snd_hda_intel")),
    ];

    /// <summary>A device an operator registers and deletes again and again.</summary>
    private static readonly Target Registered = new("0000:00:14.0", "xhci_hcd", Companion: null);

    private static readonly string[] Instances = ["vm-a", "vm-b"];

    private readonly TempDirectory _dir = new("pcipt-chaos");
    private readonly List<DaemonProcess> _daemons = [];

    public void Dispose()
    {
        _daemons.ForEach(d => d.Dispose());
        _dir.Dispose();
    }

    [Fact]
    public async Task Daemon_KilledHardAtRandomMomentsOfOrchestratorCalls_EachRestartMatchesWhatWasAcknowledged()
    {
        var seed = int.TryParse(Environment.GetEnvironmentVariable(SeedVariable), out var fixedSeed) ? fixedSeed : Random.Shared.Next();
        output.WriteLine($"seed {seed} (rerun with {SeedVariable}={seed})");
        var random = new Random(seed);
        GpuServerFixture.WriteTo(_dir.Combine("host"));
        var tree = new HostTree(_dir.Combine("host"));

        var daemon = await StartAsync();
        var models = new List<DeviceModel>();
        foreach (var target in VmDevices)
        {
            models.Add(new DeviceModel(target) { Id = await daemon.RegisterAsync(target.Address), IsRegistered = true });
        }

        var registered = new DeviceModel(Registered);
        models.Add(registered);
        var calls = 0;
        var tookEffect = 0;

        for (var round = 1; round <= Rounds; round++)
        {
            var context = $"seed {seed}, round {round}";
            using var stop = new CancellationTokenSource();
            var workers = models.Select(m => RunWorkerAsync(daemon.Client, m, new Random(random.Next()), context, stop.Token)).ToList();

            // Kill somewhere between the middle of the first calls and well into a run of them.
            await Task.Delay(random.Next(5, 400));
            daemon.KillHard();
            await stop.CancelAsync();
            calls += (await Task.WhenAll(workers)).Sum();

            daemon = await StartAsync();
            tookEffect += await CheckAfterRestartAsync(daemon.Client, tree, models, context);
        }

        output.WriteLine($"{calls} acknowledged calls over {Rounds} kills; {tookEffect} calls cut off by a kill had taken effect");
        Assert.True(calls > Rounds, $"seed {seed}: only {calls} calls were acknowledged; the chaos did not exercise the daemon");

        // Everything handed back: nothing stays on vfio-pci, every device is on its own driver again.
        foreach (var model in models.Where(m => m.IsRegistered))
        {
            foreach (var call in new[] { new Call(CallKind.Detach, model.Instance ?? "vm-a", Release: true), new Call(CallKind.Unbind, null, false) })
            {
                Expect(model, call, await SendAsync(daemon.Client, model, call, CancellationToken.None), $"seed {seed}, final release");
            }
        }

        await CheckAfterRestartAsync(daemon.Client, tree, models, $"seed {seed}, final release");
        foreach (var target in VmDevices.Append(Registered))
        {
            Assert.Equal(target.NativeDriver, tree.DriverOf(target.Address));
            Assert.Equal("(null)\n", tree.OverrideOf(target.Address));
        }
    }

    private async Task<DaemonProcess> StartAsync()
    {
        var daemon = DaemonProcess.Start(_dir.Combine("host"), _dir.Combine("state"),
            "--Liveness:Mode=none", "--Vfio:GroupBindOnAttach=true");
        _daemons.Add(daemon);
        return await daemon.ReadyAsync();
    }

    /// <summary>Sequential calls on one device until the daemon dies; returns how many were answered.</summary>
    private static async Task<int> RunWorkerAsync(HttpClient client, DeviceModel model, Random random, string context, CancellationToken stop)
    {
        var answered = 0;
        while (!stop.IsCancellationRequested)
        {
            var call = model.Target == Registered ? NextRegistryCall(model, random) : NextVmCall(model, random);
            model.InFlight = call;
            int status;
            try
            {
                status = await SendAsync(client, model, call, CancellationToken.None);
            }
            catch (HttpRequestException)
            {
                // Never answered, so it may or may not have taken effect. Even "connection refused"
                // proves nothing: the client retries a request that failed on a reused connection,
                // so the daemon may have been working on it when it died.
                return answered;
            }

            Expect(model, call, status, context);
            answered++;
        }

        return answered;
    }

    /// <summary>Checks an answer against the model and moves the model on.</summary>
    private static void Expect(DeviceModel model, Call call, int status, string context)
    {
        var (expected, after) = model.Predict(call);
        model.History.Add($"{call} -> {status}");
        Assert.True(status == expected,
            $"{context}: {call} on {model.Target.Address} ({model}) answered {status}, the contract says {expected}; calls so far: {model.Recent}");
        model.Apply(after);
        model.InFlight = null;
    }

    private static Call NextVmCall(DeviceModel model, Random random) => random.Next(10) switch
    {
        < 4 => new Call(CallKind.Attach, Instances[random.Next(Instances.Length)], false),
        < 7 => new Call(CallKind.Detach, random.Next(4) == 0 ? Instances[random.Next(Instances.Length)] : model.Instance ?? "vm-a", random.Next(2) == 0),
        < 9 => new Call(CallKind.Bind, null, false),
        _ => new Call(CallKind.Unbind, null, false),
    };

    private static Call NextRegistryCall(DeviceModel model, Random random) => random.Next(4) switch
    {
        0 => new Call(CallKind.Create, null, false),
        1 => new Call(model.IsRegistered ? CallKind.Delete : CallKind.Create, null, false),
        2 => new Call(CallKind.Bind, null, false),
        _ => new Call(CallKind.Unbind, null, false),
    };

    private static async Task<int> SendAsync(HttpClient client, DeviceModel model, Call call, CancellationToken cancellationToken)
    {
        if (call.Kind == CallKind.Create)
        {
            using var created = await client.PostAsJsonAsync("/devices", new Dictionary<string, string> { ["pci_address"] = model.Target.Address }, cancellationToken);
            if (created.StatusCode == HttpStatusCode.Created)
            {
                model.Id = JsonNode.Parse(await created.Content.ReadAsStringAsync(cancellationToken))!["id"]!.GetValue<string>();
            }

            return (int)created.StatusCode;
        }

        // An id the daemon never gave (or one already deleted) is a 404 like any other.
        var path = $"/devices/{model.Id ?? "pci-never-registered"}";
        var group = model.Target.Companion is null ? "" : "?group=true";
        using var response = call.Kind switch
        {
            CallKind.Delete => await client.DeleteAsync(path, cancellationToken),
            CallKind.Bind => await client.PostAsync($"{path}/bind{group}", null, cancellationToken),
            CallKind.Unbind => await client.PostAsync($"{path}/unbind", null, cancellationToken),
            CallKind.Attach => await client.PostAsJsonAsync($"{path}/attach", new { instance_id = call.Instance }, cancellationToken),
            _ => await client.PostAsJsonAsync($"{path}/detach", new { instance_id = call.Instance, release = call.Release }, cancellationToken),
        };
        return (int)response.StatusCode;
    }

    /// <summary>Checks every device after a restart; returns how many unanswered calls had taken effect.</summary>
    private async Task<int> CheckAfterRestartAsync(HttpClient client, HostTree tree, List<DeviceModel> models, string context)
    {
        var tookEffect = 0;
        var records = JsonNode.Parse(await client.GetStringAsync("/devices"))!.AsArray()
            .ToDictionary(d => d!["pci_address"]!.GetValue<string>(), d => d!);

        foreach (var model in models)
        {
            var address = model.Target.Address;
            records.TryGetValue(address, out var record);
            var observed = new State(
                record is not null,
                record?["attached_to"]?.GetValue<string>(),
                tree.DriverOf(address) == "vfio-pci");
            var allowed = model.Allowed();
            Assert.True(allowed.Contains(observed),
                $"{context}: {address} is {observed}; after {model} with {(model.InFlight?.ToString() ?? "nothing")} in flight it may only be {string.Join(" or ", allowed)}; calls so far: {model.Recent}");
            model.History.Add($"{(model.InFlight is null ? "" : $"{model.InFlight} in flight, ")}kill -9, restart: {observed}");
            tookEffect += model.InFlight is not null && observed != model.Snapshot ? 1 : 0;
            model.Apply(observed);
            model.InFlight = null;
            if (record is not null)
            {
                model.Id = record["id"]!.GetValue<string>();
            }

            var driver = tree.DriverOf(address);
            Assert.True(driver is not null, $"{context}: {address} was left without a driver");
            Assert.True(observed.Bound || driver == model.Target.NativeDriver,
                $"{context}: {address} is not on vfio-pci, yet on {driver} instead of {model.Target.NativeDriver}");
            Assert.True(observed.Bound || tree.OverrideOf(address) == "(null)\n",
                $"{context}: {address} is back on {driver} with driver_override {tree.OverrideOf(address).Trim()}");
            if (model.Target.Companion is var (companion, companionDriver))
            {
                Assert.True(tree.DriverOf(companion) == (observed.Bound ? "vfio-pci" : companionDriver),
                    $"{context}: the group of {address} is split: it is {(observed.Bound ? "on" : "off")} vfio-pci, {companion} is on {tree.DriverOf(companion)}");
            }

            if (record is not null)
            {
                Assert.True(record["current_driver"]?.GetValue<string>() == driver,
                    $"{context}: the record of {address} says {record["current_driver"]}, sysfs says {driver}");
                Assert.True(record["bound_to_vfio"]!.GetValue<bool>() == observed.Bound, $"{context}: bound_to_vfio of {address} disagrees with sysfs");
                var state = observed.Instance is not null ? "attached" : observed.Bound ? "bound" : "ready";
                Assert.True(record["state"]!.GetValue<string>() == state, $"{context}: {address} has state {record["state"]}, expected {state}");
            }
        }

        Assert.True(Directory.GetFiles(_dir.Combine("state", "journal")).Length == 0, $"{context}: intents left in the journal after start-up");
        Assert.True(Directory.GetFiles(_dir.Combine("state", "quarantine")).Length == 0, $"{context}: a record was quarantined");
        return tookEffect;
    }

    private enum CallKind
    {
        Create,
        Delete,
        Bind,
        Unbind,
        Attach,
        Detach,
    }

    private sealed record Target(string Address, string NativeDriver, (string Address, string Driver)? Companion);

    private sealed record Call(CallKind Kind, string? Instance, bool Release)
    {
        public override string ToString() => Kind switch
        {
            CallKind.Attach => $"attach({Instance})",
            CallKind.Detach => $"detach({Instance}, release: {Release})",
            _ => Kind.ToString().ToLowerInvariant(),
        };
    }

    /// <summary>What the daemon should be holding for one device: registered, attached to whom, on vfio-pci.</summary>
    private sealed record State(bool IsRegistered, string? Instance, bool Bound)
    {
        public override string ToString() =>
            !IsRegistered ? $"unregistered{(Bound ? " on vfio-pci" : "")}" : $"{(Instance is null ? "unattached" : $"attached to {Instance}")}, {(Bound ? "on vfio-pci" : "on its host driver")}";
    }

    private sealed class DeviceModel(Target target)
    {
        public Target Target { get; } = target;

        public string? Id { get; set; }

        public bool IsRegistered { get; set; }

        public string? Instance { get; private set; }

        public bool Bound { get; private set; }

        /// <summary>Every call and its answer, every restart and what it showed.</summary>
        public List<string> History { get; } = [];

        public string Recent => string.Join(" | ", History.TakeLast(12));

        /// <summary>The call sent but not answered when the daemon died, if any.</summary>
        public Call? InFlight { get; set; }

        public State Snapshot => new(IsRegistered, Instance, Bound);

        public void Apply(State state) => (IsRegistered, Instance, Bound) = (state.IsRegistered, state.Instance, state.Bound);

        /// <summary>The states a restart may show: the acknowledged one, or the one the call in flight leads to.</summary>
        public HashSet<State> Allowed() => InFlight is null ? [Snapshot] : [Snapshot, Predict(InFlight).After];

        /// <summary>The contract's answer to <paramref name="call"/> in the current state, and the state after it.</summary>
        public (int Status, State After) Predict(Call call)
        {
            var state = Snapshot;
            if (call.Kind == CallKind.Create)
            {
                return IsRegistered ? (409, state) : (201, state with { IsRegistered = true });
            }

            if (!IsRegistered)
            {
                return (404, state);
            }

            var attachedElsewhere = Instance is not null && Instance != call.Instance;
            return call.Kind switch
            {
                CallKind.Delete when Instance is not null => (409, state),
                CallKind.Delete => (204, new State(false, null, false)),
                CallKind.Bind => (200, state with { Bound = true }),
                CallKind.Unbind when Instance is not null => (409, state),
                CallKind.Unbind => (200, state with { Bound = false }),
                CallKind.Attach when attachedElsewhere => (409, state),
                CallKind.Attach => (200, state with { Instance = call.Instance, Bound = true }),
                _ when attachedElsewhere => (409, state),
                _ => (200, new State(true, null, !call.Release && Bound)),
            };
        }

        public override string ToString() => Snapshot.ToString();
    }
}
