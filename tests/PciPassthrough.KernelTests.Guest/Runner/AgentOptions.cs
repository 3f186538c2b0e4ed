using System.Globalization;

namespace PciPassthrough.KernelTests.Guest.Runner;

/// <summary>
/// Command line of the agent:
/// <c>PciPassthrough.KernelTests.Guest --daemon DIR [--results DIR] [--only a,b] [--list]</c>.
/// </summary>
public sealed class AgentOptions
{
    /// <summary>The daemon's build output (holds PciPassthrough.Daemon.dll); also its working directory.</summary>
    public required string DaemonDirectory { get; init; }

    /// <summary>Where cases.json and the artifacts go: $PCIPT_RESULTS (the harness's /results) by default.</summary>
    public required string ResultsDirectory { get; init; }

    /// <summary>The daemon's State:Directory, in guest RAM (the overlay's /tmp).</summary>
    public string StateDirectory { get; init; } = "/tmp/pcipt-kernel-state";

    public int Port { get; init; } = 5181;

    /// <summary>The dotnet host that runs the agent runs the daemon too.</summary>
    public string DotnetPath { get; init; } = Environment.ProcessPath ?? "/usr/bin/dotnet";

    /// <summary>How long one daemon start may take to become ready (TCG on a busy host is slow).</summary>
    public int ReadyTimeoutSeconds { get; init; } = 300;

    /// <summary>Run only these cases (for debugging); every case otherwise.</summary>
    public IReadOnlySet<string>? Only { get; init; }

    /// <summary>Print the cases in order and exit.</summary>
    public bool ListOnly { get; init; }

    public static AgentOptions? Parse(IReadOnlyList<string> args, TextWriter error)
    {
        string? daemon = null;
        var results = Environment.GetEnvironmentVariable("PCIPT_RESULTS") ?? "/results";
        HashSet<string>? only = null;
        var list = false;
        var port = 5181;
        for (var i = 0; i < args.Count; i++)
        {
            switch (args[i])
            {
                case "--daemon" when i + 1 < args.Count:
                    daemon = args[++i];
                    break;
                case "--results" when i + 1 < args.Count:
                    results = args[++i];
                    break;
                case "--only" when i + 1 < args.Count:
                    only = [.. args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
                    break;
                case "--port" when i + 1 < args.Count:
                    port = int.Parse(args[++i], CultureInfo.InvariantCulture);
                    break;
                case "--list":
                    list = true;
                    break;
                default:
                    error.WriteLine($"unknown argument '{args[i]}'");
                    return null;
            }
        }

        if (daemon is null && !list)
        {
            error.WriteLine("usage: PciPassthrough.KernelTests.Guest --daemon DIR [--results DIR] [--only case,case] [--port N] [--list]");
            return null;
        }

        return new AgentOptions
        {
            DaemonDirectory = Path.GetFullPath(daemon ?? "."),
            ResultsDirectory = Path.GetFullPath(results),
            Only = only,
            ListOnly = list,
            Port = port,
        };
    }
}
