using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests;

/// <summary>The guest run as a whole: it happened, it reported every case, and it left the kernel as it booted.</summary>
[Collection(GuestCollection.Name)]
public sealed class GuestRunTests(GuestRun guest, ITestOutputHelper output)
{
    [Fact]
    public void GuestRun_ReportsEveryCaseAndRestoresTheKernel()
    {
        guest.Describe(output);
        output.WriteLine($"run-guest.sh: status {guest.ExitCode} after {guest.Elapsed.TotalSeconds:0.0} s (boot, agent, poweroff)");
        output.WriteLine(guest.HarnessOutput.Trim());
        if (guest.Failure is { } failure)
        {
            Assert.Fail(failure);
        }

        var run = guest.Cases!.Run;
        output.WriteLine($"agent started at guest uptime {run["agent_started_uptime_s"]} s, finished at {run["agent_finished_uptime_s"]} s");
        foreach (var start in run["daemon_starts"]?.AsArray().OfType<JsonObject>() ?? [])
        {
            output.WriteLine($"daemon start {start["number"]}: ready after {start["ready_s"]} s");
        }

        foreach (var result in guest.Cases.Cases)
        {
            output.WriteLine($"{(result.Passed ? "pass" : "FAIL")} {result.Name} ({result.DurationMs} ms)");
        }

        var expected = KernelCaseCatalog.All.Select(c => c.Name).ToList();
        var reported = guest.Cases.Cases.Select(c => c.Name).ToList();
        Assert.Equal(expected, reported);
        Assert.True(run["agent_finished_uptime_s"] is not null, "the agent did not finish its run (cases.json has no end time)");
        var leftover = run["left_over_differences_from_boot"]?.AsArray().Select(n => n?.ToString()).ToList() ?? [];
        Assert.True(leftover.Count == 0, "the kernel did not end as it booted: " + string.Join("; ", leftover));
    }
}
