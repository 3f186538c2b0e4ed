using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Kernel;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests.Guest.Cases;

/// <summary>What the daemon's safety (journal, checks, verification) costs next to bare shell writes.</summary>
public sealed class LatencyCases(CaseContext context)
{
    private const int Cycles = 20;
    private const string Device = Topology.Solo;

    [KernelCase("bind_unbind_latency_vs_raw_shell", Order = 90,
        Description = "20 bind/unbind cycles of 0000:00:02.0 through the daemon next to 20 raw /bin/sh cycles; every cycle must end in the right state")]
    public async Task BindUnbindLatencyVsRawShell()
    {
        var kernel = context.Kernel;
        var group = kernel.GroupOf(Device);
        var id = await context.Api.RegisterAsync(Device);
        var shell = new RawShell(Device, group);

        // One untimed round each: the first request JIT-compiles the daemon's bind path, the first
        // sh start pulls the shell in through 9p.
        var warmBind = (await context.Api.PostAsync($"/devices/{id}/bind")).Expect(200).ElapsedMs;
        var warmUnbind = (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(200).ElapsedMs;
        var warmShell = await shell.BindAsync() + await shell.RestoreAsync();
        context.Detail("warm_up_ms", new JsonObject { ["daemon_bind"] = warmBind, ["daemon_unbind"] = warmUnbind, ["shell_cycle"] = warmShell });

        var daemonBind = new List<double>();
        var daemonUnbind = new List<double>();
        var rawBind = new List<double>();
        var rawUnbind = new List<double>();
        var wrong = new List<string>();
        // Daemon and shell cycles alternate so that both see the same load on the host.
        for (var i = 1; i <= Cycles; i++)
        {
            var bind = await context.Api.PostAsync($"/devices/{id}/bind");
            daemonBind.Add(bind.ElapsedMs);
            Check(bind.Status == 200 && OnVfio(kernel, group), $"daemon cycle {i} bind: status {bind.Status}, driver {kernel.DriverOf(Device)}", wrong);
            var unbind = await context.Api.PostAsync($"/devices/{id}/unbind");
            daemonUnbind.Add(unbind.ElapsedMs);
            Check(unbind.Status == 200 && OnHost(kernel, group), $"daemon cycle {i} unbind: status {unbind.Status}, driver {kernel.DriverOf(Device)}", wrong);

            rawBind.Add(await shell.BindAsync());
            Check(OnVfio(kernel, group), $"raw cycle {i} bind: driver {kernel.DriverOf(Device)}", wrong);
            rawUnbind.Add(await shell.RestoreAsync());
            Check(OnHost(kernel, group), $"raw cycle {i} restore: driver {kernel.DriverOf(Device)}", wrong);
        }

        var summary = new JsonObject
        {
            ["daemon_bind_ms"] = Stats(daemonBind),
            ["daemon_unbind_ms"] = Stats(daemonUnbind),
            ["raw_bind_ms"] = Stats(rawBind),
            ["raw_unbind_ms"] = Stats(rawUnbind),
            ["ratio_bind_median"] = Math.Round(Median(daemonBind) / Median(rawBind), 2),
            ["ratio_unbind_median"] = Math.Round(Median(daemonUnbind) / Median(rawUnbind), 2),
            ["ratio_cycle_median"] = Math.Round(Median(Sum(daemonBind, daemonUnbind)) / Median(Sum(rawBind, rawUnbind)), 2),
        };
        context.Detail("summary", summary);
        context.Detail("samples_ms", new JsonObject
        {
            ["daemon_bind"] = Samples(daemonBind),
            ["daemon_unbind"] = Samples(daemonUnbind),
            ["raw_bind"] = Samples(rawBind),
            ["raw_unbind"] = Samples(rawUnbind),
        });
        context.Log($"latency: {summary.ToJsonString()}");
        Expect.True(wrong.Count == 0, $"{wrong.Count} cycles did not end in the right state: {string.Join("; ", wrong)}");
    }

    private static bool OnVfio(GuestKernel kernel, int group) =>
        kernel.DriverOf(Device) == "vfio-pci" && GuestKernel.VfioGroupNodeExists(group);

    private static bool OnHost(GuestKernel kernel, int group) =>
        kernel.DriverOf(Device) == "e1000e" && kernel.OverrideOf(Device) == "(null)" && !GuestKernel.VfioGroupNodeExists(group);

    private static void Check(bool condition, string message, List<string> wrong)
    {
        if (!condition)
        {
            wrong.Add(message);
        }
    }

    private static List<double> Sum(List<double> a, List<double> b) => a.Zip(b, (x, y) => x + y).ToList();

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static JsonObject Stats(List<double> values) => new()
    {
        ["median"] = Math.Round(Median(values), 1),
        ["min"] = Math.Round(values.Min(), 1),
        ["max"] = Math.Round(values.Max(), 1),
    };

    private static JsonArray Samples(List<double> values) => new([.. values.Select(v => (JsonNode?)Math.Round(v, 1))]);

    /// <summary>
    /// The bind and restore as an operator would type them: one <c>/bin/sh -c</c> per direction,
    /// the three writes, then a wait until the kernel shows the result (builtins only, no fork).
    /// </summary>
    private sealed class RawShell(string address, int group)
    {
        private readonly string _bind = $"""
            D=/sys/bus/pci/devices/{address}
            echo vfio-pci > $D/driver_override
            echo {address} > $D/driver/unbind
            echo {address} > /sys/bus/pci/drivers_probe
            i=0
            until [ -e /sys/bus/pci/drivers/vfio-pci/{address} ] && [ -e /dev/vfio/{group.ToString(CultureInfo.InvariantCulture)} ]; do
              i=$((i+1)); [ $i -lt 200000 ] || exit 3
            done
            """;

        private readonly string _restore = $"""
            D=/sys/bus/pci/devices/{address}
            echo > $D/driver_override
            echo {address} > $D/driver/unbind
            echo {address} > /sys/bus/pci/drivers_probe
            i=0
            until [ -e /sys/bus/pci/drivers/e1000e/{address} ]; do
              i=$((i+1)); [ $i -lt 200000 ] || exit 3
            done
            read o < $D/driver_override; [ "$o" = "(null)" ] || exit 4
            """;

        public Task<double> BindAsync() => RunAsync(_bind);

        public Task<double> RestoreAsync() => RunAsync(_restore);

        private static async Task<double> RunAsync(string script)
        {
            var start = new ProcessStartInfo("/bin/sh") { UseShellExecute = false };
            start.ArgumentList.Add("-c");
            start.ArgumentList.Add(script);
            var clock = Stopwatch.StartNew();
            using var process = Process.Start(start) ?? throw new CaseFailedException("/bin/sh did not start");
            await process.WaitForExitAsync();
            var elapsed = clock.Elapsed.TotalMilliseconds;
            if (process.ExitCode != 0)
            {
                throw new CaseFailedException($"the raw shell cycle exited with status {process.ExitCode}: {script}");
            }

            return elapsed;
        }
    }
}
