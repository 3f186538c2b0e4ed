using System.Net;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Mvc.Testing;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using PciPassthrough.Lifecycle;
using PciPassthrough.Registry;
using PciPassthrough.Simulation;
using PciPassthrough.Tests.TestDoubles;
using static PciPassthrough.Lifecycle.Tests.LifecycleTestKit;

namespace PciPassthrough.Daemon.Api.Tests;

/// <summary>Attach, detach, ETag/If-Match, reconcile and readiness through the daemon's HTTP API on the simulated host.</summary>
public sealed class LifecycleApiTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    private static Dictionary<string, string?> Settings(params (string Key, string? Value)[] extra)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Host:Mode"] = "Simulated",
            ["Reconcile:Interval"] = "00:00:00",
            ["Vfio:VerifyPollInterval"] = "00:00:00.002",
        };
        foreach (var (key, value) in extra)
        {
            settings[key] = value;
        }

        return settings;
    }

    private static async Task<HttpClient> ReadyClientAsync(WebApplicationFactory<Program> app)
    {
        var client = app.CreateClient();
        using var timeout = new CancellationTokenSource(Wait);
        while ((await client.GetAsync("/readyz", timeout.Token)).StatusCode != HttpStatusCode.OK)
        {
            await Task.Delay(10, timeout.Token);
        }

        return client;
    }

    private static StringContent Json(string json, string mediaType = "application/json") => new(json, Encoding.UTF8, mediaType);

    private static async Task<JsonElement> BodyAsync(HttpResponseMessage response)
    {
        using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return document.RootElement.Clone();
    }

    private static async Task<JsonElement> OkAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {text}");
        using var document = JsonDocument.Parse(text);
        return document.RootElement.Clone();
    }

    /// <summary>An RFC 9457 problem of the contract with the given status and code.</summary>
    private static async Task<JsonElement> ProblemAsync(HttpResponseMessage response, HttpStatusCode status, string code)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var document = JsonDocument.Parse(text);
        var problem = document.RootElement.Clone();
        Assert.True(code == problem.GetProperty("code").GetString(), $"expected {code}: {text}");
        Assert.Equal((int)status, problem.GetProperty("status").GetInt32());
        Assert.Equal(problem.GetProperty("detail").GetString(), problem.GetProperty("message").GetString());
        return problem;
    }

    private static async Task<string> RegisterAsync(HttpClient client, string address)
    {
        var body = await OkAsync(await client.PostAsync("/devices", Json($$"""{"pci_address": "{{address}}"}""")));
        return body.GetProperty("id").GetString()!;
    }

    private static string ETagOf(HttpResponseMessage response) =>
        response.Headers.ETag?.Tag ?? throw new Xunit.Sdk.XunitException($"no ETag on {(int)response.StatusCode} {response.RequestMessage?.RequestUri}");

    private static async Task<string> CurrentETagAsync(HttpClient client, string id) =>
        ETagOf(await client.GetAsync($"/devices/{id}"));

    private static Task<HttpResponseMessage> PostAsync(HttpClient client, string path, string? json = null, string? ifMatch = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = json is null ? null : Json(json) };
        if (ifMatch is not null)
        {
            request.Headers.TryAddWithoutValidation("If-Match", ifMatch);
        }

        return client.SendAsync(request);
    }

    private static Task<HttpResponseMessage> AttachAsync(HttpClient client, string id, string instance, string? ifMatch = null) =>
        PostAsync(client, $"/devices/{id}/attach", $$"""{"instance_id": "{{instance}}"}""", ifMatch);

    private static Task<HttpResponseMessage> DetachAsync(HttpClient client, string id, string instance, bool release = false, string? ifMatch = null) =>
        PostAsync(client, $"/devices/{id}/detach", $$"""{"instance_id": "{{instance}}", "release": {{(release ? "true" : "false")}}}""", ifMatch);

    [Fact]
    public async Task Attach_UnboundDevice_200WithWhatTheVmmNeedsAndANewETag()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);
        var registered = await CurrentETagAsync(client, id);
        WriteProcess(app.HostRoot, 4321, startTime: 77);

        var response = await PostAsync(client, $"/devices/{id}/attach", """{"instance_id": "vm-1", "pid": 4321}""");

        var device = await OkAsync(response);
        Assert.Equal("vm-1", device.GetProperty("attached_to").GetString());
        Assert.Equal("attached", device.GetProperty("state").GetString());
        Assert.True(device.GetProperty("bound_to_vfio").GetBoolean());
        Assert.Equal("vfio-pci", device.GetProperty("current_driver").GetString());
        Assert.Equal("nvme", device.GetProperty("original_driver").GetString());
        Assert.Equal("/dev/vfio/21", device.GetProperty("vfio_group_path").GetString());
        Assert.Equal("/sys/bus/pci/devices/0000:3b:00.0", device.GetProperty("sysfs_path").GetString());
        var etag = ETagOf(response);
        Assert.NotEqual(registered, etag);
        Assert.Equal(etag, await CurrentETagAsync(client, id));
    }

    [Fact]
    public async Task Attach_SameInstanceAgain_200SameBodyAndETag()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);
        var first = await AttachAsync(client, id, "vm-1");
        var firstBody = await first.Content.ReadAsStringAsync();

        var second = await AttachAsync(client, id, "vm-1");

        Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        Assert.Equal(firstBody, await second.Content.ReadAsStringAsync());
        Assert.Equal(ETagOf(first), ETagOf(second));
    }

    [Fact]
    public async Task Attach_AnotherInstance_409InUseWithAttachedTo()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);
        await OkAsync(await AttachAsync(client, id, "vm-1"));
        var etag = await CurrentETagAsync(client, id);

        var problem = await ProblemAsync(await AttachAsync(client, id, "vm-2"), HttpStatusCode.Conflict, "in_use");

        Assert.Equal("vm-1", problem.GetProperty("attached_to").GetString());
        Assert.Equal(etag, await CurrentETagAsync(client, id));
    }

    [Fact]
    public async Task Detach_NotTheOwner_409NotOwnerWithAttachedTo()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);
        await OkAsync(await AttachAsync(client, id, "vm-1"));
        var etag = await CurrentETagAsync(client, id);

        var problem = await ProblemAsync(await DetachAsync(client, id, "vm-2", release: true), HttpStatusCode.Conflict, "not_owner");

        Assert.Equal("vm-1", problem.GetProperty("attached_to").GetString());
        Assert.Equal(etag, await CurrentETagAsync(client, id));
    }

    [Fact]
    public async Task Detach_OwnerThenAgainThenWithRelease_200Each()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);
        await OkAsync(await AttachAsync(client, id, "vm-1"));

        var detached = await DetachAsync(client, id, "vm-1");
        var body = await OkAsync(detached);
        Assert.Equal(JsonValueKind.Null, body.GetProperty("attached_to").ValueKind);
        Assert.Equal("bound", body.GetProperty("state").GetString());

        var again = await DetachAsync(client, id, "vm-1");
        await OkAsync(again);
        Assert.Equal(ETagOf(detached), ETagOf(again));

        var released = await OkAsync(await DetachAsync(client, id, "vm-1", release: true));
        Assert.Equal("ready", released.GetProperty("state").GetString());
        Assert.Equal("nvme", released.GetProperty("current_driver").GetString());
        Assert.Equal(JsonValueKind.Null, released.GetProperty("vfio_group_path").ValueKind);
    }

    [Theory]
    [InlineData("{}", "instance_id")]
    [InlineData("""{"pid": 5}""", "instance_id")]
    [InlineData("""{"instance_id": null}""", "instance_id")]
    [InlineData("""{"instance_id": 5}""", "instance_id")]
    [InlineData("""{"instance_id": ["vm-1"]}""", "instance_id")]
    [InlineData("""{"instance_id": "vm 1"}""", "instance_id")]
    [InlineData("""{"instance_id": "vm/1"}""", "instance_id")]
    [InlineData("""{"instance_id": "vm-1", "pid": "4321"}""", "pid")]
    [InlineData("""{"instance_id": "vm-1", "pid": 1.5}""", "pid")]
    [InlineData("""{"instance_id": "vm-1", "pid": 0}""", "pid")]
    [InlineData("""{"instance_id": "vm-1", "pid": 999999}""", "pid")]
    public async Task Attach_InvalidField_400ValidationFailedNamingTheField(string json, string field)
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);
        var etag = await CurrentETagAsync(client, id);

        var problem = await ProblemAsync(await PostAsync(client, $"/devices/{id}/attach", json), HttpStatusCode.BadRequest, "validation_failed");

        Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), problem.ToString());
        Assert.Equal(etag, await CurrentETagAsync(client, id));
        Assert.Equal("nvme", Driver(app.HostRoot, Nvme));
    }

    [Theory]
    [InlineData("[]")]
    [InlineData("null")]
    [InlineData("\"vm-1\"")]
    public async Task Attach_BodyNotAnObject_400ValidationFailed(string json)
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);

        await ProblemAsync(await PostAsync(client, $"/devices/{id}/attach", json), HttpStatusCode.BadRequest, "validation_failed");
    }

    [Theory]
    [InlineData("attach", """{"instance_id": "vm-1" """)]
    [InlineData("attach", "")]
    [InlineData("attach", "instance_id=vm-1")]
    [InlineData("detach", """{"instance_id": "vm-1", }""")]
    [InlineData("detach", "{'instance_id': 'vm-1'}")]
    public async Task AttachDetach_MalformedJson_400InvalidJson(string operation, string body)
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);

        await ProblemAsync(await PostAsync(client, $"/devices/{id}/{operation}", body), HttpStatusCode.BadRequest, "invalid_json");
    }

    [Theory]
    [InlineData("{}", "instance_id")]
    [InlineData("""{"instance_id": 7}""", "instance_id")]
    [InlineData("""{"instance_id": "vm-1", "release": "yes"}""", "release")]
    [InlineData("""{"instance_id": "vm-1", "release": 1}""", "release")]
    [InlineData("""{"instance_id": "-vm"}""", "instance_id")]
    public async Task Detach_InvalidField_400ValidationFailedNamingTheField(string json, string field)
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);
        await OkAsync(await AttachAsync(client, id, "vm-1"));

        var problem = await ProblemAsync(await PostAsync(client, $"/devices/{id}/detach", json), HttpStatusCode.BadRequest, "validation_failed");

        Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), problem.ToString());
        Assert.Equal("vm-1", (await OkAsync(await client.GetAsync($"/devices/{id}"))).GetProperty("attached_to").GetString());
    }

    [Theory]
    [InlineData("attach", "text/plain")]
    [InlineData("attach", "application/x-www-form-urlencoded")]
    [InlineData("detach", "text/plain")]
    public async Task AttachDetach_WrongContentType_415(string operation, string mediaType)
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);

        var response = await client.PostAsync($"/devices/{id}/{operation}", Json("""{"instance_id": "vm-1"}""", mediaType));

        await ProblemAsync(response, HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
    }

    [Fact]
    public async Task Attach_NoBody_415()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);

        await ProblemAsync(await client.PostAsync($"/devices/{id}/attach", null), HttpStatusCode.UnsupportedMediaType, "unsupported_media_type");
    }

    [Fact]
    public async Task Attach_UnknownDevice_404()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);

        await ProblemAsync(await AttachAsync(client, "nosuchdevice", "vm-1"), HttpStatusCode.NotFound, "not_found");
    }

    [Fact]
    public async Task ETag_OnEveryDeviceResponse_ChangesAfterEveryChange()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var created = await client.PostAsync("/devices", Json($$"""{"pci_address": "{{Nvme}}"}"""));
        var id = (await OkAsync(created)).GetProperty("id").GetString()!;
        var etags = new List<string> { ETagOf(created) };

        foreach (var change in new Func<Task<HttpResponseMessage>>[]
        {
            () => PostAsync(client, $"/devices/{id}/bind"),
            () => AttachAsync(client, id, "vm-1"),
            () => DetachAsync(client, id, "vm-1"),
            () => AttachAsync(client, id, "vm-2"),
            () => DetachAsync(client, id, "vm-2", release: true),
        })
        {
            var response = await change();
            await OkAsync(response);
            var etag = ETagOf(response);
            Assert.DoesNotContain(etag, etags);
            Assert.Equal(etag, await CurrentETagAsync(client, id));
            Assert.False(response.Headers.ETag!.IsWeak);
            Assert.StartsWith($"\"{id}-", etag, StringComparison.Ordinal);
            etags.Add(etag);
        }
    }

    public static TheoryData<string> Changes() => ["bind", "unbind", "attach", "detach", "delete"];

    private static Task<HttpResponseMessage> ChangeAsync(HttpClient client, string change, string id, string ifMatch) => change switch
    {
        "bind" => PostAsync(client, $"/devices/{id}/bind", ifMatch: ifMatch),
        "unbind" => PostAsync(client, $"/devices/{id}/unbind", ifMatch: ifMatch),
        "attach" => AttachAsync(client, id, "vm-1", ifMatch),
        "detach" => DetachAsync(client, id, "vm-1", ifMatch: ifMatch),
        "delete" => client.SendAsync(new HttpRequestMessage(HttpMethod.Delete, $"/devices/{id}") { Headers = { { "If-Match", ifMatch } } }),
        _ => throw new ArgumentOutOfRangeException(nameof(change)),
    };

    /// <summary>A device where <paramref name="change"/> has work to do, and an ETag it had before.</summary>
    private static async Task<(string Id, string Stale)> PrepareAsync(HttpClient client, string change)
    {
        var id = await RegisterAsync(client, Nvme);
        var stale = await CurrentETagAsync(client, id);
        await OkAsync(await AttachAsync(client, id, "vm-0"));
        await OkAsync(await DetachAsync(client, id, "vm-0", release: change is "bind" or "attach"));
        if (change == "detach")
        {
            stale = await CurrentETagAsync(client, id);
            await OkAsync(await AttachAsync(client, id, "vm-1"));
        }

        return (id, stale);
    }

    [Theory]
    [MemberData(nameof(Changes))]
    public async Task IfMatch_StaleETag_412PreconditionFailedAndNothingChanged(string change)
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var (id, stale) = await PrepareAsync(client, change);
        var before = await (await client.GetAsync($"/devices/{id}")).Content.ReadAsStringAsync();
        var current = await CurrentETagAsync(client, id);

        var problem = await ProblemAsync(await ChangeAsync(client, change, id, stale), HttpStatusCode.PreconditionFailed, "precondition_failed");

        Assert.Equal(current, problem.GetProperty("current_etag").GetString());
        Assert.Equal(before, await (await client.GetAsync($"/devices/{id}")).Content.ReadAsStringAsync());
        Assert.Equal(current, await CurrentETagAsync(client, id));
    }

    [Theory]
    [MemberData(nameof(Changes))]
    public async Task IfMatch_CurrentETag_Passes(string change)
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var (id, _) = await PrepareAsync(client, change);

        var response = await ChangeAsync(client, change, id, await CurrentETagAsync(client, id));

        Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
    }

    [Theory]
    [MemberData(nameof(Changes))]
    public async Task IfMatch_Star_Passes(string change)
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var (id, _) = await PrepareAsync(client, change);

        var response = await ChangeAsync(client, change, id, "*");

        Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
    }

    [Theory]
    [InlineData("attach")]
    [InlineData("detach")]
    [InlineData("bind")]
    public async Task IfMatch_WeakFormOfTheCurrentETag_NeverMatches(string change)
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var (id, _) = await PrepareAsync(client, change);
        var current = await CurrentETagAsync(client, id);

        await ProblemAsync(await ChangeAsync(client, change, id, "W/" + current), HttpStatusCode.PreconditionFailed, "precondition_failed");

        Assert.Equal(current, await CurrentETagAsync(client, id));
    }

    [Theory]
    [InlineData("not-an-etag")]
    [InlineData("\"unterminated")]
    public async Task IfMatch_Unparsable_412(string header)
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var (id, _) = await PrepareAsync(client, "attach");

        await ProblemAsync(await AttachAsync(client, id, "vm-1", header), HttpStatusCode.PreconditionFailed, "precondition_failed");
    }

    [Fact]
    public async Task IfMatch_ListWithTheCurrentETag_Passes()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var (id, stale) = await PrepareAsync(client, "attach");

        var response = await AttachAsync(client, id, "vm-1", $"{stale}, {await CurrentETagAsync(client, id)}");

        await OkAsync(response);
    }

    [Fact]
    public async Task IfMatch_RetriedAttachAndDetachThatFindTheirWorkDone_200WithTheNowStaleETag()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);
        var beforeAttach = await CurrentETagAsync(client, id);
        await OkAsync(await AttachAsync(client, id, "vm-1", beforeAttach));

        await OkAsync(await AttachAsync(client, id, "vm-1", beforeAttach));

        var beforeDetach = await CurrentETagAsync(client, id);
        await OkAsync(await DetachAsync(client, id, "vm-1", ifMatch: beforeDetach));
        await OkAsync(await DetachAsync(client, id, "vm-1", ifMatch: beforeDetach));
    }

    [Fact]
    public async Task Reconcile_DryRunThenReal_ContractReportShape()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);
        var stranded = await RegisterAsync(client, Nvme);
        await OkAsync(await PostAsync(client, $"/devices/{stranded}/bind"));
        var held = await RegisterAsync(client, Nvme2);
        await OkAsync(await PostAsync(client, $"/devices/{held}/bind"));
        WriteProcess(app.HostRoot, 3131, startTime: 9, "rogue-vmm", "/dev/vfio/51");

        var dry = await OkAsync(await client.PostAsync("/reconcile?dry_run=true", null));

        AssertReportShape(dry, dryRun: true);
        var action = Assert.Single(dry.GetProperty("actions").EnumerateArray());
        Assert.Equal(stranded, action.GetProperty("device_id").GetString());
        Assert.Equal(Nvme, action.GetProperty("pci_address").GetString());
        Assert.Equal("stranded_on_vfio", action.GetProperty("kind").GetString());
        Assert.False(string.IsNullOrWhiteSpace(action.GetProperty("detail").GetString()));
        Assert.False(action.GetProperty("applied").GetBoolean());
        var process = Assert.Single(dry.GetProperty("suspicious_processes").EnumerateArray());
        Assert.Equal(3131, process.GetProperty("pid").GetInt32());
        Assert.Equal("rogue-vmm", process.GetProperty("command").GetString());
        Assert.Equal("/dev/vfio/51", process.GetProperty("vfio_group").GetString());

        var real = await OkAsync(await client.PostAsync("/reconcile", null));

        AssertReportShape(real, dryRun: false);
        Assert.Equal("stranded_on_vfio", Assert.Single(real.GetProperty("actions").EnumerateArray()).GetProperty("kind").GetString());
        Assert.Single(real.GetProperty("suspicious_processes").EnumerateArray());
    }

    [Fact]
    public async Task Reconcile_WithRestoreStranded_AppliedThroughTheApi()
    {
        using var app = new PassthroughApplication(settings: Settings(("Reconcile:RestoreStranded", "true")));
        using var client = await ReadyClientAsync(app);
        var id = await RegisterAsync(client, Nvme);
        await OkAsync(await PostAsync(client, $"/devices/{id}/bind"));

        var report = await OkAsync(await client.PostAsync("/reconcile?dry_run=false", null));

        var action = Assert.Single(report.GetProperty("actions").EnumerateArray());
        Assert.Equal("stranded_on_vfio", action.GetProperty("kind").GetString());
        Assert.True(action.GetProperty("applied").GetBoolean());
        Assert.Equal("nvme", (await OkAsync(await client.GetAsync($"/devices/{id}"))).GetProperty("current_driver").GetString());
    }

    [Fact]
    public async Task Reconcile_BadDryRunValue_400()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var client = await ReadyClientAsync(app);

        var response = await client.PostAsync("/reconcile?dry_run=maybe", null);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }

    private static void AssertReportShape(JsonElement report, bool dryRun)
    {
        Assert.Equal(
            ["actions", "dry_run", "finished_at", "started_at", "suspicious_processes"],
            report.EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal));
        var started = UtcTimestamp(report.GetProperty("started_at"));
        var finished = UtcTimestamp(report.GetProperty("finished_at"));
        Assert.True(started <= finished);
        Assert.Equal(dryRun, report.GetProperty("dry_run").GetBoolean());
        foreach (var action in report.GetProperty("actions").EnumerateArray())
        {
            Assert.Equal(JsonValueKind.String, action.GetProperty("device_id").ValueKind);
            Assert.Equal(JsonValueKind.String, action.GetProperty("pci_address").ValueKind);
            Assert.Contains(action.GetProperty("kind").GetString(), new[]
            {
                "orphan_cleared", "driver_restored", "journal_rolled_back", "journal_completed", "missing", "changed",
                "group_renumbered", "quarantined", "stranded_on_vfio",
            });
            Assert.Equal(JsonValueKind.String, action.GetProperty("detail").ValueKind);
            Assert.True(action.GetProperty("applied").ValueKind is JsonValueKind.True or JsonValueKind.False);
        }

        foreach (var process in report.GetProperty("suspicious_processes").EnumerateArray())
        {
            Assert.Equal(JsonValueKind.Number, process.GetProperty("pid").ValueKind);
            Assert.Equal(JsonValueKind.String, process.GetProperty("command").ValueKind);
            Assert.Equal(JsonValueKind.String, process.GetProperty("vfio_group").ValueKind);
        }
    }

    private static DateTimeOffset UtcTimestamp(JsonElement value)
    {
        var text = value.GetString()!;
        Assert.EndsWith("Z", text, StringComparison.Ordinal);
        var parsed = DateTimeOffset.Parse(text, System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal(TimeSpan.Zero, parsed.Offset);
        return parsed;
    }

    [Fact]
    public async Task Readyz_AfterACrashMidAttach_ContainsTheStartupReconcileThatRolledItBack()
    {
        using var tree = new TempDirectory("pcipt-host");
        using var state = new TempDirectory("pcipt-state");
        GpuServerFixture.WriteTo(tree.Path);
        string id;
        using (var crashing = new SimulatedHost(tree.Path, state.Path, crashPoint: new ThrowingCrashPoint("attach", 3)))
        {
            id = (await crashing.Manager.CreateDeviceAsync(new CreateDeviceCommand(Nvme, "nvme0"))).Id;
            await Assert.ThrowsAsync<SimulatedCrashException>(() => crashing.Manager.AttachAsync(id, new AttachCommand("vm-1")));
            Assert.Null(crashing.DriverOf(Nvme));
        }

        using var app = new PassthroughApplication(tree.Path, state.Path, Settings());
        using var client = await ReadyClientAsync(app);

        var ready = await OkAsync(await client.GetAsync("/readyz"));

        Assert.Equal("ready", ready.GetProperty("status").GetString());
        var report = ready.GetProperty("startup_reconcile");
        AssertReportShape(report, dryRun: false);
        var action = Assert.Single(report.GetProperty("actions").EnumerateArray());
        Assert.Equal(id, action.GetProperty("device_id").GetString());
        Assert.Equal("journal_rolled_back", action.GetProperty("kind").GetString());
        Assert.True(action.GetProperty("applied").GetBoolean());
        var device = await OkAsync(await client.GetAsync("/devices/nvme0"));
        Assert.Equal("ready", device.GetProperty("state").GetString());
        Assert.Equal("nvme", device.GetProperty("current_driver").GetString());
        Assert.Equal(JsonValueKind.Null, device.GetProperty("attached_to").ValueKind);
        Assert.Empty(Directory.EnumerateFiles(Path.Combine(state.Path, "journal")));
    }

    [Fact]
    public async Task Changes_BeforeTheStartupReconcileIsDone_503NotReadyWhileReadsWork()
    {
        using var tree = new TempDirectory("pcipt-host");
        using var state = new TempDirectory("pcipt-state");
        GpuServerFixture.WriteTo(tree.Path);
        string id;
        using (var before = new SimulatedHost(tree.Path, state.Path))
        {
            id = (await before.Manager.CreateDeviceAsync(new CreateDeviceCommand(Nvme))).Id;
        }

        var liveness = new BlockingLiveness();
        using var app = new PassthroughApplication(tree.Path, state.Path, Settings());
        using var blocked = app.WithWebHostBuilder(b => b.ConfigureTestServices(s =>
        {
            s.RemoveAll<IInstanceLivenessChecker>();
            s.AddSingleton<IInstanceLivenessChecker>(liveness);
        }));
        try
        {
            using var client = blocked.CreateClient();
            Assert.True(liveness.Entered.Wait(Wait));

            var readyz = await client.GetAsync("/readyz");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, readyz.StatusCode);
            Assert.Equal("starting", (await BodyAsync(readyz)).GetProperty("status").GetString());
            await ProblemAsync(await AttachAsync(client, id, "vm-1"), HttpStatusCode.ServiceUnavailable, "not_ready");
            await ProblemAsync(await DetachAsync(client, id, "vm-1"), HttpStatusCode.ServiceUnavailable, "not_ready");
            await ProblemAsync(await client.PostAsync("/reconcile", null), HttpStatusCode.ServiceUnavailable, "not_ready");
            Assert.Equal("ready", (await OkAsync(await client.GetAsync($"/devices/{id}"))).GetProperty("state").GetString());

            liveness.Release();
            using var ready = await ReadyClientAsync(blocked);
            await OkAsync(await AttachAsync(ready, id, "vm-1"));
        }
        finally
        {
            liveness.Release();
        }
    }

    [Fact]
    public async Task Changes_AfterTheStartupReconcileFailed_503NotReadyNamingTheFailure()
    {
        var liveness = new BlockingLiveness(fail: true);
        liveness.Release();
        using var app = new PassthroughApplication(settings: Settings());
        using var failed = app.WithWebHostBuilder(b => b.ConfigureTestServices(s =>
        {
            s.RemoveAll<IInstanceLivenessChecker>();
            s.AddSingleton<IInstanceLivenessChecker>(liveness);
        }));
        using var client = failed.CreateClient();
        using var timeout = new CancellationTokenSource(Wait);
        JsonElement readyz;
        do
        {
            await Task.Delay(10, timeout.Token);
            readyz = await BodyAsync(await client.GetAsync("/readyz", timeout.Token));
        }
        while (readyz.GetProperty("status").GetString() == "starting");

        Assert.Equal("failed", readyz.GetProperty("status").GetString());
        Assert.Contains("proc scan failed", readyz.GetProperty("failure").GetString(), StringComparison.Ordinal);
        var problem = await ProblemAsync(await client.PostAsync("/devices", Json($$"""{"pci_address": "{{Nvme}}"}""")),
            HttpStatusCode.ServiceUnavailable, "not_ready");
        Assert.Contains("proc scan failed", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Start_HttpLivenessWithUrl_ReadyWithTheHttpChecker()
    {
        using var app = new PassthroughApplication(settings: Settings());
        using var http = app.WithWebHostBuilder(b => b.UseSetting("Liveness:Mode", "http").UseSetting("Liveness:Url", "http://127.0.0.1:9/"));

        using var client = await ReadyClientAsync(http);

        Assert.IsType<HttpLivenessChecker>(http.Services.GetRequiredService<IInstanceLivenessChecker>());
    }

    [Fact]
    public async Task Start_DaemonProcessWithHttpLivenessWithoutUrl_ExitsNamingLivenessUrl()
    {
        using var state = new TempDirectory("pcipt-state");
        var daemon = Path.Combine(AppContext.BaseDirectory, "PciPassthrough.Daemon.dll");
        var start = new System.Diagnostics.ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[]
        {
            daemon, "--simulate", $"--State:Directory={state.Path}", "--Liveness:Mode=http", "--Reconcile:Interval=00:00:00",
            "--urls", "http://127.0.0.1:0",
        })
        {
            start.ArgumentList.Add(arg);
        }

        using var process = System.Diagnostics.Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw;
        }

        var output = await stdout + await stderr;
        Assert.True(process.ExitCode != 0, output);
        Assert.Contains("Liveness:Url", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Start_LivenessModeGivenAsAppConfiguration_CheckerAgreesWithTheValidatedOptions()
    {
        // PassthroughApplication hands its settings over as app configuration, which options binding
        // sees; the checker must be the one those (validated) options name.
        using var app = new PassthroughApplication(settings: Settings(("Liveness:Mode", "none")));
        using var client = await ReadyClientAsync(app);

        var options = app.Services.GetRequiredService<IOptions<LivenessOptions>>().Value;
        var checker = app.Services.GetRequiredService<IInstanceLivenessChecker>();

        Assert.Equal(LivenessMode.None, options.Mode);
        Assert.IsType<NoLivenessChecker>(checker);
    }

    private static string? Driver(string hostRoot, string address) =>
        new FileInfo(Path.Combine(hostRoot, "sys", "bus", "pci", "devices", address, "driver")).LinkTarget is { } target
            ? Path.GetFileName(target)
            : null;

    /// <summary>Holds the start-up reconcile inside its holder scan until released (or fails it).</summary>
    private sealed class BlockingLiveness(bool fail = false) : IInstanceLivenessChecker
    {
        private readonly ManualResetEventSlim _release = new(false);

        public ManualResetEventSlim Entered { get; } = new(false);

        public void Release() => _release.Set();

        public Task<InstanceState> IsInstanceRunningAsync(AttachmentRecord attachment, CancellationToken cancellationToken) =>
            Task.FromResult(InstanceState.Unknown);

        public IReadOnlyList<string> GetInstanceDevices(string instanceId) => [];

        public IReadOnlyDictionary<string, IReadOnlyList<string>> ListAllInstanceDevices() => new Dictionary<string, IReadOnlyList<string>>();

        public IReadOnlyList<SuspiciousProcess> DetectSuspiciousVmmProcesses()
        {
            Entered.Set();
            _release.Wait(Wait);
            if (fail)
            {
                throw new IOException("proc scan failed");
            }

            return [];
        }
    }
}
