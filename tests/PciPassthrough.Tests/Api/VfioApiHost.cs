using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Sysfs;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Daemon.Api.Tests;

/// <summary>
/// The daemon over HTTP with <c>Host:Mode=Simulated</c> on a GPU server tree of the test's own, so
/// the simulated kernel reacts to what the API writes.
/// </summary>
internal sealed class VfioApiHost : IAsyncDisposable
{
    private readonly TempDirectory _dir;

    public VfioApiHost(IReadOnlyDictionary<string, string?>? settings = null, Action<string>? prepareTree = null,
        IReadOnlyDictionary<string, string[]>? faults = null)
    {
        _dir = new TempDirectory("pcipt-api");
        var root = _dir.Combine("host");
        GpuServerFixture.WriteTo(root);
        prepareTree?.Invoke(root);
        var all = new Dictionary<string, string?>
        {
            ["Host:Mode"] = "Simulated",
            ["Vfio:OperationTimeout"] = "00:00:05",
        };
        if (faults is not null)
        {
            var path = _dir.Combine("faults.json");
            File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize(faults));
            all["Simulate:FaultsFile"] = path;
        }

        foreach (var (key, value) in settings ?? new Dictionary<string, string?>())
        {
            all[key] = value;
        }

        Application = new PassthroughApplication(root, _dir.Combine("state"), all);
        Client = Application.CreateClient();
        Tree = new HostTree(root);
    }

    public PassthroughApplication Application { get; }

    public HttpClient Client { get; }

    public HostTree Tree { get; }

    /// <summary>The simulated kernel behind the API.</summary>
    public SimulatedKernel Kernel => Assert.IsType<SimulatedKernel>(Application.Services.GetRequiredService<ISysfs>());

    public static async Task<VfioApiHost> StartAsync(IReadOnlyDictionary<string, string?>? settings = null,
        Action<string>? prepareTree = null, IReadOnlyDictionary<string, string[]>? faults = null)
    {
        var host = new VfioApiHost(settings, prepareTree, faults);
        await Wait.UntilAsync(() => host.Client.GetAsync("/readyz").GetAwaiter().GetResult().StatusCode == HttpStatusCode.OK,
            "the daemon to become ready");
        return host;
    }

    /// <summary>Registers a device and returns its id.</summary>
    public async Task<string> RegisterAsync(string address)
    {
        using var response = await Client.PostAsJsonAsync("/devices", new Dictionary<string, string> { ["pci_address"] = address });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        return (await ReadAsync(response))["id"]!.GetValue<string>();
    }

    public async Task<(HttpStatusCode Status, JsonObject Body, string? MediaType)> PostAsync(string path)
    {
        using var response = await Client.PostAsync(path, content: null);
        return (response.StatusCode, await ReadAsync(response), response.Content.Headers.ContentType?.MediaType);
    }

    public async Task<JsonObject> GetDeviceAsync(string id)
    {
        using var response = await Client.GetAsync($"/devices/{id}");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await ReadAsync(response);
    }

    public static async Task<JsonObject> ReadAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        return JsonNode.Parse(text) as JsonObject ?? throw new InvalidOperationException($"Not a JSON object: {text}");
    }

    public async ValueTask DisposeAsync()
    {
        // A write left stuck on purpose must return before the host shuts down.
        if (Application.Services.GetService<ISysfs>() is SimulatedKernel kernel)
        {
            kernel.ReleaseHangs();
        }

        Client.Dispose();
        await Application.DisposeAsync();
        _dir.Dispose();
    }
}
