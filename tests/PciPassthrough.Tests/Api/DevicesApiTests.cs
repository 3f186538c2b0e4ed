using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using PciPassthrough.Devices;
using PciPassthrough.Simulation;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Daemon.Api.Tests;

/// <summary>
/// The <c>/devices</c> contract end to end: the daemon in-process over a GPU-server tree, a small
/// pci.ids of the test's own (so which names are null is known) and a temp state directory.
/// </summary>
public sealed partial class DevicesApiTests : IClassFixture<DevicesApiTests.SharedDaemon>, IDisposable
{
    private const string Ids =
        "10de  NVIDIA Corporation\n" +
        "\t2230  GA102GL [RTX A6000]\n" +
        "\t1aef  GA102 High Definition Audio Controller\n" +
        "8086  Intel Corporation\n" +
        "\t1572  Ethernet Controller X710 for 10GbE SFP+\n" +
        "C 03  Display controller\n" +
        "\t00  VGA compatible controller\n";

    /// <summary>A function with nothing optional: unknown ids, no driver, no NUMA node.</summary>
    private const string Bare = "0000:60:00.0";

    private static readonly string[] DeviceFields =
    [
        "id", "name", "type", "pci_address", "vendor_id", "device_id", "iommu_group", "bound_to_vfio", "attached_to",
        "created_at", "vendor_name", "device_name", "class_code", "current_driver", "original_driver", "numa_node",
        "sysfs_path", "vfio_group_path", "state",
    ];

    private static readonly string[] AvailableFields =
    [
        "pci_address", "vendor_id", "device_id", "vendor_name", "device_name", "iommu_group", "current_driver",
        "class_code", "type", "numa_node", "registered", "iommu_group_members",
    ];

    private readonly SharedDaemon _shared;
    private readonly Lazy<TempDirectory> _host = new(() => WriteHost(new TempDirectory("pcipt-api-host")));
    private readonly Lazy<TempDirectory> _state = new(() => new TempDirectory("pcipt-api-state"));

    public DevicesApiTests(SharedDaemon shared)
    {
        _shared = shared;
    }

    public void Dispose()
    {
        if (_host.IsValueCreated)
        {
            _host.Value.Dispose();
        }

        if (_state.IsValueCreated)
        {
            _state.Value.Dispose();
        }
    }

    /// <summary>
    /// One daemon for the tests that only read or are refused: it holds exactly one device,
    /// <see cref="SharedDaemon.Id"/> named <c>gpu0</c> at <c>0000:af:00.0</c>, and a refused request must
    /// leave it that way. Tests that register or delete devices start a daemon of their own.
    /// </summary>
    public sealed class SharedDaemon : IAsyncLifetime
    {
        private readonly TempDirectory _host = WriteHost(new TempDirectory("pcipt-api-shared-host"));
        private readonly TempDirectory _state = new("pcipt-api-shared-state");
        private PassthroughApplication? _app;

        public string Id { get; private set; } = "";

        public string StatePath => _state.Path;

        public HttpClient Client { get; private set; } = null!;

        public async Task InitializeAsync()
        {
            _app = new PassthroughApplication(_host.Path, _state.Path, Settings(_host.Path));
            Client = _app.CreateClient();
            Id = (await CreateAsync(Client, "0000:af:00.0", "gpu0")).GetProperty("id").GetString()!;
        }

        public Task DisposeAsync()
        {
            _app?.Dispose();
            _host.Dispose();
            _state.Dispose();
            return Task.CompletedTask;
        }
    }

    private static TempDirectory WriteHost(TempDirectory host)
    {
        GpuServerFixture.WriteTo(host.Path).AddDevice(new SimulatedDeviceSpec
        {
            Address = PciAddress.Parse(Bare),
            VendorId = 0x1234,
            DeviceId = 0x5678,
            ClassCode = 0x120000,
            IommuGroup = 60,
        });
        File.WriteAllText(Path.Combine(host.Path, "pci.ids"), Ids);
        return host;
    }

    private static Dictionary<string, string?> Settings(string host) =>
        new() { ["Host:PciIds"] = Path.Combine(host, "pci.ids") };

    private HttpClient Shared => _shared.Client;

    /// <summary>The shared daemon still holds exactly its one device.</summary>
    private async Task AssertSharedUnchangedAsync()
    {
        var list = (await HttpAssert.JsonBodyAsync(await Shared.GetAsync("/devices"))).EnumerateArray().ToList();
        Assert.Equal(_shared.Id, Assert.Single(list).GetProperty("id").GetString());
    }

    [GeneratedRegex(@"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z$")]
    private static partial Regex Rfc3339Utc();

    [GeneratedRegex("^[0-9a-f]{4}$")]
    private static partial Regex Hex4();

    [GeneratedRegex("^[0-9a-f]{6}$")]
    private static partial Regex Hex6();

    private PassthroughApplication App() => new(_host.Value.Path, _state.Value.Path, Settings(_host.Value.Path));

    private static Task<HttpResponseMessage> PostAsync(HttpClient client, string json, string mediaType = "application/json") =>
        client.PostAsync("/devices", HttpAssert.Json(json, mediaType));

