using System.Globalization;
using System.Runtime.InteropServices;

namespace PciPassthrough.Journal;

/// <summary>
/// A hook reached right after a step's intent is journaled and before the step runs: the place
/// where a crash is the hardest to recover from, so crash tests stop operations there.
/// </summary>
public interface ICrashPoint
{
    /// <summary>An operation of this kind has started.</summary>
    void Started(string operation, string operationId);

    /// <summary>Step <paramref name="step"/> (1-based) of the operation is journaled and about to run.</summary>
    void Reached(string operation, string operationId, int step);
}

/// <summary>The production crash point: nothing happens.</summary>
public sealed class NoCrashPoint : ICrashPoint
{
    public void Started(string operation, string operationId)
    {
    }

    public void Reached(string operation, string operationId, int step)
    {
    }
}

/// <summary>
/// Fires once, right before step <see cref="Step"/> of the first operation of kind
/// <see cref="Operation"/>; a step number past that operation's last step never fires.
/// </summary>
public abstract class CrashAtStep(string operation, int step) : ICrashPoint
{
    private string? _firstOperationId;

    public string Operation { get; } = operation;

    public int Step { get; } = step;

    public bool Fired { get; private set; }

    /// <summary>Parses <c>&lt;operation&gt;:&lt;n&gt;</c>.</summary>
    public static (string Operation, int Step) ParseSpec(string spec) =>
        spec.Split(':') is [var operation, var n] &&
        operation is "bind" or "unbind" or "attach" or "detach" or "delete" or "reset" &&
        int.TryParse(n, NumberStyles.None, CultureInfo.InvariantCulture, out var step) && step >= 1
            ? (operation, step)
            : throw new FormatException(
                $"Simulate:CrashAt must be <operation>:<n> with operation bind, unbind, attach, detach, delete or reset and n >= 1 (got '{spec}')");

    public void Started(string operation, string operationId) =>
        Interlocked.CompareExchange(ref _firstOperationId, operation == Operation ? operationId : null, null);

    public void Reached(string operation, string operationId, int step)
    {
        if (!Fired && operation == Operation && step == Step && operationId == Volatile.Read(ref _firstOperationId))
        {
            Fired = true;
            Crash();
        }
    }

    protected abstract void Crash();
}

/// <summary>
/// <c>Simulate:CrashAt</c>: the process exits at once with status 86 and no cleanup at all (no
/// finalizers, no flushing, no shutdown hooks), as if it had been killed.
/// </summary>
public sealed partial class ProcessExitCrashPoint(string operation, int step) : CrashAtStep(operation, step)
{
    public const int ExitCode = 86;

    public static ProcessExitCrashPoint? FromSpec(string? spec)
    {
        if (string.IsNullOrWhiteSpace(spec))
        {
            return null;
        }

        var (operation, step) = ParseSpec(spec);
        return new ProcessExitCrashPoint(operation, step);
    }

    protected override void Crash() => Exit(ExitCode);

    [LibraryImport("libc", EntryPoint = "_exit")]
    private static partial void Exit(int status);
}
