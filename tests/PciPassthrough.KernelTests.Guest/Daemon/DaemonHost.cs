using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Kernel;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests.Guest.Daemon;

/// <summary>
/// The real daemon as a child process of the agent, started the way its unit file starts it:
/// <c>dotnet PciPassthrough.Daemon.dll</c> from its own directory (its content root), against the
/// guest's real root, with its state in <see cref="StateDirectory"/> and periodic reconcile off.
/// Each start logs to its own <c>daemon-N.log</c> in the results folder.
/// </summary>
public sealed class DaemonHost : IDisposable
{
    private readonly AgentOptions _options;
    private readonly HttpClient _http;
    private readonly List<DaemonStart> _starts = [];
    private Process? _process;

    public DaemonHost(AgentOptions options)
    {
        _options = options;
        _http = new HttpClient
        {
            BaseAddress = new Uri($"http://127.0.0.1:{options.Port.ToString(CultureInfo.InvariantCulture)}"),
            Timeout = TimeSpan.FromMinutes(3),
        };
        Api = new DaemonApi(_http);
    }

    public DaemonApi Api { get; }

    public string StateDirectory => _options.StateDirectory;

    public string JournalDirectory => Path.Combine(_options.StateDirectory, "journal");

    /// <summary>Every start so far: when, how long until /readyz answered 200.</summary>
    public IReadOnlyList<DaemonStart> Starts => _starts;

    public bool IsRunning => _process is { HasExited: false };

    /// <summary>Running, and this start has answered /readyz with 200.</summary>
    public bool IsReady => IsRunning && _starts.Count > 0 && _starts[^1].ReadySeconds is not null;

    public int? Pid => IsRunning ? _process!.Id : null;

    /// <summary>Starts the daemon (without waiting for it); a running one is left alone.</summary>
    public void Start()
    {
        if (IsRunning)
        {
            return;
        }

        _process?.Dispose();
        var number = _starts.Count + 1;
        var log = Path.Combine(_options.ResultsDirectory, $"daemon-{number.ToString(CultureInfo.InvariantCulture)}.log");
        // sh execs the daemon with its output appended to the log: the pid is the daemon's own,
        // so a kill -9 of it is a kill of the daemon, and no pipe outlives it.
        var start = new ProcessStartInfo("/bin/sh")
        {
            WorkingDirectory = _options.DaemonDirectory,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("-c");
        start.ArgumentList.Add("exec \"$0\" \"$@\" >>\"$KT_DAEMON_LOG\" 2>&1");
        start.ArgumentList.Add(_options.DotnetPath);
        start.ArgumentList.Add(Path.Combine(_options.DaemonDirectory, "PciPassthrough.Daemon.dll"));
        start.ArgumentList.Add($"--State:Directory={_options.StateDirectory}");
        start.ArgumentList.Add("--urls");
        start.ArgumentList.Add(_http.BaseAddress!.ToString().TrimEnd('/'));
        start.ArgumentList.Add("--Reconcile:Interval=00:00:00");
        start.Environment["KT_DAEMON_LOG"] = log;
        _process = Process.Start(start) ?? throw new InvalidOperationException("the daemon did not start");
        _starts.Add(new DaemonStart(number, _process.Id, log, Stopwatch.StartNew()));
        Console.WriteLine($"agent: daemon start {number} (pid {_process.Id}), log {log}");
    }

    /// <summary>Starts the daemon if needed and waits until /readyz answers 200; returns its body.</summary>
    public async Task<JsonNode> EnsureReadyAsync()
    {
        Start();
        var start = _starts[^1];
        var deadline = TimeSpan.FromSeconds(_options.ReadyTimeoutSeconds);
        while (true)
        {
            if (!IsRunning)
            {
                throw new CaseFailedException(
                    $"the daemon (start {start.Number}) exited with status {_process!.ExitCode} before it was ready; see {Path.GetFileName(start.Log)}: {Tail(start.Log)}");
            }

            try
            {
                var ready = await Api.GetAsync("/readyz");
                if (ready.Status == 200 && ready.Body is not null)
                {
                    if (start.ReadySeconds is null)
                    {
                        start.ReadySeconds = start.Clock.Elapsed.TotalSeconds;
                        Console.WriteLine($"agent: daemon start {start.Number} ready after {start.ReadySeconds:0.0} s");
                    }

                    return ready.Body;
                }
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }

            if (start.Clock.Elapsed > deadline)
            {
                throw new CaseFailedException(
                    $"the daemon (start {start.Number}) was not ready within {deadline.TotalSeconds:0} s; {Tail(start.Log)}");
            }

            await Task.Delay(500);
        }
    }

    /// <summary>kill -9: the process ends at once, with no cleanup of any kind.</summary>
    public void Kill()
    {
        if (_process is null)
        {
            return;
        }

        if (!_process.HasExited)
        {
            _process.Kill();
        }

        _process.WaitForExit();
    }

    /// <summary>SIGTERM (the daemon shuts down as under systemd), SIGKILL after 20 s.</summary>
    public async Task StopAsync()
    {
        if (!IsRunning)
        {
            return;
        }

        _ = Libc.Kill(_process!.Id, Libc.Sigterm);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        try
        {
            await _process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            Kill();
        }
    }

    /// <summary>Kills the daemon and deletes its state: the next start begins with an empty registry.</summary>
    public void Wipe()
    {
        Kill();
        if (Directory.Exists(_options.StateDirectory))
        {
            Directory.Delete(_options.StateDirectory, recursive: true);
        }
    }

    public void Dispose()
    {
        Kill();
        _process?.Dispose();
        _http.Dispose();
    }

    private static string Tail(string log)
    {
        try
        {
            var lines = File.ReadAllLines(log);
            return "last lines: " + string.Join(" | ", lines.TakeLast(8));
        }
        catch (IOException e)
        {
            return $"(log unreadable: {e.Message})";
        }
    }
}

/// <summary>One start of the daemon.</summary>
public sealed class DaemonStart(int number, int pid, string log, Stopwatch clock)
{
    public int Number { get; } = number;

    public int Pid { get; } = pid;

    public string Log { get; } = log;

    public Stopwatch Clock { get; } = clock;

    /// <summary>Seconds from the process start to the first 200 from /readyz; null until then.</summary>
    public double? ReadySeconds { get; set; }
}