    private static async Task<JsonElement> CreateAsync(HttpClient client, string address, string? name = null)
    {
        var body = name is null
            ? $$"""{"pci_address":"{{address}}"}"""
            : $$"""{"pci_address":"{{address}}","name":"{{name}}"}""";
        var response = await PostAsync(client, body);
        Assert.True(response.StatusCode == HttpStatusCode.Created, await response.Content.ReadAsStringAsync());
        return await HttpAssert.JsonBodyAsync(response);
    }

    private static void AssertDeviceShape(JsonElement device)
    {
        Assert.Equal(JsonValueKind.Object, device.ValueKind);
        foreach (var field in DeviceFields)
        {
            Assert.True(device.TryGetProperty(field, out _), $"Device lacks {field}: {device}");
        }

        Assert.True(Cuid2Generator.IsCuid2(device.GetProperty("id").GetString()));
        Assert.True(DeviceNames.IsValid(device.GetProperty("name").GetString()));
        Assert.Contains(device.GetProperty("type").GetString(), new[] { "gpu", "pci" });
        Assert.True(PciAddress.TryParse(device.GetProperty("pci_address").GetString(), out var address));
        Assert.Equal(address.ToString(), device.GetProperty("pci_address").GetString());
        Assert.Matches(Hex4(), device.GetProperty("vendor_id").GetString());
        Assert.Matches(Hex4(), device.GetProperty("device_id").GetString());
        Assert.Equal(JsonValueKind.Number, device.GetProperty("iommu_group").ValueKind);
        Assert.True(device.GetProperty("iommu_group").TryGetInt32(out _));
        Assert.Contains(device.GetProperty("bound_to_vfio").ValueKind, new[] { JsonValueKind.True, JsonValueKind.False });
        Assert.Contains(device.GetProperty("attached_to").ValueKind, new[] { JsonValueKind.Null, JsonValueKind.String });
        Assert.Matches(Rfc3339Utc(), device.GetProperty("created_at").GetString());
        Assert.Contains(device.GetProperty("vendor_name").ValueKind, new[] { JsonValueKind.Null, JsonValueKind.String });
        Assert.Contains(device.GetProperty("device_name").ValueKind, new[] { JsonValueKind.Null, JsonValueKind.String });
        Assert.Matches(Hex6(), device.GetProperty("class_code").GetString());
        Assert.Contains(device.GetProperty("current_driver").ValueKind, new[] { JsonValueKind.Null, JsonValueKind.String });
        Assert.Contains(device.GetProperty("original_driver").ValueKind, new[] { JsonValueKind.Null, JsonValueKind.String });
        Assert.Contains(device.GetProperty("numa_node").ValueKind, new[] { JsonValueKind.Null, JsonValueKind.Number });
        Assert.Equal($"/sys/bus/pci/devices/{address}", device.GetProperty("sysfs_path").GetString());
        Assert.Contains(device.GetProperty("vfio_group_path").ValueKind, new[] { JsonValueKind.Null, JsonValueKind.String });
        Assert.Contains(device.GetProperty("state").GetString(), new[] { "ready", "bound", "attached", "missing", "changed", "quarantined" });
    }

    private static void AssertAvailableShape(JsonElement device)
    {
        foreach (var field in AvailableFields)
        {
            Assert.True(device.TryGetProperty(field, out _), $"AvailableDevice lacks {field}: {device}");
        }

        Assert.True(PciAddress.TryParse(device.GetProperty("pci_address").GetString(), out var address));
        Assert.Equal(address.ToString(), device.GetProperty("pci_address").GetString());
        Assert.Matches(Hex4(), device.GetProperty("vendor_id").GetString());
        Assert.Matches(Hex4(), device.GetProperty("device_id").GetString());
        Assert.Contains(device.GetProperty("vendor_name").ValueKind, new[] { JsonValueKind.Null, JsonValueKind.String });
        Assert.Contains(device.GetProperty("device_name").ValueKind, new[] { JsonValueKind.Null, JsonValueKind.String });
        Assert.True(device.GetProperty("iommu_group").TryGetInt32(out _));
        Assert.Contains(device.GetProperty("current_driver").ValueKind, new[] { JsonValueKind.Null, JsonValueKind.String });
        Assert.Matches(Hex6(), device.GetProperty("class_code").GetString());
        Assert.Contains(device.GetProperty("type").GetString(), new[] { "gpu", "pci" });
        Assert.Contains(device.GetProperty("numa_node").ValueKind, new[] { JsonValueKind.Null, JsonValueKind.Number });
        Assert.Contains(device.GetProperty("registered").ValueKind, new[] { JsonValueKind.True, JsonValueKind.False });
        Assert.Equal(JsonValueKind.Array, device.GetProperty("iommu_group_members").ValueKind);
        Assert.All(device.GetProperty("iommu_group_members").EnumerateArray(), m => Assert.True(PciAddress.IsValid(m.GetString())));
    }

    // ---- GET /devices, POST /devices ----

