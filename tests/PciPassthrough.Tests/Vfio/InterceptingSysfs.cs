using System.Collections.Concurrent;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Vfio.Tests;

/// <summary>One write that reached the kernel (or was meant to).</summary>
internal sealed record RecordedWrite(string Path, string Value, bool OnThreadPool, string? ResetMethodAtWrite);

/// <summary>
/// An <see cref="ISysfs"/> in front of a (simulated) kernel that records every write and lets a
/// test fail or replace chosen writes, the way a kernel quirk would. Reads go straight through.
/// </summary>
internal sealed class InterceptingSysfs(ISysfs inner) : ISysfs
{
    private readonly ConcurrentQueue<RecordedWrite> _writes = new();
    private int _count;

    public ISysfs Inner { get; } = inner;

    /// <summary>Every write, in the order it was made.</summary>
    public IReadOnlyList<RecordedWrite> Writes => [.. _writes];

    /// <summary>
    /// Called with (1-based write number, path, value) before a write reaches the kernel; return
    /// true to have the kernel refuse it with EIO instead.
    /// </summary>
    public Func<int, string, string, bool>? FailWhen { get; set; }

    /// <summary>Replaces a write: called with (path, value, the inner kernel); return true when handled.</summary>
    public Func<string, string, ISysfs, bool>? Replace { get; set; }

    public string? ReadText(string path) => Inner.ReadText(path);

    public string? ReadLink(string path) => Inner.ReadLink(path);

    public IReadOnlyList<string> ListDirectory(string path) => Inner.ListDirectory(path);

    public bool Exists(string path) => Inner.Exists(path);

    public void Write(string path, string value)
    {
        var number = Interlocked.Increment(ref _count);
        string? resetMethod = null;
        if (path.EndsWith("/reset", StringComparison.Ordinal))
        {
            resetMethod = Inner.ReadText(path + "_method")?.Trim();
        }

        _writes.Enqueue(new RecordedWrite(path, value, Thread.CurrentThread.IsThreadPoolThread, resetMethod));
        if (FailWhen?.Invoke(number, path, value) == true)
        {
            throw KernelErrno.Failure(KernelErrno.EIO, path);
        }

        if (Replace?.Invoke(path, value, Inner) == true)
        {
            return;
        }

        Inner.Write(path, value);
    }
}

/// <summary>Collects the step descriptions an operation journals, in order.</summary>
internal sealed class StepRecorder : IStepJournal
{
    private readonly List<string> _steps = [];

    public IReadOnlyList<string> Steps
    {
        get
        {
            lock (_steps)
            {
                return [.. _steps];
            }
        }
    }

    public Task StepAsync(string description, CancellationToken cancellationToken)
    {
        lock (_steps)
        {
            _steps.Add(description);
        }

        return Task.CompletedTask;
    }
}
