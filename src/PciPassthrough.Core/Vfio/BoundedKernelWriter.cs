using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using PciPassthrough.Devices;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Vfio;

/// <summary>
/// Runs kernel writes that can block (an unbind waits for every user of the device) on a thread
/// of their own and gives up waiting after <see cref="VfioOptions.OperationTimeout"/>. A write that
/// times out keeps its thread (a write stuck in the kernel cannot be cancelled) but never a
/// thread-pool thread, so a stuck device cannot starve the daemon.
/// </summary>
public sealed partial class BoundedKernelWriter(ISysfs sysfs, IOptions<VfioOptions> options, TimeProvider time,
    ILogger<BoundedKernelWriter> logger)
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<PciAddress, int> _stuckByDevice = new();
    private int _stuck;

    /// <summary>Writes that timed out and have not returned yet.</summary>
    public int StuckWrites => Volatile.Read(ref _stuck);

    /// <summary>
    /// Whether a write about this function is still stuck in the kernel. Until it returns, the
    /// function is left alone: even reads of some of its attributes block meanwhile (Linux holds
    /// the device lock through a waiting remove, and <c>driver_override</c>'s show takes it).
    /// </summary>
    public bool IsStuck(PciAddress address) => _stuckByDevice.ContainsKey(address);

    public TimeSpan Timeout => options.Value.OperationTimeout;

    /// <exception cref="KernelWriteTimeoutException">The write did not return in time.</exception>
    /// <exception cref="IOException">The kernel refused the write.</exception>
    public async Task WriteAsync(string path, string value, CancellationToken cancellationToken = default)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var thread = new Thread(() =>
        {
            try
            {
                sysfs.Write(path, value);
                done.TrySetResult();
            }
            catch (Exception e)
            {
                done.TrySetException(e);
            }
        })
        {
            IsBackground = true,
            Name = "kernel-write",
        };
        thread.Start();

        try
        {
            await done.Task.WaitAsync(Timeout, time, cancellationToken);
        }
        catch (TimeoutException)
        {
            Interlocked.Increment(ref _stuck);
            var device = DeviceOf(path, value);
            if (device is { } d)
            {
                _stuckByDevice.AddOrUpdate(d, 1, (_, n) => n + 1);
            }

            LogStuck(logger, path, Timeout.TotalSeconds);
            _ = done.Task.ContinueWith(t =>
            {
                Interlocked.Decrement(ref _stuck);
                if (device is { } d && _stuckByDevice.AddOrUpdate(d, 0, (_, n) => n - 1) <= 0)
                {
                    _stuckByDevice.TryRemove(new KeyValuePair<PciAddress, int>(d, 0));
                }

                LogUnstuck(logger, path, t.IsFaulted ? t.Exception?.InnerException?.Message : "ok");
            }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            throw new KernelWriteTimeoutException(path, Timeout);
        }
    }

    /// <summary>The function a write is about: the address written (bind, unbind, probe) or in the path (reset, override).</summary>
    private static PciAddress? DeviceOf(string path, string value)
    {
        var trimmed = value.TrimEnd('\n');
        if (PciAddress.TryParse(trimmed, out var written) && trimmed == written.ToString())
        {
            return written;
        }

        var parts = path.Split('/');
        return parts.Length > 5 && parts[4] == "devices" && PciAddress.TryParse(parts[5], out var inPath) ? inPath : null;
    }

    [LoggerMessage(EventId = 6101, Level = LogLevel.Error,
        Message = "Kernel write to {Path} did not return within {TimeoutSeconds} s; leaving it to finish on its own")]
    private static partial void LogStuck(ILogger logger, string path, double timeoutSeconds);

    [LoggerMessage(EventId = 6102, Level = LogLevel.Warning,
        Message = "Kernel write to {Path} that had timed out finally returned: {Outcome}")]
    private static partial void LogUnstuck(ILogger logger, string path, string? outcome);
}

/// <summary>A kernel write that did not return within the configured time.</summary>
public sealed class KernelWriteTimeoutException : TimeoutException
{
    public KernelWriteTimeoutException(string path, TimeSpan timeout)
        : base($"The kernel did not finish the write to {path} within {timeout.TotalSeconds:0.###} s")
    {
        Path = path;
    }

    public KernelWriteTimeoutException()
    {
        Path = "";
    }

    public KernelWriteTimeoutException(string message)
        : base(message)
    {
        Path = "";
    }

    public KernelWriteTimeoutException(string message, Exception innerException)
        : base(message, innerException)
    {
        Path = "";
    }

    public string Path { get; }
}