    [Fact]
    public async Task ListDevices_Empty_EmptyArray()
    {
        using var app = App();
        var response = await app.CreateClient().GetAsync("/devices");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        HttpAssert.MediaType(response, "application/json");
        Assert.Equal("[]", await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task CreateDevice_WithName_201LocationAndContractFields()
    {
        using var app = App();
        var client = app.CreateClient();

        var response = await PostAsync(client, """{"pci_address":"0000:17:00.0","name":"gpu0"}""");

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        HttpAssert.MediaType(response, "application/json");
        var device = await HttpAssert.JsonBodyAsync(response);
        AssertDeviceShape(device);
        var id = device.GetProperty("id").GetString();
        Assert.Equal($"/devices/{id}", response.Headers.Location?.OriginalString);
        Assert.Equal("gpu0", device.GetProperty("name").GetString());
        Assert.Equal("gpu", device.GetProperty("type").GetString());
        Assert.Equal("0000:17:00.0", device.GetProperty("pci_address").GetString());
        Assert.Equal("10de", device.GetProperty("vendor_id").GetString());
        Assert.Equal("2230", device.GetProperty("device_id").GetString());
        Assert.Equal(11, device.GetProperty("iommu_group").GetInt32());
        Assert.False(device.GetProperty("bound_to_vfio").GetBoolean());
        Assert.Equal(JsonValueKind.Null, device.GetProperty("attached_to").ValueKind);
        Assert.Equal("NVIDIA Corporation", device.GetProperty("vendor_name").GetString());
        Assert.Equal("GA102GL [RTX A6000]", device.GetProperty("device_name").GetString());
        Assert.Equal("030000", device.GetProperty("class_code").GetString());
        Assert.Equal("nvidia", device.GetProperty("current_driver").GetString());
        Assert.Equal("nvidia", device.GetProperty("original_driver").GetString());
        Assert.Equal(0, device.GetProperty("numa_node").GetInt32());
        Assert.Equal(JsonValueKind.Null, device.GetProperty("vfio_group_path").ValueKind);
        Assert.Equal("ready", device.GetProperty("state").GetString());

        var fetched = await client.GetAsync(response.Headers.Location);
        Assert.Equal(HttpStatusCode.OK, fetched.StatusCode);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(device.GetRawText()), JsonNode.Parse(await fetched.Content.ReadAsStringAsync())));
    }

