using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using PciPassthrough.Simulation.Tests;

namespace PciPassthrough.Tests.TestDoubles;

/// <summary>
/// The real daemon executable from the test output, as its own process on a free loopback port:
/// what a crash test needs that <c>WebApplicationFactory</c> cannot give (kill -9, an exit status).
/// </summary>
internal sealed class DaemonProcess : IDisposable
{
    private readonly ConcurrentQueue<string> _output = new();

    private DaemonProcess(Process process, HttpClient client)
    {
        Process = process;
        Client = client;
    }

    public Process Process { get; }

    public HttpClient Client { get; }

    /// <summary>The last lines the daemon printed, for assertion messages.</summary>
    public string Output => string.Join('\n', _output.TakeLast(40));

    /// <summary>
    /// Starts the daemon on a simulated host rooted at <paramref name="hostRoot"/> with state in
    /// <paramref name="stateDirectory"/>; <paramref name="extra"/> arguments come last and win.
    /// </summary>
    public static DaemonProcess Start(string hostRoot, string stateDirectory, params string[] extra)
    {
        var port = FreePort();
        var start = new ProcessStartInfo(Path.Combine(AppContext.BaseDirectory, "PciPassthrough.Daemon"))
        {
            WorkingDirectory = AppContext.BaseDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[]
        {
            "--Host:Mode=Simulated",
            $"--Host:Root={hostRoot}",
            $"--State:Directory={stateDirectory}",
            $"--urls=http://127.0.0.1:{port}",
            "--Vfio:OperationTimeout=00:00:05",
            "--Reconcile:Interval=00:00:00",
            "--Serilog:MinimumLevel:Default=Warning",
        }.Concat(extra))
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var name in new[] { "ASPNETCORE_URLS", "DOTNET_URLS", "ASPNETCORE_ENVIRONMENT" })
        {
            start.Environment.Remove(name);
        }

        var process = Process.Start(start)!;
        var daemon = new DaemonProcess(process, new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") });
        process.OutputDataReceived += (_, e) => daemon.Keep(e.Data);
        process.ErrorDataReceived += (_, e) => daemon.Keep(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return daemon;
    }

    /// <summary>Waits until <c>/readyz</c> answers 200; fails when the process exits first.</summary>
    public async Task<DaemonProcess> ReadyAsync()
    {
        await Wait.UntilAsync(() =>
        {
            Assert.False(Process.HasExited, $"the daemon exited with {(Process.HasExited ? Process.ExitCode : 0)}:\n{Output}");
            try
            {
                using var response = Client.GetAsync("/readyz").GetAwaiter().GetResult();
                return response.StatusCode == HttpStatusCode.OK;
            }
            catch (HttpRequestException)
            {
                return false;
            }
        }, "the daemon to become ready");
        return this;
    }

    /// <summary>Registers the device at <paramref name="address"/> and returns its id.</summary>
    public async Task<string> RegisterAsync(string address)
    {
        using var response = await Client.PostAsJsonAsync("/devices", new Dictionary<string, string> { ["pci_address"] = address });
        Assert.True(response.StatusCode == HttpStatusCode.Created, $"registering {address}: {(int)response.StatusCode} {await response.Content.ReadAsStringAsync()}");
        return JsonNode.Parse(await response.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();
    }

    /// <summary>kill -9: no shutdown hooks, no finally blocks, nothing flushed.</summary>
    public void KillHard()
    {
        if (!Process.HasExited)
        {
            Process.Kill(entireProcessTree: true);
        }

        Process.WaitForExit();
    }

    public void Dispose()
    {
        KillHard();
        Client.Dispose();
        Process.Dispose();
    }

    private void Keep(string? line)
    {
        if (line is null)
        {
            return;
        }

        _output.Enqueue(line);
        while (_output.Count > 200)
        {
            _output.TryDequeue(out _);
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
