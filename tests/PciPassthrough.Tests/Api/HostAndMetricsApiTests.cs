using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using PciPassthrough.Simulation;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Daemon.Api.Tests;

public sealed class HostAndMetricsApiTests
{
    private static readonly Dictionary<string, string?> Simulated = new()
    {
        ["Host:Mode"] = "Simulated",
        ["Reconcile:Interval"] = "00:00:00",
    };

    [Fact]
    public async Task GetHost_FixtureWithIommu_ReadyWithRemappingAndNoErrors()
    {
        await using var app = new PassthroughApplication(settings: Simulated);
        using var client = app.CreateClient();

        using var body = JsonDocument.Parse(await client.GetStringAsync(new Uri("/host", UriKind.Relative)));
        var root = body.RootElement;

        Assert.True(root.GetProperty("ready").GetBoolean());
        Assert.True(root.GetProperty("iommu").GetProperty("enabled").GetBoolean());
        Assert.Equal(15, root.GetProperty("iommu").GetProperty("groups").GetInt32());
        Assert.True(root.GetProperty("iommu").GetProperty("interrupt_remapping").GetBoolean());
        Assert.True(root.GetProperty("vfio").GetProperty("vfio_pci_available").GetBoolean());
        Assert.True(root.GetProperty("vfio").GetProperty("dev_vfio").GetBoolean());
        Assert.Contains("intel_iommu=on", root.GetProperty("kernel_cmdline").GetString(), StringComparison.Ordinal);
        Assert.DoesNotContain(root.GetProperty("findings").EnumerateArray(), f => f.GetProperty("severity").GetString() == "error");
    }

    [Fact]
    public async Task GetHost_NoIommuNoVfio_NotReadyWithRemedies()
    {
        using var host = new TempDirectory("pcipt-host");
        new SysfsTreeBuilder(host.Path).AddDevices(GpuServerFixture.Devices.Select(d => d with { IommuGroup = null }));
        await using var app = new PassthroughApplication(hostRoot: host.Path);
        using var client = app.CreateClient();

        using var body = JsonDocument.Parse(await client.GetStringAsync(new Uri("/host", UriKind.Relative)));
        var root = body.RootElement;
        var codes = root.GetProperty("findings").EnumerateArray().Select(f => f.GetProperty("code").GetString()).ToList();

        Assert.False(root.GetProperty("ready").GetBoolean());
        Assert.False(root.GetProperty("iommu").GetProperty("enabled").GetBoolean());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("iommu").GetProperty("interrupt_remapping").ValueKind);
        Assert.Contains("iommu_disabled", codes);
        Assert.Contains("vfio_pci_missing", codes);
        Assert.Contains("dev_vfio_missing", codes);
        Assert.All(root.GetProperty("findings").EnumerateArray(), f => Assert.False(string.IsNullOrEmpty(f.GetProperty("remedy").GetString())));
    }

    [Fact]
    public async Task GetMetrics_AfterBindAndRefusal_CountsDevicesAndOperations()
    {
        await using var app = new PassthroughApplication(settings: Simulated);
        using var client = app.CreateClient();
        var created = await client.PostAsJsonAsync(new Uri("/devices", UriKind.Relative), new { pci_address = "0000:3b:00.0", name = "nvme0" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await client.PostAsync(new Uri("/devices/nvme0/bind", UriKind.Relative), null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await client.PostAsync(new Uri("/devices/nope/bind", UriKind.Relative), null)).StatusCode);

        var metrics = await client.GetStringAsync(new Uri("/metrics", UriKind.Relative));
        var ours = string.Join('\n', metrics.Split('\n').Where(l => l.StartsWith("pcipassthrough_", StringComparison.Ordinal)));

        foreach (var expected in new[]
                 {
                     "pcipassthrough_devices{state=\"bound\"} 1",
                     "pcipassthrough_operations{operation=\"bind\",outcome=\"ok\"} 1",
                     "pcipassthrough_operations{operation=\"bind\",outcome=\"not_found\"} 1",
                     "pcipassthrough_kernel_writes_stuck 0",
                 })
        {
            Assert.True(ours.Contains(expected, StringComparison.Ordinal), $"'{expected}' not in:\n{ours}");
        }
    }
}
