using System.Collections.Concurrent;

namespace PciPassthrough.Journal.Tests;

/// <summary>A step an operation reached, with the description its journal entry held at that moment.</summary>
internal sealed record ReachedStep(string Operation, string OperationId, int Step, string? Description);

/// <summary>
/// A crash point that never crashes: it records which operations started and, for each step,
/// what the journal on disk said right before the step ran.
/// </summary>
internal sealed class RecordingCrashPoint : ICrashPoint
{
    private readonly ConcurrentQueue<string> _started = new();
    private readonly ConcurrentQueue<ReachedStep> _reached = new();

    /// <summary>The journal to read step descriptions from (set once the graph is built).</summary>
    public OperationJournal? Journal { get; set; }

    public IReadOnlyList<string> StartedOperations => [.. _started];

    public IReadOnlyList<ReachedStep> ReachedSteps => [.. _reached];

    public void Started(string operation, string operationId) => _started.Enqueue(operation);

    public void Reached(string operation, string operationId, int step)
    {
        var description = Journal?.Pending().FirstOrDefault(e => e.OperationId == operationId)?.StepDescription;
        _reached.Enqueue(new ReachedStep(operation, operationId, step, description));
    }
}
