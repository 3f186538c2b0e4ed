using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text;
using PciPassthrough.KernelTests.Guest.Differential;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests;

/// <summary>
/// One run of the guest for the whole suite: <c>guest/run-guest.sh</c> boots the QEMU guest and
/// runs the agent in it against the daemon's build output; the agent writes cases.json (and the
/// differential trace) to a results folder under <c>.cache/</c>. Nothing is built here: the paths
/// come from the project references (AssemblyMetadata). A run that cannot happen (no QEMU, no
/// kernel, a timeout, an agent that crashed) is recorded as <see cref="Failure"/>, and every
/// test then fails with it: the suite never skips.
/// </summary>
public sealed class GuestRun : IAsyncLifetime
{
    /// <summary>run-guest.sh's own limit (default); the process is killed a little after it.</summary>
    public const int DefaultTimeoutSeconds = 900;

    /// <summary>
    /// Set to an earlier run's results folder to judge it again without booting (for working on
    /// the host side); every test prints that it did.
    /// </summary>
    public const string ReuseVariable = "PCIPT_KERNEL_REUSE_RESULTS";

    /// <summary>run-guest.sh's --timeout, overridable for very slow hosts.</summary>
    public const string TimeoutVariable = "PCIPT_KERNEL_TIMEOUT";

    public int TimeoutSeconds { get; } =
        int.TryParse(Environment.GetEnvironmentVariable(TimeoutVariable), NumberStyles.None, CultureInfo.InvariantCulture, out var t) && t > 0
            ? t
            : DefaultTimeoutSeconds;

    public string SuiteDirectory { get; } = Metadata("PciptSuiteDirectory");

    public string DaemonAssembly { get; } = Metadata("PciptDaemonAssembly");

    public string AgentAssembly { get; } = Metadata("PciptAgentAssembly");

    public string ResultsDirectory { get; private set; } = "";

    public int ExitCode { get; private set; } = -1;

    public TimeSpan Elapsed { get; private set; }

    /// <summary>What run-guest.sh printed (it is run with --quiet: its own messages only).</summary>
    public string HarnessOutput { get; private set; } = "";

    /// <summary>Why there are no results to judge, or null when the agent reported.</summary>
    public string? Failure { get; private set; }

    public CasesFile? Cases { get; private set; }

    /// <summary>The earlier results folder judged instead of a new run, or null.</summary>
    public string? Reused { get; private set; }

    public async Task InitializeAsync()
    {
        if (Environment.GetEnvironmentVariable(ReuseVariable) is { Length: > 0 } reuse)
        {
            Reused = ResultsDirectory = Path.GetFullPath(reuse);
            Judge(0);
            return;
        }

        ResultsDirectory = Path.Combine(SuiteDirectory, ".cache",
            "results-" + DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture) + "-" +
            Environment.ProcessId.ToString(CultureInfo.InvariantCulture));
        PruneOldResults();
        Directory.CreateDirectory(ResultsDirectory);
        var script = Path.Combine(SuiteDirectory, "guest", "run-guest.sh");
        foreach (var required in new[] { script, DaemonAssembly, AgentAssembly })
        {
            if (!File.Exists(required))
            {
                Failure = $"{required} does not exist (build the solution first)";
                return;
            }
        }

        var start = new ProcessStartInfo("/bin/bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[]
        {
            script, "--quiet", "--results", ResultsDirectory,
            "--timeout", TimeoutSeconds.ToString(CultureInfo.InvariantCulture),
            "--cwd", Path.GetDirectoryName(AgentAssembly)!,
            "--", DotnetPath(), AgentAssembly, "--daemon", Path.GetDirectoryName(DaemonAssembly)!,
        })
        {
            start.ArgumentList.Add(argument);
        }

        var output = new StringBuilder();
        var clock = Stopwatch.StartNew();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => Append(output, e.Data);
        process.ErrorDataReceived += (_, e) => Append(output, e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(TimeoutSeconds + 120));
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            Append(output, $"run-guest.sh did not end within {TimeoutSeconds + 120} s and was killed");
        }

        Elapsed = clock.Elapsed;
        ExitCode = process.ExitCode;
        lock (output)
        {
            HarnessOutput = output.ToString();
        }

        Judge(ExitCode);
    }

    private void Judge(int exitCode)
    {
        ExitCode = exitCode;
        var casesFile = Path.Combine(ResultsDirectory, CasesFile.FileName);
        if (ExitCode is 124 or 125 || !File.Exists(casesFile))
        {
            Failure = $"the guest run failed: run-guest.sh exited with status {ExitCode} after {Elapsed.TotalSeconds:0} s" +
                (File.Exists(casesFile) ? "" : " and the agent wrote no cases.json") +
                $".\n{HarnessOutput.Trim()}\n---- end of {Path.Combine(ResultsDirectory, "console.log")} ----\n{ConsoleTail(60)}";
        }

        if (File.Exists(casesFile))
        {
            Cases = CasesFile.Read(casesFile);
        }
    }

    public Task DisposeAsync() => Task.CompletedTask;

    /// <summary>Where the results are, and whether they come from an earlier run.</summary>
    public void Describe(ITestOutputHelper output)
    {
        output.WriteLine(Reused is null
            ? $"results: {ResultsDirectory}"
            : $"REUSED results of an earlier run ({ReuseVariable}): {ResultsDirectory}; no guest was booted");
    }

    public CaseResult? Result(string name) => Cases?.Cases.FirstOrDefault(c => c.Name == name);

    /// <summary>The last lines of the guest's serial console (init, agent and kernel messages).</summary>
    public string ConsoleTail(int lines)
    {
        var console = Path.Combine(ResultsDirectory, "console.log");
        return File.Exists(console) ? string.Join('\n', File.ReadLines(console).TakeLast(lines)) : "(no console.log)";
    }

    public string ArtifactPath(string fileName) => Path.Combine(ResultsDirectory, fileName);

    /// <summary>
    /// The dotnet host to run the agent with in the guest (which sees the host's files): the one
    /// running these tests.
    /// </summary>
    private static string DotnetPath()
    {
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host))
        {
            return host;
        }

        return Environment.ProcessPath is { } self && Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : "/usr/bin/dotnet";
    }

    private void PruneOldResults()
    {
        var cache = Path.Combine(SuiteDirectory, ".cache");
        if (!Directory.Exists(cache))
        {
            return;
        }

        foreach (var old in Directory.EnumerateDirectories(cache, "results-*"))
        {
            if (Directory.GetLastWriteTimeUtc(old) < DateTime.UtcNow.AddDays(-1))
            {
                Directory.Delete(old, recursive: true);
            }
        }
    }

    private static void Append(StringBuilder output, string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (output)
        {
            output.AppendLine(line);
        }
    }

    private static string Metadata(string key) =>
        typeof(GuestRun).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == key)?.Value
            ?? throw new InvalidOperationException($"AssemblyMetadata {key} is missing: the project file embeds it at build time");
}

[CollectionDefinition(Name)]
public sealed class GuestCollection : ICollectionFixture<GuestRun>
{
    public const string Name = "Real-kernel guest";
}
