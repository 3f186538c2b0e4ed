using System.Text.Json;
using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests;

/// <summary>
/// Every [KernelCase] of the guest agent as its own test, judged by what the agent reported from
/// inside the guest. The list comes from the agent assembly itself, so a new case method is a
/// new test here; a case the agent did not report fails.
/// </summary>
[Collection(GuestCollection.Name)]
public sealed class KernelCaseTests(GuestRun guest, ITestOutputHelper output)
{
    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    public static TheoryData<string> Cases => new(KernelCaseCatalog.All.Select(c => c.Name));

    [Theory]
    [MemberData(nameof(Cases))]
    public void KernelCase(string name)
    {
        var info = KernelCaseCatalog.All.Single(c => c.Name == name);
        output.WriteLine($"{name}: {info.Description}");
        guest.Describe(output);
        if (guest.Failure is { } failure)
        {
            Assert.Fail(failure);
        }

        var result = guest.Result(name);
        if (result is null)
        {
            Assert.Fail($"{name} is not in cases.json: the agent stopped before it (run-guest.sh exited {guest.ExitCode}).\n" +
                $"{guest.HarnessOutput.Trim()}\n---- end of console.log ----\n{guest.ConsoleTail(60)}");
        }

        output.WriteLine($"duration: {result.DurationMs} ms in the guest");
        if (result.Details["summary"] is JsonObject summary && name == "bind_unbind_latency_vs_raw_shell")
        {
            WriteLatency(summary);
        }

        output.WriteLine("details: " + result.Details.ToJsonString(Indented));
        Assert.True(result.Passed, $"{name} failed in the guest: {result.Message}");
    }

    private void WriteLatency(JsonObject summary)
    {
        output.WriteLine("latency (ms)        median     min     max");
        foreach (var key in new[] { "daemon_bind_ms", "raw_bind_ms", "daemon_unbind_ms", "raw_unbind_ms" })
        {
            var s = summary[key]!;
            output.WriteLine($"{key,-18} {s["median"],7} {s["min"],7} {s["max"],7}");
        }

        output.WriteLine($"daemon/raw median ratio: bind {summary["ratio_bind_median"]}, unbind {summary["ratio_unbind_median"]}, " +
            $"whole cycle {summary["ratio_cycle_median"]}");
    }
}
