using PciPassthrough.KernelTests.Guest.Differential;
using PciPassthrough.Simulation;

namespace PciPassthrough.KernelTests;

/// <summary>
/// The simulated kernel (src's <see cref="SimulatedKernel"/>, what every simulator and API test
/// relies on) against Linux itself: the guest applied a fixed sequence of raw sysfs writes to
/// its real kernel and recorded each answer and the state after it; here the same writes are
/// replayed on a SimulatedKernel over the snapshot of the guest's sysfs taken before them, and
/// compared step by step. Each segment starts from a fresh copy of the snapshot.
/// </summary>
[Collection(GuestCollection.Name)]
public sealed class DifferentialTests(GuestRun guest, ITestOutputHelper output)
{
    [Fact]
    public void SimulatedKernel_AnswersEveryWriteLikeTheRealKernel()
    {
        guest.Describe(output);
        if (guest.Failure is { } failure)
        {
            Assert.Fail(failure);
        }

        var tracePath = guest.ArtifactPath(DifferentialTrace.FileName);
        var snapshotPath = guest.ArtifactPath(SysfsSnapshot.FileName);
        Assert.True(File.Exists(tracePath) && File.Exists(snapshotPath),
            $"the guest wrote no {DifferentialTrace.FileName} / {SysfsSnapshot.FileName} (case differential_kernel_trace: " +
            $"{guest.Result("differential_kernel_trace")?.Message ?? "not reported"})");
        var trace = DifferentialTrace.Read(tracePath);
        var snapshot = SysfsSnapshot.Read(snapshotPath);

        var disagreements = new List<string>();
        var firsts = new List<string>();
        var steps = 0;
        foreach (var segment in trace.Segments)
        {
            int? diverged = null;
            var root = guest.ArtifactPath(Path.Combine("simulated", segment.Name));
            if (Directory.Exists(root))
            {
                Directory.Delete(root, recursive: true);
            }

            snapshot.Materialize(root);
            using var simulated = new SimulatedKernel(root);
            foreach (var line in SysfsState.Capture(simulated).Differences(segment.Initial, "simulator", "kernel"))
            {
                disagreements.Add($"{segment.Name} before the first write: {line}");
            }

            foreach (var step in segment.Steps)
            {
                steps++;
                var outcome = WriteOutcome.Of(simulated, step.Path, step.Value);
                var where = $"{segment.Name} step {step.Index} (write {Show(step.Value)} to {step.Path}: {step.Description})";
                var lines = new List<string>();
                if (outcome != step.Outcome)
                {
                    lines.Add($"outcome: simulator={outcome} kernel={step.Outcome}");
                }

                lines.AddRange(SysfsState.Capture(simulated).Differences(step.State, "simulator", "kernel"));
                if (lines.Count > 0 && diverged is null)
                {
                    // Later steps of the segment start from different states: their disagreements
                    // may only be consequences of this one.
                    diverged = step.Index;
                    firsts.Add($"{where}: {string.Join("; ", lines)}");
                }

                var consequence = diverged is { } d && d != step.Index ? $" [after the divergence at step {d}]" : "";
                disagreements.AddRange(lines.Select(l => $"{where}: {l}{consequence}"));
                output.WriteLine($"{(lines.Count == 0 ? "same" : "DIFF")} {segment.Name} {step.Index}: {step.Description} -> kernel {step.Outcome}, simulator {outcome}");
            }
        }

        output.WriteLine($"{steps} writes in {trace.Segments.Count} segments replayed; {disagreements.Count} disagreements");
        foreach (var line in disagreements)
        {
            output.WriteLine(line);
        }

        Assert.True(disagreements.Count == 0,
            $"the simulated kernel disagrees with Linux in {firsts.Count} of {trace.Segments.Count} segments. First disagreement of each:\n" +
            string.Join("\n", firsts) + $"\nEvery disagreement ({disagreements.Count}):\n" + string.Join("\n", disagreements));
    }

    private static string Show(string value) =>
        "\"" + value.Replace("\n", "\\n", StringComparison.Ordinal).Replace("\0", "\\0", StringComparison.Ordinal) + "\"";
}
