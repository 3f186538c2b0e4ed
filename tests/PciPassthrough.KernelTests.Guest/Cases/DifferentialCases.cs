using PciPassthrough.KernelTests.Guest.Differential;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests.Guest.Cases;

/// <summary>The real kernel's side of the kernel-versus-simulator comparison (the host replays it).</summary>
public sealed class DifferentialCases(CaseContext context)
{
    [KernelCase("differential_kernel_trace", Order = 0, NeedsDaemon = false,
        Description = "snapshot of the guest's sysfs, then the fixed raw write sequence applied to the real kernel and recorded step by step")]
    public async Task DifferentialKernelTrace()
    {
        var kernel = context.Kernel;
        var snapshot = SysfsSnapshot.Capture();
        snapshot.Write(context.ArtifactPath(SysfsSnapshot.FileName));
        context.Detail("snapshot_entries", snapshot.Entries.Count);

        var segments = new List<TraceSegment>();
        var unexpected = new List<string>();
        foreach (var segment in DifferentialSequence.Segments)
        {
            var before = kernel.Capture().Differences(kernel.Boot, "now", "boot");
            Expect.True(before.Count == 0, $"segment {segment.Name} does not start from the boot state: {string.Join("; ", before)}");
            var initial = kernel.Capture();
            var steps = new List<TraceStep>();
            foreach (var write in segment.Writes)
            {
                var outcome = WriteOutcome.Of(kernel.Sysfs, write.Path, write.Value);
                var step = new TraceStep
                {
                    Index = steps.Count + 1,
                    Description = write.Description,
                    Path = write.Path,
                    Value = write.Value,
                    Expected = write.Expected,
                    Outcome = outcome,
                    State = kernel.Capture(),
                };
                steps.Add(step);
                if (write.Expected is { } expected && expected != outcome)
                {
                    unexpected.Add($"{segment.Name} step {step.Index} ({write.Description}): the kernel answered {outcome}, the suite expects {expected}");
                }
            }

            foreach (var write in segment.Cleanup)
            {
                _ = WriteOutcome.Of(kernel.Sysfs, write.Path, write.Value);
            }

            var restored = await kernel.RestoreBootStateAsync();
            segments.Add(new TraceSegment { Name = segment.Name, Description = segment.Description, Initial = initial, Steps = steps });
            context.Detail($"segment {segment.Name}", string.Join(", ", steps.Select(s => $"{s.Index}:{s.Outcome}")) +
                (restored.Count > 0 ? $" (restored afterwards: {string.Join("; ", restored)})" : ""));
        }

        new DifferentialTrace { Segments = segments }.Write(context.ArtifactPath(DifferentialTrace.FileName));
        context.Detail("writes", segments.Sum(s => s.Steps.Count));
        Expect.True(unexpected.Count == 0, string.Join("; ", unexpected));
    }
}
