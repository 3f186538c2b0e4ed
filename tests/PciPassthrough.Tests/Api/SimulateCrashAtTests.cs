using System.Text.Json.Nodes;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Daemon.Api.Tests;

/// <summary>
/// <c>Simulate:CrashAt</c> with the real daemon process: it dies (exit status 86, no cleanup, no
/// finally blocks) right before a journaled step, and the next start recovers before turning ready.
/// </summary>
public sealed class SimulateCrashAtTests : IDisposable
{
    private const string Nvme = "0000:3b:00.0";

    private readonly TempDirectory _dir = new("pcipt-crashat");
    private readonly HostTree _tree;
    private readonly List<DaemonProcess> _started = [];

    public SimulateCrashAtTests()
    {
        GpuServerFixture.WriteTo(_dir.Combine("host"));
        _tree = new HostTree(_dir.Combine("host"));
    }

    public void Dispose()
    {
        _started.ForEach(d => d.Dispose());
        _dir.Dispose();
    }

    [Fact]
    public async Task Daemon_CrashAtBindStep2_Exits86AndTheNextStartRollsTheBindBack()
    {
        var crashing = await StartAsync("--Simulate:CrashAt=bind:2");
        var id = await crashing.RegisterAsync(Nvme);

        await Assert.ThrowsAnyAsync<HttpRequestException>(() => crashing.Client.PostAsync($"/devices/{id}/bind", content: null));
        Assert.True(crashing.Process.WaitForExit(Wait.Guard));
        Assert.Equal(86, crashing.Process.ExitCode);
        Assert.Equal("vfio-pci\n", _tree.OverrideOf(Nvme));
        Assert.Equal("nvme", _tree.DriverOf(Nvme));

        var restarted = (await StartAsync()).Client;
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
        var crashing = await StartAsync("--Simulate:CrashAt=reset:2");
        var id = await crashing.RegisterAsync(Nvme);

        await Assert.ThrowsAnyAsync<HttpRequestException>(() => crashing.Client.PostAsync($"/devices/{id}/reset?method=flr", content: null));
        Assert.True(crashing.Process.WaitForExit(Wait.Guard));
        Assert.Equal(86, crashing.Process.ExitCode);
        Assert.Equal("flr\n", _tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));

        var restarted = (await StartAsync()).Client;
        await restarted.GetStringAsync("/readyz");

        Assert.Equal("flr bus\n", _tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
    }

    private async Task<DaemonProcess> StartAsync(params string[] extra)
    {
        var daemon = DaemonProcess.Start(_dir.Combine("host"), _dir.Combine("state"), extra);
        _started.Add(daemon);
        return await daemon.ReadyAsync();
    }
}
