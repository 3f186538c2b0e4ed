using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;

namespace PciPassthrough.Daemon.Api.Tests;

/// <summary>
/// <c>Simulate:CrashAt</c> with the real daemon process: it dies (exit status 86, no cleanup, no
/// finally blocks) right before a journaled step, and the next start recovers before turning ready.
/// </summary>
public sealed class SimulateCrashAtTests : IDisposable
{
    private const string Nvme = "0000:3b:00.0";

    private readonly ScratchDirectory _dir = new("pcipt-crashat");
    private readonly HostTree _tree;
    private readonly List<Process> _started = [];
    private readonly List<HttpClient> _clients = [];

    public SimulateCrashAtTests()
    {
        GpuServerFixture.WriteTo(_dir.Combine("host"));
        _tree = new HostTree(_dir.Combine("host"));
    }

    public void Dispose()
    {
        _clients.ForEach(c => c.Dispose());
        foreach (var process in _started)
        {
            if (!process.HasExited)
            {
                process.Kill();
                process.WaitForExit();
            }

            process.Dispose();
        }

        _dir.Dispose();
    }

    [Fact]
    public async Task Daemon_CrashAtBindStep2_Exits86AndTheNextStartRollsTheBindBack()
    {
        var (crashing, client) = await StartAsync("--Simulate:CrashAt=bind:2");
        var id = await RegisterAsync(client, Nvme);

        await Assert.ThrowsAnyAsync<HttpRequestException>(() => client.PostAsync($"/devices/{id}/bind", content: null));
        Assert.True(crashing.WaitForExit(Wait.Guard));
        Assert.Equal(86, crashing.ExitCode);
        Assert.Equal("vfio-pci\n", _tree.OverrideOf(Nvme));
        Assert.Equal("nvme", _tree.DriverOf(Nvme));

        var (_, restarted) = await StartAsync();
        var ready = JsonNode.Parse(await restarted.GetStringAsync("/readyz"))!;
        var device = JsonNode.Parse(await restarted.GetStringAsync($"/devices/{id}"))!;

        var action = Assert.Single(ready["startup_reconcile"]!["actions"]!.AsArray())!;
        Assert.Equal("journal_rolled_back", action["kind"]!.GetValue<string>());
        Assert.Equal("ready", device["state"]!.GetValue<string>());
        Assert.Equal("nvme", device["current_driver"]!.GetValue<string>());
        Assert.Equal("(null)\n", _tree.OverrideOf(Nvme));
        Assert.Empty(Directory.GetFiles(_dir.Combine("state", "journal")));
    }

    [Fact]
    public async Task Daemon_CrashAtResetWithMethodBeforeTheReset_NextStartRestoresTheResetMethods()
    {
        var (crashing, client) = await StartAsync("--Simulate:CrashAt=reset:2");
        var id = await RegisterAsync(client, Nvme);

        await Assert.ThrowsAnyAsync<HttpRequestException>(() => client.PostAsync($"/devices/{id}/reset?method=flr", content: null));
        Assert.True(crashing.WaitForExit(Wait.Guard));
        Assert.Equal(86, crashing.ExitCode);
        Assert.Equal("flr\n", _tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));

        var (_, restarted) = await StartAsync();
        await restarted.GetStringAsync("/readyz");

        Assert.Equal("flr bus\n", _tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
    }

    private async Task<(Process Process, HttpClient Client)> StartAsync(params string[] extra)
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
            $"--Host:Root={_dir.Combine("host")}",
            $"--State:Directory={_dir.Combine("state")}",
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
        _started.Add(process);
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var client = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
        _clients.Add(client);
        await Wait.UntilAsync(() =>
        {
            Assert.False(process.HasExited, $"the daemon exited with {(process.HasExited ? process.ExitCode : 0)}");
            try
            {
                return client.GetAsync("/readyz").GetAwaiter().GetResult().StatusCode == HttpStatusCode.OK;
            }
            catch (HttpRequestException)
            {
                return false;
            }
        }, "the daemon to become ready");
        return (process, client);
    }

    private static async Task<string> RegisterAsync(HttpClient client, string address)
    {
        using var response = await client.PostAsJsonAsync("/devices", new Dictionary<string, string> { ["pci_address"] = address });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        return JsonNode.Parse(await response.Content.ReadAsStringAsync())!["id"]!.GetValue<string>();
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
