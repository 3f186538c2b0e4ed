using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Daemon;
using PciPassthrough.KernelTests.Guest.Kernel;

namespace PciPassthrough.KernelTests.Guest.Runner;

/// <summary>
/// What a case works with: the daemon (and its API), the real kernel, a place for details and
/// artifacts, and resources it opens (VFIO handles, child processes) that the runner releases
/// after the case whatever happened.
/// </summary>
public sealed class CaseContext(string name, DaemonHost daemon, GuestKernel kernel, AgentOptions options)
{
    private readonly List<IDisposable> _tracked = [];
    private readonly List<Process> _children = [];
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public string Name { get; } = name;

    public DaemonHost Daemon { get; } = daemon;

    public DaemonApi Api => Daemon.Api;

    public GuestKernel Kernel { get; } = kernel;

    public AgentOptions Options { get; } = options;

    public JsonObject Details { get; } = [];

    /// <summary>Records a detail for cases.json (and the host's test output).</summary>
    public void Detail(string key, object? value) =>
        Details[key] = value as JsonNode ?? JsonSerializer.SerializeToNode(value, CasesFile.JsonOptions);

    public void Log(string message) =>
        Console.WriteLine($"agent: [{Name} +{_clock.Elapsed.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture)}s] {message}");

    /// <summary>Keeps a resource until the case ends (disposed before the devices are restored).</summary>
    public T Track<T>(T resource)
        where T : IDisposable
    {
        _tracked.Add(resource);
        return resource;
    }

    /// <summary>A <c>sleep</c> process standing for a VMM (its pid and start time are what attach records).</summary>
    public Process StartSleeper()
    {
        var process = Process.Start(new ProcessStartInfo("sleep", "3600") { UseShellExecute = false })
            ?? throw new InvalidOperationException("sleep did not start");
        _children.Add(process);
        return process;
    }

    public string ArtifactPath(string fileName) => Path.Combine(Options.ResultsDirectory, fileName);

    /// <summary>Closes what the case opened and kills what it started.</summary>
    public void ReleaseResources()
    {
        for (var i = _tracked.Count - 1; i >= 0; i--)
        {
            _tracked[i].Dispose();
        }

        _tracked.Clear();
        foreach (var child in _children)
        {
            if (!child.HasExited)
            {
                child.Kill();
                child.WaitForExit();
            }

            child.Dispose();
        }

        _children.Clear();
    }
}
