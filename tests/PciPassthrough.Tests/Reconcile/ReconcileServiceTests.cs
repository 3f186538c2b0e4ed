using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using PciPassthrough.Lifecycle;
using PciPassthrough.Registry;
using PciPassthrough.Tests.TestDoubles;
using static PciPassthrough.Lifecycle.Tests.LifecycleTestKit;

namespace PciPassthrough.Reconcile.Tests;

/// <summary>The periodic loop, driven by a fake clock; a run is counted where the runner asks liveness for suspicious processes.</summary>
public sealed class ReconcileServiceTests : IDisposable
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    private readonly SimulatedHost _host = new();
    private readonly ObservedTime _time = new();
    private readonly Gate _gate = new();
    private readonly CapturingLogger _logger = new();

    public void Dispose() => _host.Dispose();

    private ReconcileService Service(ReconcileRunner runner, TimeSpan interval) =>
        new(runner, _gate, Options.Create(new ReconcileOptions { Interval = interval }), _time, _logger);

    [Fact]
    public async Task ExecuteAsync_AfterStartupIsReady_RunsOncePerInterval()
    {
        var liveness = new CountingLiveness(ProcessLiveness(_host));
        using var runner = Runner(_host, liveness);
        using var service = Service(runner, TimeSpan.FromMinutes(1));
        await service.StartAsync(CancellationToken.None);

        // Before start-up is ready the clock may move on: nothing runs, no timer exists yet.
        _time.Advance(TimeSpan.FromMinutes(5));
        Assert.False(_time.TimerCreated.IsCompleted);
        _gate.Open();
        await _time.TimerCreated.WaitAsync(Wait);
        Assert.Equal(0, liveness.Runs);

        for (var n = 1; n <= 3; n++)
        {
            _time.Advance(TimeSpan.FromSeconds(59));
            _time.Advance(TimeSpan.FromSeconds(1));
            await liveness.NextRunAsync();
            Assert.Equal(n, liveness.Runs);
        }

        Assert.NotNull(runner.Last);
        Assert.False(runner.Last!.DryRun);
        await service.StopAsync(CancellationToken.None);
        AssertStoppedCleanly(service);
    }

    [Fact]
    public async Task ExecuteAsync_IntervalZero_NeverRuns()
    {
        var liveness = new CountingLiveness(ProcessLiveness(_host));
        using var runner = Runner(_host, liveness);
        using var service = Service(runner, TimeSpan.Zero);

        await service.StartAsync(CancellationToken.None);
        _gate.Open();
        await service.ExecuteTask!.WaitAsync(Wait);
        _time.Advance(TimeSpan.FromDays(1));

        Assert.True(service.ExecuteTask.IsCompletedSuccessfully);
        Assert.False(_time.TimerCreated.IsCompleted);
        Assert.Equal(0, liveness.Runs);
        Assert.Null(runner.Last);
        Assert.Contains(_logger.Entries, e => e.EventId.Id == 8101 && e.Level == LogLevel.Information);
        await service.StopAsync(CancellationToken.None);
    }

    [Fact]
    public async Task ExecuteAsync_RunFails_LoggedAndTheLoopGoesOn()
    {
        var liveness = new CountingLiveness(ProcessLiveness(_host), failFirst: true);
        using var runner = Runner(_host, liveness);
        using var service = Service(runner, TimeSpan.FromMinutes(1));
        await service.StartAsync(CancellationToken.None);
        _gate.Open();
        await _time.TimerCreated.WaitAsync(Wait);

        _time.Advance(TimeSpan.FromMinutes(1));
        var failure = await _logger.NextAsync(e => e.EventId.Id == 8102);

        Assert.Equal(LogLevel.Error, failure.Level);
        Assert.IsType<IOException>(failure.Exception);
        Assert.Null(runner.Last);
        Assert.False(service.ExecuteTask!.IsCompleted);

        _time.Advance(TimeSpan.FromMinutes(1));
        await liveness.NextRunAsync();
        await liveness.NextRunAsync();

        Assert.Equal(2, liveness.Runs);
        await WaitUntilAsync(() => runner.Last is not null);
        Assert.False(service.ExecuteTask.IsCompleted);
        await service.StopAsync(CancellationToken.None);
        AssertStoppedCleanly(service);
    }

    [Fact]
    public async Task StopAsync_WhileWaitingForStartup_StopsWithoutRunning()
    {
        var liveness = new CountingLiveness(ProcessLiveness(_host));
        using var runner = Runner(_host, liveness);
        using var service = Service(runner, TimeSpan.FromMinutes(1));
        await service.StartAsync(CancellationToken.None);

        await service.StopAsync(CancellationToken.None);
        _gate.Open();
        _time.Advance(TimeSpan.FromMinutes(10));

        AssertStoppedCleanly(service);
        Assert.False(_time.TimerCreated.IsCompleted);
        Assert.Equal(0, liveness.Runs);
    }

    [Fact]
    public async Task StopAsync_AfterRuns_NoMoreRuns()
    {
        var liveness = new CountingLiveness(ProcessLiveness(_host));
        using var runner = Runner(_host, liveness);
        using var service = Service(runner, TimeSpan.FromMinutes(1));
        await service.StartAsync(CancellationToken.None);
        _gate.Open();
        await _time.TimerCreated.WaitAsync(Wait);
        _time.Advance(TimeSpan.FromMinutes(1));
        await liveness.NextRunAsync();

        await service.StopAsync(CancellationToken.None);
        _time.Advance(TimeSpan.FromMinutes(10));

        AssertStoppedCleanly(service);
        Assert.Equal(1, liveness.Runs);
    }

    /// <summary>Stopped: the loop ended by cancellation or normally, never by an exception.</summary>
    private static void AssertStoppedCleanly(ReconcileService service)
    {
        Assert.True(service.ExecuteTask!.IsCompleted);
        Assert.False(service.ExecuteTask.IsFaulted, service.ExecuteTask.Exception?.ToString());
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        using var timeout = new CancellationTokenSource(Wait);
        while (!condition())
        {
            await Task.Delay(5, timeout.Token);
        }
    }

    /// <summary>A fake clock that says when the service has created its periodic timer.</summary>
    private sealed class ObservedTime : FakeTimeProvider
    {
        private readonly TaskCompletionSource _created = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task TimerCreated => _created.Task;

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            _created.TrySetResult();
            return timer;
        }
    }

    private sealed class Gate : IStartupGate
    {
        private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Open() => _ready.TrySetResult();

        public Task WaitReadyAsync(CancellationToken cancellationToken) => _ready.Task.WaitAsync(cancellationToken);
    }

    /// <summary>Counts runs (each run asks once for suspicious processes); the first can fail as a broken /proc scan would.</summary>
    private sealed class CountingLiveness(IInstanceLivenessChecker inner, bool failFirst = false) : IInstanceLivenessChecker
    {
        private readonly SemaphoreSlim _runs = new(0);
        private int _count;

        public int Runs => Volatile.Read(ref _count);

        public Task NextRunAsync() => _runs.WaitAsync(Wait);

        public Task<InstanceState> IsInstanceRunningAsync(AttachmentRecord attachment, CancellationToken cancellationToken) =>
            inner.IsInstanceRunningAsync(attachment, cancellationToken);

        public IReadOnlyList<string> GetInstanceDevices(string instanceId) => inner.GetInstanceDevices(instanceId);

        public IReadOnlyDictionary<string, IReadOnlyList<string>> ListAllInstanceDevices() => inner.ListAllInstanceDevices();

        public IReadOnlyList<SuspiciousProcess> DetectSuspiciousVmmProcesses()
        {
            var n = Interlocked.Increment(ref _count);
            _runs.Release();
            if (failFirst && n == 1)
            {
                throw new IOException("/proc could not be read");
            }

            return inner.DetectSuspiciousVmmProcesses();
        }
    }

    private sealed record LogEntry(LogLevel Level, EventId EventId, Exception? Exception, string Message);

    private sealed class CapturingLogger : ILogger<ReconcileService>
    {
        private readonly ConcurrentQueue<LogEntry> _entries = new();
        private readonly SemaphoreSlim _logged = new(0);

        public IReadOnlyList<LogEntry> Entries => [.. _entries];

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            _entries.Enqueue(new LogEntry(logLevel, eventId, exception, formatter(state, exception)));
            _logged.Release();
        }

        public async Task<LogEntry> NextAsync(Func<LogEntry, bool> match)
        {
            while (true)
            {
                if (_entries.FirstOrDefault(match) is { } entry)
                {
                    return entry;
                }

                Assert.True(await _logged.WaitAsync(Wait), "no such log entry");
            }
        }
    }
}