    [Fact]
    public async Task CreateDevice_BareDevice_NullsPresentAsNull()
    {
        using var app = App();
        var client = app.CreateClient();

        var device = await CreateAsync(client, Bare);

        AssertDeviceShape(device);
        Assert.Equal("pci-0000-60-00-0", device.GetProperty("name").GetString());
        Assert.Equal("pci", device.GetProperty("type").GetString());
        Assert.Equal("120000", device.GetProperty("class_code").GetString());
        foreach (var field in new[] { "attached_to", "vendor_name", "device_name", "current_driver", "original_driver", "numa_node", "vfio_group_path" })
        {
            Assert.True(device.GetProperty(field).ValueKind == JsonValueKind.Null, $"{field} should be null: {device}");
        }

        var listed = Assert.Single((await HttpAssert.JsonBodyAsync(await client.GetAsync("/devices"))).EnumerateArray());
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(device.GetRawText()), JsonNode.Parse(listed.GetRawText())));
    }

    [Theory]
    [InlineData("0000:AF:00.0")]
    [InlineData("af:00.0")]
    [InlineData("AF:00.0")]
    public async Task CreateDevice_AddressSpellings_Normalized(string address)
    {
        using var app = App();

        var device = await CreateAsync(app.CreateClient(), address);

        Assert.Equal("0000:af:00.0", device.GetProperty("pci_address").GetString());
        Assert.Equal("pci-0000-af-00-0", device.GetProperty("name").GetString());
    }

    [Fact]
    public async Task CreateDevice_CharsetInContentType_Accepted()
    {
        using var app = App();
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes("""{"pci_address":"0000:17:00.0"}"""));
        content.Headers.ContentType = HttpAssert.ContentType("application/json; charset=utf-8");

        var response = await app.CreateClient().PostAsync("/devices", content);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
    }

    [Fact]
    public async Task ListDevices_OrderedByCreatedAtThenId()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 2, 3, 4, 5, 6, TimeSpan.Zero));
        using var app = App();
        using var timed = app.WithWebHostBuilder(b => b.ConfigureTestServices(s => s.AddSingleton<TimeProvider>(time)));
        var client = timed.CreateClient();
        var sameTime = new List<string>();
        foreach (var address in new[] { "0000:17:00.0", "0000:af:00.0", "0000:3b:00.0", "0000:d8:00.0" })
        {
            sameTime.Add((await CreateAsync(client, address)).GetProperty("id").GetString()!);
        }

        time.Advance(TimeSpan.FromSeconds(1));
        var later = (await CreateAsync(client, "0000:00:14.0")).GetProperty("id").GetString()!;
        time.Advance(TimeSpan.FromMilliseconds(1));
        var latest = (await CreateAsync(client, "0000:5e:00.0")).GetProperty("id").GetString()!;

        var list = (await HttpAssert.JsonBodyAsync(await client.GetAsync("/devices"))).EnumerateArray().ToList();

        Assert.Equal([.. sameTime.Order(StringComparer.Ordinal), later, latest], list.Select(d => d.GetProperty("id").GetString()));
        Assert.All(list, AssertDeviceShape);
        Assert.Equal("2026-02-03T04:05:06Z", list[0].GetProperty("created_at").GetString());
    }

    // ---- GET /devices/available ----

    [Fact]
    public async Task ListAvailable_All_EveryNonBridgeFunctionOrderedWithContractFields()
    {
        var response = await Shared.GetAsync("/devices/available");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        HttpAssert.MediaType(response, "application/json");
        var list = (await HttpAssert.JsonBodyAsync(response)).EnumerateArray().ToList();
        Assert.All(list, AssertAvailableShape);
        var expected = GpuServerFixture.Devices.Where(d => !d.IsBridge).Select(d => d.Address).Append(PciAddress.Parse(Bare)).Order();
        Assert.Equal(expected.Select(a => a.ToString()), list.Select(d => d.GetProperty("pci_address").GetString()));
        Assert.Equal(["0000:af:00.0"], list.Where(d => d.GetProperty("registered").GetBoolean()).Select(d => d.GetProperty("pci_address").GetString()));

        var gpu = list.Single(d => d.GetProperty("pci_address").GetString() == "0000:17:00.0");
        Assert.False(gpu.GetProperty("registered").GetBoolean());
        Assert.Equal(["0000:17:00.0", "0000:17:00.1"], gpu.GetProperty("iommu_group_members").EnumerateArray().Select(m => m.GetString()));
        Assert.Equal(11, gpu.GetProperty("iommu_group").GetInt32());
        Assert.Equal("10de", gpu.GetProperty("vendor_id").GetString());
        Assert.Equal("2230", gpu.GetProperty("device_id").GetString());
        Assert.Equal("NVIDIA Corporation", gpu.GetProperty("vendor_name").GetString());
        Assert.Equal("GA102GL [RTX A6000]", gpu.GetProperty("device_name").GetString());
        Assert.Equal("nvidia", gpu.GetProperty("current_driver").GetString());
        Assert.Equal("030000", gpu.GetProperty("class_code").GetString());
        Assert.Equal("gpu", gpu.GetProperty("type").GetString());
        Assert.Equal(0, gpu.GetProperty("numa_node").GetInt32());

        var vga = list.Single(d => d.GetProperty("pci_address").GetString() == "0000:03:00.0");
        Assert.Equal(["0000:00:1c.0", "0000:02:00.0", "0000:03:00.0", "0000:04:00.0"],
            vga.GetProperty("iommu_group_members").EnumerateArray().Select(m => m.GetString()));

        var bare = list.Single(d => d.GetProperty("pci_address").GetString() == Bare);
        foreach (var field in new[] { "vendor_name", "device_name", "current_driver", "numa_node" })
        {
            Assert.True(bare.GetProperty(field).ValueKind == JsonValueKind.Null, $"{field} should be null: {bare}");
        }
    }

    [Fact]
    public async Task ListAvailable_TypeGpu_DisplayControllersOnly()
    {
        var list = (await HttpAssert.JsonBodyAsync(await Shared.GetAsync("/devices/available?type=gpu"))).EnumerateArray().ToList();

        Assert.Equal(["0000:03:00.0", "0000:17:00.0", "0000:af:00.0"], list.Select(d => d.GetProperty("pci_address").GetString()));
        Assert.All(list, d => Assert.Equal("gpu", d.GetProperty("type").GetString()));
        Assert.All(list, AssertAvailableShape);
    }

    [Fact]
    public async Task ListAvailable_TypePci_EverythingElse()
    {
        var list = (await HttpAssert.JsonBodyAsync(await Shared.GetAsync("/devices/available?type=pci"))).EnumerateArray().ToList();

        Assert.Equal(10, list.Count);
        Assert.All(list, d => Assert.Equal("pci", d.GetProperty("type").GetString()));
    }

    [Theory]
    [InlineData("bogus")]
    [InlineData("GPU")]
    [InlineData("")]
    [InlineData("gpu%00")]
    public async Task ListAvailable_UnknownType_400ValidationFailed(string type)
    {
        var response = await Shared.GetAsync($"/devices/available?type={type}");

        var problem = await HttpAssert.ProblemAsync(response, HttpStatusCode.BadRequest, "validation_failed");
        Assert.True(problem.GetProperty("errors").TryGetProperty("type", out _), problem.ToString());
    }

    // ---- GET/DELETE /devices/{id} ----

    [Fact]
    public async Task GetDevice_ByIdAndByName_SameJson()
    {
        var byId = await Shared.GetAsync($"/devices/{_shared.Id}");
        var byName = await Shared.GetAsync("/devices/gpu0");

        Assert.Equal(HttpStatusCode.OK, byId.StatusCode);
        Assert.Equal(HttpStatusCode.OK, byName.StatusCode);
        HttpAssert.MediaType(byId, "application/json");
        var a = JsonNode.Parse(await byId.Content.ReadAsStringAsync());
        Assert.True(JsonNode.DeepEquals(a, JsonNode.Parse(await byName.Content.ReadAsStringAsync())));
        Assert.Equal(_shared.Id, (string?)a!["id"]);
        Assert.Equal("0000:af:00.0", (string?)a["pci_address"]);
        AssertDeviceShape(await HttpAssert.JsonBodyAsync(await Shared.GetAsync("/devices/gpu0")));
    }

    [Fact]
    public async Task DeleteDevice_Registered_204ThenNotFound()
    {
        using var app = App();
        var client = app.CreateClient();
        var id = (await CreateAsync(client, "0000:17:00.0", "gpu0")).GetProperty("id").GetString();

        var response = await client.DeleteAsync($"/devices/{id}");

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
        await HttpAssert.ProblemAsync(await client.GetAsync($"/devices/{id}"), HttpStatusCode.NotFound, "not_found");
        await HttpAssert.ProblemAsync(await client.GetAsync("/devices/gpu0"), HttpStatusCode.NotFound, "not_found");
        await HttpAssert.ProblemAsync(await client.DeleteAsync($"/devices/{id}"), HttpStatusCode.NotFound, "not_found");
        Assert.Equal("[]", await client.GetStringAsync("/devices"));
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(_state.Value.Path, "devices")));
    }

    [Fact]
    public async Task CreateDevice_StateDirectoryUnwritable_503StorageUnavailableAndReadsKeepWorking()
    {
        using var app = App();
        var client = app.CreateClient();
        var existing = await CreateAsync(client, "0000:17:00.0", "gpu0");
        var devices = Path.Combine(_state.Value.Path, "devices");
        var saved = File.ReadAllBytes(Path.Combine(devices, existing.GetProperty("id").GetString() + ".json"));
        Directory.Delete(devices, recursive: true);
        File.WriteAllText(devices, "not a directory");

        var response = await PostAsync(client, """{"pci_address":"0000:af:00.0","name":"gpu1"}""");

        await HttpAssert.ProblemAsync(response, HttpStatusCode.ServiceUnavailable, "storage_unavailable");
        var list = (await HttpAssert.JsonBodyAsync(await client.GetAsync("/devices"))).EnumerateArray().ToList();
        Assert.Equal(existing.GetProperty("id").GetString(), Assert.Single(list).GetProperty("id").GetString());
        await HttpAssert.ProblemAsync(await client.GetAsync("/devices/gpu1"), HttpStatusCode.NotFound, "not_found");
        Assert.False((await HttpAssert.JsonBodyAsync(await client.GetAsync("/devices/available")))
            .EnumerateArray().Single(d => d.GetProperty("pci_address").GetString() == "0000:af:00.0").GetProperty("registered").GetBoolean());

        // Once the directory is back, the refused registration goes through: nothing was reserved.
        File.Delete(devices);
        Directory.CreateDirectory(devices);
        File.WriteAllBytes(Path.Combine(devices, existing.GetProperty("id").GetString() + ".json"), saved);
        await CreateAsync(client, "0000:af:00.0", "gpu1");
    }

    [Fact]
    public async Task DeleteDevice_Attached_409InUseWithAttachedTo()
    {
        string id;
        using (var first = App())
        {
            id = (await CreateAsync(first.CreateClient(), "0000:17:00.0", "gpu0")).GetProperty("id").GetString()!;
        }

        // An attachment as the attach operation records it (attach itself is not in this foundation yet).
        var path = Path.Combine(_state.Value.Path, "devices", id + ".json");
        var record = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        record["attachment"] = new JsonObject { ["instance_id"] = "vm-7", ["attached_at"] = "2026-01-01T00:00:00Z" };
        File.WriteAllText(path, record.ToJsonString());

        using var app = App();
        var client = app.CreateClient();
        var problem = await HttpAssert.ProblemAsync(await client.DeleteAsync("/devices/gpu0"), HttpStatusCode.Conflict, "in_use");

        Assert.Equal("vm-7", problem.GetProperty("attached_to").GetString());
        var device = await HttpAssert.JsonBodyAsync(await client.GetAsync($"/devices/{id}"));
        Assert.Equal("attached", device.GetProperty("state").GetString());
        Assert.Equal("vm-7", device.GetProperty("attached_to").GetString());
        Assert.True(File.Exists(path));
    }

    [Fact]
    public async Task DeleteDevice_ByName_204()
    {
        using var app = App();
        var client = app.CreateClient();
        await CreateAsync(client, "0000:17:00.0", "gpu0");

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync("/devices/gpu0")).StatusCode);
        await CreateAsync(client, "0000:17:00.0", "gpu0");
    }

    public static TheoryData<string> UnknownIds() => new()
    {
        "nope",
        "abcdefghijklmnopqrstuvwx",
        "..%2F..%2Fetc%2Fpasswd",
        "..%2F..",
        "%2E%2E",
        "0000:af:00.0",
        "af:00.0",
        "pci-0000-af-00-0",
        "GPU0",
        "gpu0%0A",
        "gpu0%20",
        "%C3%A9",
        new string('a', 1000),
        new string('a', 64),
    };

    [Theory]
    [MemberData(nameof(UnknownIds))]
    public async Task GetAndDelete_UnknownId_404NotFound(string id)
    {
        await HttpAssert.ProblemAsync(await Shared.GetAsync($"/devices/{id}"), HttpStatusCode.NotFound, "not_found");
        await HttpAssert.ProblemAsync(await Shared.DeleteAsync($"/devices/{id}"), HttpStatusCode.NotFound, "not_found");
        await AssertSharedUnchangedAsync();
    }

    // ---- error codes of POST /devices ----

    public static TheoryData<string> InvalidAddresses() => new()
    {
        "0000:00:20.0",
        "0000:00:00.8",
        "000:00:00.0",
        "00000:17:00.0",
        "0000:017:00.0",
        "zz:00.0",
        "0000:17:00.0 ",
        " 0000:17:00.0",
        "0000:17:00.0\\n",
        "+0000:17:00.0",
        "-1:00.0",
        "../../../etc/passwd",
        "0000:17:00.0/../..",
        "0000:17:00.0\\u0000",
        "\\u0000",
        "pci-0000-17-00-0",
        new string('0', 10 * 1024),
    };

    [Theory]
    [MemberData(nameof(InvalidAddresses))]
    public async Task CreateDevice_InvalidAddress_400InvalidPciAddress(string address)
    {
        var response = await PostAsync(Shared, $$"""{"pci_address":"{{address}}","name":"-also bad"}""");

        await HttpAssert.ProblemAsync(response, HttpStatusCode.BadRequest, "invalid_pci_address");
        await AssertSharedUnchangedAsync();
    }

    /// <summary>An empty address is present and fails the format: the contract's invalid_pci_address.</summary>
    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    public async Task CreateDevice_EmptyAddress_400InvalidPciAddress(string address)
    {
        var response = await PostAsync(Shared, $$"""{"pci_address":"{{address}}"}""");

        await HttpAssert.ProblemAsync(response, HttpStatusCode.BadRequest, "invalid_pci_address");
    }

    [Theory]
    [InlineData("a")]
    [InlineData("-gpu")]
    [InlineData(".gpu")]
    [InlineData("_gpu")]
    [InlineData("gpu 0")]
    [InlineData("gpu\\n")]
    [InlineData("gpü")]
    [InlineData("../gpu")]
    [InlineData("")]
    [InlineData("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")]
    public async Task CreateDevice_InvalidName_400InvalidName(string name)
    {
        // At the registered address: were the name wrongly accepted, nothing would be created.
        var response = await PostAsync(Shared, $$"""{"pci_address":"0000:af:00.0","name":"{{name}}"}""");

        await HttpAssert.ProblemAsync(response, HttpStatusCode.BadRequest, "invalid_name");
        await AssertSharedUnchangedAsync();
    }

    [Fact]
    public async Task CreateDevice_NameTaken_409NameExists()
    {
        await HttpAssert.ProblemAsync(await PostAsync(Shared, """{"pci_address":"0000:17:00.0","name":"gpu0"}"""),
            HttpStatusCode.Conflict, "name_exists");
        await AssertSharedUnchangedAsync();
    }

    [Fact]
    public async Task CreateDevice_NameEqualToAnotherDevicesId_409NameExists()
    {
        await HttpAssert.ProblemAsync(await PostAsync(Shared, $$"""{"pci_address":"0000:17:00.0","name":"{{_shared.Id}}"}"""),
            HttpStatusCode.Conflict, "name_exists");
        await AssertSharedUnchangedAsync();
    }

    [Theory]
    [InlineData("0000:af:00.0")]
    [InlineData("0000:AF:00.0")]
    [InlineData("af:00.0")]
    [InlineData("AF:00.0")]
    public async Task CreateDevice_AddressRegistered_409AlreadyExists(string again)
    {
        var problem = await HttpAssert.ProblemAsync(await PostAsync(Shared, $$"""{"pci_address":"{{again}}","name":"gpu1"}"""),
            HttpStatusCode.Conflict, "already_exists");

        Assert.Equal(_shared.Id, problem.GetProperty("device_id").GetString());
        await AssertSharedUnchangedAsync();
    }

    [Fact]
    public async Task CreateDevice_NoSuchDevice_404DeviceNotFound()
    {
        await HttpAssert.ProblemAsync(await PostAsync(Shared, """{"pci_address":"0000:99:00.0"}"""),
            HttpStatusCode.NotFound, "device_not_found");
        await AssertSharedUnchangedAsync();
    }

    [Fact]
    public async Task CreateDevice_Bridge_400ValidationFailed()
    {
        var problem = await HttpAssert.ProblemAsync(await PostAsync(Shared, """{"pci_address":"0000:00:1c.0"}"""),
            HttpStatusCode.BadRequest, "validation_failed");

        Assert.True(problem.GetProperty("errors").TryGetProperty("pci_address", out _), problem.ToString());
        await AssertSharedUnchangedAsync();
    }

    [Theory]
    [InlineData("""{"pci_address":17}""", "pci_address")]
    [InlineData("""{"pci_address":["0000:17:00.0"]}""", "pci_address")]
    [InlineData("""{"pci_address":{"a":1}}""", "pci_address")]
    [InlineData("""{"pci_address":true}""", "pci_address")]
    [InlineData("""{"pci_address":"0000:17:00.0","name":5}""", "name")]
    [InlineData("""{"pci_address":"0000:17:00.0","name":false}""", "name")]
    public async Task CreateDevice_WrongJsonType_400ValidationFailed(string body, string field)
    {
        var problem = await HttpAssert.ProblemAsync(await PostAsync(Shared, body), HttpStatusCode.BadRequest, "validation_failed");

        Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), problem.ToString());
        await AssertSharedUnchangedAsync();
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("""{"name":"gpu0"}""")]
    [InlineData("""{"pci_address":null}""")]
    public async Task CreateDevice_MissingAddress_400ValidationFailed(string body)
    {
        var problem = await HttpAssert.ProblemAsync(await PostAsync(Shared, body), HttpStatusCode.BadRequest, "validation_failed");

        Assert.True(problem.GetProperty("errors").TryGetProperty("pci_address", out _), problem.ToString());
    }

    [Theory]
    [InlineData("""[{"pci_address":"0000:17:00.0"}]""")]
    [InlineData("[]")]
    [InlineData("\"0000:17:00.0\"")]
    [InlineData("42")]
    [InlineData("null")]
    public async Task CreateDevice_BodyNotAnObject_400ValidationFailed(string body)
    {
        await HttpAssert.ProblemAsync(await PostAsync(Shared, body), HttpStatusCode.BadRequest, "validation_failed");
        await AssertSharedUnchangedAsync();
    }

    [Theory]
    [InlineData("""{"pci_address":"0000:17:00.0" """)]
    [InlineData("""{"pci_address":'0000:17:00.0'}""")]
    [InlineData("""{"pci_address":"0000:17:00.0",}""")]
    [InlineData("{")]
    [InlineData("not json")]
    [InlineData("")]
    public async Task CreateDevice_MalformedJson_400InvalidJson(string body)
    {
        await HttpAssert.ProblemAsync(await PostAsync(Shared, body), HttpStatusCode.BadRequest, "invalid_json");
    }

    [Theory]
    [InlineData("text/plain")]
    [InlineData("application/x-www-form-urlencoded")]
    [InlineData("application/xml")]
    public async Task CreateDevice_WrongContentType_415(string mediaType)
    {
        var response = await PostAsync(Shared, """{"pci_address":"0000:17:00.0"}""", mediaType);

        await HttpAssert.ProblemAsync(response, HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
        await AssertSharedUnchangedAsync();
    }

    [Fact]
    public async Task CreateDevice_NoContentType_415()
    {
        var content = new ByteArrayContent(Encoding.UTF8.GetBytes("""{"pci_address":"0000:17:00.0"}"""));

        var response = await Shared.PostAsync("/devices", content);

        await HttpAssert.ProblemAsync(response, HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
        await AssertSharedUnchangedAsync();
    }

    [Fact]
    public async Task CreateDevice_BodyOver64KiB_413()
    {
        var body = $$"""{"pci_address":"0000:17:00.0","name":"gpu1","pad":"{{new string('x', 64 * 1024)}}"}""";

        var response = await PostAsync(Shared, body);

        await HttpAssert.ProblemAsync(response, HttpStatusCode.RequestEntityTooLarge, "payload_too_large");
        await AssertSharedUnchangedAsync();
    }

    [Fact]
    public async Task CreateDevice_BodyJustUnder64KiB_Accepted()
    {
        using var app = App();
        var prefix = """{"pci_address":"0000:17:00.0","pad":" """.TrimEnd();
        var body = prefix + new string('x', 64 * 1024 - prefix.Length - 2) + "\"}";
        Assert.Equal(64 * 1024, Encoding.UTF8.GetByteCount(body));

        var response = await PostAsync(app.CreateClient(), body);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
    }

    [Theory]
    [InlineData("PUT", "/devices")]
    [InlineData("PATCH", "/devices")]
    [InlineData("DELETE", "/devices")]
    [InlineData("PUT", "/devices/gpu0")]
    [InlineData("POST", "/devices/available")]
    [InlineData("POST", "/healthz")]
    public async Task WrongMethod_405WithProblemBody(string method, string path)
    {
        var response = await Shared.SendAsync(new HttpRequestMessage(new HttpMethod(method), path)
        {
            Content = HttpAssert.Json("""{"pci_address":"0000:17:00.0"}"""),
        });

        await HttpAssert.ProblemAsync(response, HttpStatusCode.MethodNotAllowed, "method_not_allowed");
        await AssertSharedUnchangedAsync();
    }

    [Fact]
    public async Task UnknownRoute_404WithProblemBody()
    {
        await HttpAssert.ProblemAsync(await Shared.GetAsync("/nothing/here"), HttpStatusCode.NotFound, "not_found");
    }

    [Fact]
    public async Task Problem_TypeNamesTheCode()
    {
        var problem = await HttpAssert.ProblemAsync(await Shared.GetAsync("/devices/nope"), HttpStatusCode.NotFound, "not_found");

        Assert.EndsWith("not_found", problem.GetProperty("type").GetString(), StringComparison.Ordinal);
    }

    // ---- health, readiness ----

    [Fact]
    public async Task Healthz_Running_200Ok()
    {
        var response = await Shared.GetAsync("/healthz");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("ok", (await HttpAssert.JsonBodyAsync(response)).GetProperty("status").GetString());
    }

    [Fact]
    public async Task Readyz_Started_200WithReport()
    {
        var response = await Shared.GetAsync("/readyz");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var report = await HttpAssert.JsonBodyAsync(response);
        Assert.Equal("ready", report.GetProperty("status").GetString());
        Assert.True(report.GetProperty("registry_loaded").GetBoolean());
        Assert.Equal(1, report.GetProperty("devices").GetInt32());
        Assert.Equal(Path.GetFullPath(_shared.StatePath), report.GetProperty("state_directory").GetString());
        Assert.Empty(report.GetProperty("quarantined_records").EnumerateArray());
    }

    [Fact]
    public async Task Startup_CorruptRecordFile_StartsServesOthersAndReadyzListsIt()
    {
        string goodId;
        using (var first = App())
        {
            goodId = (await CreateAsync(first.CreateClient(), "0000:17:00.0", "gpu0")).GetProperty("id").GetString()!;
        }

        var corruptName = Cuid2Generator.Shared.Next() + ".json";
        var corruptBytes = Encoding.UTF8.GetBytes("{ \"id\": \"truncated");
        File.WriteAllBytes(Path.Combine(_state.Value.Path, "devices", corruptName), corruptBytes);

        using var app = App();
        var client = app.CreateClient();

        var list = (await HttpAssert.JsonBodyAsync(await client.GetAsync("/devices"))).EnumerateArray().ToList();
        Assert.Equal(goodId, Assert.Single(list).GetProperty("id").GetString());
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/devices/gpu0")).StatusCode);
        var ready = await client.GetAsync("/readyz");
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        var report = await HttpAssert.JsonBodyAsync(ready);
        var quarantined = Assert.Single(report.GetProperty("quarantined_records").EnumerateArray());
        Assert.Equal(corruptName, quarantined.GetProperty("file").GetString());
        var quarantinePath = quarantined.GetProperty("quarantine_path").GetString()!;
        Assert.Equal(corruptBytes, File.ReadAllBytes(quarantinePath));
        Assert.False(string.IsNullOrWhiteSpace(quarantined.GetProperty("reason").GetString()));
        Assert.Matches(Rfc3339Utc(), quarantined.GetProperty("at").GetString());
        Assert.False(File.Exists(Path.Combine(_state.Value.Path, "devices", corruptName)));
        Assert.Equal(1, report.GetProperty("devices").GetInt32());
    }

    [Fact]
    public async Task Restart_SameStateAndHost_SameJson()
    {
        string before;
        string id;
        using (var first = App())
        {
            var client = first.CreateClient();
            id = (await CreateAsync(client, "0000:17:00.0", "gpu0")).GetProperty("id").GetString()!;
            await CreateAsync(client, Bare);
            before = await client.GetStringAsync("/devices");
        }

        using var second = App();
        var after = await second.CreateClient().GetStringAsync("/devices");

        Assert.True(JsonNode.DeepEquals(JsonNode.Parse(before), JsonNode.Parse(after)), $"{before}\n{after}");
        Assert.Equal(2, JsonNode.Parse(after)!.AsArray().Count);
        Assert.Equal(HttpStatusCode.OK, (await second.CreateClient().GetAsync($"/devices/{id}")).StatusCode);
    }

    // ---- OpenAPI and Swagger UI ----

    [Fact]
    public async Task OpenApi_Document_31WithOperationsSummariesAndProblems()
    {
        var response = await Shared.GetAsync("/openapi/v1.json");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var doc = await HttpAssert.JsonBodyAsync(response);
        Assert.StartsWith("3.1", doc.GetProperty("openapi").GetString(), StringComparison.Ordinal);
        var paths = doc.GetProperty("paths");
        var operations = new Dictionary<string, JsonElement>();
        foreach (var path in paths.EnumerateObject())
        {
            foreach (var op in path.Value.EnumerateObject())
            {
                if (op.Value.ValueKind == JsonValueKind.Object && op.Value.TryGetProperty("operationId", out var operationId))
                {
                    operations[operationId.GetString()!] = op.Value;
                    Assert.False(string.IsNullOrWhiteSpace(op.Value.GetProperty("summary").GetString()), $"{operationId} has no summary");
                }
            }
        }

        Assert.Equal("createDevice", paths.GetProperty("/devices").GetProperty("post").GetProperty("operationId").GetString());
        Assert.Equal("listDevices", paths.GetProperty("/devices").GetProperty("get").GetProperty("operationId").GetString());
        Assert.Equal("listAvailableDevices", paths.GetProperty("/devices/available").GetProperty("get").GetProperty("operationId").GetString());
        Assert.Equal("getDevice", paths.GetProperty("/devices/{id}").GetProperty("get").GetProperty("operationId").GetString());
        Assert.Equal("deleteDevice", paths.GetProperty("/devices/{id}").GetProperty("delete").GetProperty("operationId").GetString());

        var create = operations["createDevice"].GetProperty("responses");
        foreach (var status in new[] { "201", "400", "404", "409", "413", "415" })
        {
            Assert.True(create.TryGetProperty(status, out _), $"createDevice does not document {status}");
        }

        foreach (var status in new[] { "400", "404", "409" })
        {
            var content = create.GetProperty(status).GetProperty("content");
            Assert.True(content.TryGetProperty("application/problem+json", out _), $"createDevice {status} is not a problem response");
        }

        Assert.Contains("name_exists", create.GetProperty("409").GetProperty("description").GetString(), StringComparison.Ordinal);
        Assert.True(operations["getDevice"].GetProperty("responses").TryGetProperty("404", out _));
        Assert.True(operations["deleteDevice"].GetProperty("responses").TryGetProperty("404", out _));
        Assert.True(operations["deleteDevice"].GetProperty("responses").TryGetProperty("204", out _));
        Assert.True(operations["listAvailableDevices"].GetProperty("responses").TryGetProperty("400", out _));
    }

    [Fact]
    public async Task Swagger_Ui_ServesHtml()
    {
        var response = await Shared.GetAsync("/swagger");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        HttpAssert.MediaType(response, "text/html");
        Assert.Contains("swagger", await response.Content.ReadAsStringAsync(), StringComparison.OrdinalIgnoreCase);
    }
}
