using System.Net;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using PciPassthrough.Devices;
using PciPassthrough.Registry;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Vfio;

namespace PciPassthrough.Daemon.Api.Tests;

/// <summary>POST /devices/{id}/bind, /unbind and /reset over HTTP, against the simulated kernel.</summary>
public sealed class VfioApiTests
{
    private const string Gpu = "0000:17:00.0";
    private const string GpuAudio = "0000:17:00.1";
    private const string Nvme = "0000:3b:00.0";
    private const string I210 = "0000:04:00.0";
    private const string Nic = "0000:60:00.0";

    private static void AssertProblem((HttpStatusCode Status, JsonObject Body, string? MediaType) response, HttpStatusCode status, string code)
    {
        Assert.True(status == response.Status, $"expected {(int)status}, got {(int)response.Status}: {response.Body.ToJsonString()}");
        Assert.Equal("application/problem+json", response.MediaType);
        Assert.Equal(code, response.Body["code"]!.GetValue<string>());
        Assert.Equal((int)status, response.Body["status"]!.GetValue<int>());
        Assert.False(string.IsNullOrEmpty(response.Body["message"]!.GetValue<string>()));
        Assert.Equal(response.Body["detail"]!.GetValue<string>(), response.Body["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task Bind_Nvme_200WithTheDeviceOnVfio()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Nvme);

        var response = await api.PostAsync($"/devices/{id}/bind");

        Assert.Equal(HttpStatusCode.OK, response.Status);
        var device = response.Body;
        Assert.Equal(id, device["id"]!.GetValue<string>());
        Assert.True(device["bound_to_vfio"]!.GetValue<bool>());
        Assert.Equal("vfio-pci", device["current_driver"]!.GetValue<string>());
        Assert.Equal("nvme", device["original_driver"]!.GetValue<string>());
        Assert.Equal("/dev/vfio/21", device["vfio_group_path"]!.GetValue<string>());
        Assert.Equal("bound", device["state"]!.GetValue<string>());
        Assert.Equal("vfio-pci", api.Tree.DriverOf(Nvme));
        Assert.True(api.Tree.Exists("/dev/vfio/21"));
    }

    [Fact]
    public async Task Bind_ByNameAndAgain_IdempotentAndSameDevice()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Nvme);
        var name = (await api.GetDeviceAsync(id))["name"]!.GetValue<string>();

        var first = await api.PostAsync($"/devices/{name}/bind");
        var second = await api.PostAsync($"/devices/{id}/bind");

        Assert.Equal(HttpStatusCode.OK, first.Status);
        Assert.Equal(HttpStatusCode.OK, second.Status);
        Assert.True(second.Body["bound_to_vfio"]!.GetValue<bool>());
        Assert.Equal(id, first.Body["id"]!.GetValue<string>());
    }

    [Fact]
    public async Task Unbind_BoundNvme_200BackOnNvme()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Nvme);
        await api.PostAsync($"/devices/{id}/bind");

        var response = await api.PostAsync($"/devices/{id}/unbind");
        var again = await api.PostAsync($"/devices/{id}/unbind");

        Assert.Equal(HttpStatusCode.OK, response.Status);
        Assert.False(response.Body["bound_to_vfio"]!.GetValue<bool>());
        Assert.Equal("nvme", response.Body["current_driver"]!.GetValue<string>());
        Assert.Equal("nvme", response.Body["original_driver"]!.GetValue<string>());
        Assert.Null(response.Body["vfio_group_path"]);
        Assert.Equal("ready", response.Body["state"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, again.Status);
        Assert.Equal("nvme", api.Tree.DriverOf(Nvme));
        Assert.Equal("(null)\n", api.Tree.OverrideOf(Nvme));
        Assert.False(api.Tree.Exists("/dev/vfio/21"));
    }

    [Fact]
    public async Task Bind_GpuWithoutGroup_409ConflictWithBlockingDevices()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Gpu);

        var response = await api.PostAsync($"/devices/{id}/bind");

        AssertProblem(response, HttpStatusCode.Conflict, "iommu_group_conflict");
        var blocker = Assert.Single(response.Body["blocking_devices"]!.AsArray())!.AsObject();
        Assert.Equal(GpuAudio, blocker["pci_address"]!.GetValue<string>());
        Assert.Equal("snd_hda_intel", blocker["driver"]!.GetValue<string>());
        Assert.Equal("040300", blocker["class_code"]!.GetValue<string>());
        Assert.False(string.IsNullOrEmpty(blocker["reason"]!.GetValue<string>()));
        Assert.Equal("nvidia", api.Tree.DriverOf(Gpu));
        Assert.Equal("(null)\n", api.Tree.OverrideOf(Gpu));
    }

    [Fact]
    public async Task Bind_OnboardNic_409ConflictNamingTheConsoleVga()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(I210);

        var response = await api.PostAsync($"/devices/{id}/bind");

        AssertProblem(response, HttpStatusCode.Conflict, "iommu_group_conflict");
        Assert.Equal(["0000:03:00.0"], response.Body["blocking_devices"]!.AsArray().Select(b => b!["pci_address"]!.GetValue<string>()));
        Assert.Equal("igb", api.Tree.DriverOf(I210));
    }

    [Fact]
    public async Task Bind_OnboardNicWithGroup_RefusedRatherThanTakingTheHostConsoleVga()
    {
        // GpuServerFixture: "the BMC's VGA (held by the host console driver) shares a group with an
        // onboard NIC ..., so binding that NIC must be refused". ?group=true must not be the way
        // around that: it would take the console's display (ast, /dev/dri/card0) from the host.
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(I210);

        var response = await api.PostAsync($"/devices/{id}/bind?group=true");

        Assert.Equal("ast", api.Tree.DriverOf("0000:03:00.0"));
        AssertProblem(response, HttpStatusCode.Conflict, "iommu_group_conflict");
        Assert.Equal("igb", api.Tree.DriverOf(I210));
    }

    [Fact]
    public async Task BindWithGroupThenUnbindWithGroup_BothFunctionsMovedAndReturned()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Gpu);

        var bound = await api.PostAsync($"/devices/{id}/bind?group=true");
        Assert.Equal("vfio-pci", api.Tree.DriverOf(GpuAudio));
        var unbound = await api.PostAsync($"/devices/{id}/unbind?group=true");

        Assert.Equal(HttpStatusCode.OK, bound.Status);
        Assert.True(bound.Body["bound_to_vfio"]!.GetValue<bool>());
        Assert.Equal("/dev/vfio/11", bound.Body["vfio_group_path"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, unbound.Status);
        Assert.Equal("nvidia", api.Tree.DriverOf(Gpu));
        Assert.Equal("snd_hda_intel", api.Tree.DriverOf(GpuAudio));
    }

    [Fact]
    public async Task Bind_DryRun_200PlanAndNothingWritten()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Gpu);
        var before = api.Tree.Snapshot();

        var response = await api.PostAsync($"/devices/{id}/bind?group=true&dry_run=true");

        Assert.Equal(HttpStatusCode.OK, response.Status);
        var plan = response.Body;
        Assert.Equal("bind", plan["operation"]!.GetValue<string>());
        Assert.True(plan["dry_run"]!.GetValue<bool>());
        Assert.True(plan["would_succeed"]!.GetValue<bool>());
        Assert.Null(plan["would_fail_with"]);
        Assert.True(plan["group"]!.GetValue<bool>());
        Assert.Equal(11, plan["iommu_group"]!.GetValue<int>());
        var steps = plan["steps"]!.AsArray();
        Assert.Equal(6, steps.Count);
        var first = steps[0]!.AsObject();
        Assert.Equal(1, first["order"]!.GetValue<int>());
        Assert.Equal(Gpu, first["pci_address"]!.GetValue<string>());
        Assert.Equal("set_override", first["action"]!.GetValue<string>());
        Assert.Equal($"/sys/bus/pci/devices/{Gpu}/driver_override", first["path"]!.GetValue<string>());
        Assert.Equal("vfio-pci", first["value"]!.GetValue<string>());
        Assert.False(string.IsNullOrEmpty(first["description"]!.GetValue<string>()));
        Assert.Equal([Gpu, GpuAudio], plan["members"]!.AsArray().Select(m => m!["pci_address"]!.GetValue<string>()));
        Assert.Equal(["nvidia", "snd_hda_intel"], plan["members"]!.AsArray().Select(m => m!["current_driver"]!.GetValue<string>()));
        Assert.Empty(plan["blocking_devices"]!.AsArray());
        Assert.Empty(plan["holders"]!.AsArray());
        var after = api.Tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    [Fact]
    public async Task Bind_DryRunRefused_200PlanWithWouldFailWith()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Gpu);

        var response = await api.PostAsync($"/devices/{id}/bind?dry_run=true");

        Assert.Equal(HttpStatusCode.OK, response.Status);
        Assert.False(response.Body["would_succeed"]!.GetValue<bool>());
        Assert.Equal("iommu_group_conflict", response.Body["would_fail_with"]!.GetValue<string>());
        Assert.Equal(GpuAudio, Assert.Single(response.Body["blocking_devices"]!.AsArray())!["pci_address"]!.GetValue<string>());
        Assert.Empty(response.Body["steps"]!.AsArray());
    }

    [Fact]
    public async Task Unbind_DryRun_200PlanOfTheRestore()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Nvme);
        await api.PostAsync($"/devices/{id}/bind");

        var response = await api.PostAsync($"/devices/{id}/unbind?dry_run=true");

        Assert.Equal(HttpStatusCode.OK, response.Status);
        Assert.Equal("unbind", response.Body["operation"]!.GetValue<string>());
        Assert.Equal(3, response.Body["steps"]!.AsArray().Count);
        Assert.Equal("vfio-pci", api.Tree.DriverOf(Nvme));
    }

    [Theory]
    [InlineData("bind?dry_run=maybe")]
    [InlineData("unbind?dry_run=maybe")]
    [InlineData("bind?group=perhaps")]
    [InlineData("bind?force=2")]
    [InlineData("reset?force=yes")]
    [InlineData("reset?method=FLR")]
    [InlineData("reset?method=../flr")]
    public async Task Post_InvalidQueryValue_400ValidationFailed(string operation)
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Nvme);
        var before = api.Tree.Snapshot();

        var response = await api.PostAsync($"/devices/{id}/{operation}");

        AssertProblem(response, HttpStatusCode.BadRequest, "validation_failed");
        var after = api.Tree.Snapshot();
        Assert.True(before.SequenceEqual(after), HostTree.Diff(before, after));
    }

    [Theory]
    [InlineData("bind")]
    [InlineData("unbind")]
    [InlineData("reset")]
    [InlineData("bind?dry_run=true")]
    public async Task Post_UnknownDevice_404NotFound(string operation)
    {
        await using var api = await VfioApiHost.StartAsync();

        var response = await api.PostAsync($"/devices/no-such-device/{operation}");

        AssertProblem(response, HttpStatusCode.NotFound, "not_found");
    }

    [Fact]
    public async Task Bind_ProcessHoldsTheDevice_409InUseWithHoldersAndForceGoesAhead()
    {
        // A GPU held through /dev/nvidia0: nvidia's unbind waits for its users (nvme's would not).
        const string gpu = "0000:17:00.0";
        await using var api = await VfioApiHost.StartAsync(
            settings: new Dictionary<string, string?> { ["Vfio:OperationTimeout"] = "00:00:00.5" },
            faults: new Dictionary<string, string[]> { [gpu] = ["holder=4242:nvidia-persistenced"] });
        var id = await api.RegisterAsync(gpu);

        var refused = await api.PostAsync($"/devices/{id}/bind?group=true");
        var forced = await api.PostAsync($"/devices/{id}/bind?group=true&force=true");

        AssertProblem(refused, HttpStatusCode.Conflict, "in_use");
        var holder = Assert.Single(refused.Body["holders"]!.AsArray())!.AsObject();
        Assert.Equal(4242, holder["pid"]!.GetValue<int>());
        Assert.Equal("nvidia-persistenced", holder["command"]!.GetValue<string>());
        Assert.Equal("/dev/nvidia0", holder["path"]!.GetValue<string>());
        // Forced, the bind goes ahead; the holder keeps the unbind from finishing within the timeout.
        AssertProblem(forced, HttpStatusCode.GatewayTimeout, "unbind_timeout");
        Assert.Equal(4242, Assert.Single(forced.Body["holders"]!.AsArray())!["pid"]!.GetValue<int>());
        Assert.Equal("vfio-pci\n", api.Tree.OverrideOf(gpu));
        Assert.Equal("quarantined", (await api.GetDeviceAsync(id))["state"]!.GetValue<string>());
    }

    [Fact]
    public async Task Bind_UnbindHangs_504ThenQuarantinedThenResetRecovers()
    {
        await using var api = await VfioApiHost.StartAsync(
            settings: new Dictionary<string, string?> { ["Vfio:OperationTimeout"] = "00:00:00.5" },
            faults: new Dictionary<string, string[]> { [Nvme] = ["unbind_hangs"] });
        var id = await api.RegisterAsync(Nvme);

        var timedOut = await api.PostAsync($"/devices/{id}/bind");
        var quarantined = await api.PostAsync($"/devices/{id}/unbind");
        var device = await api.GetDeviceAsync(id);
        api.Kernel.ReleaseHangs();
        await Wait.UntilAsync(() => api.Tree.DriverOf(Nvme) is null, "the stuck unbind to return");
        // The daemon leaves the device alone until it has seen its write return.
        var writer = api.Application.Services.GetRequiredService<BoundedKernelWriter>();
        await Wait.UntilAsync(() => writer.StuckWrites == 0, "the daemon to see the stuck write return");
        var reset = await api.PostAsync($"/devices/{id}/reset");

        AssertProblem(timedOut, HttpStatusCode.GatewayTimeout, "unbind_timeout");
        Assert.NotNull(timedOut.Body["holders"]);
        AssertProblem(quarantined, HttpStatusCode.Conflict, "quarantined");
        Assert.Equal("quarantined", device["state"]!.GetValue<string>());
        Assert.False(string.IsNullOrEmpty(device["quarantine_reason"]!.GetValue<string>()));
        Assert.Equal(HttpStatusCode.OK, reset.Status);
        Assert.Equal("ready", reset.Body["state"]!.GetValue<string>());
        Assert.Null(reset.Body["quarantine_reason"]);
        Assert.Equal("nvme", reset.Body["current_driver"]!.GetValue<string>());
        Assert.Equal("nvme", api.Tree.DriverOf(Nvme));
        Assert.Equal("(null)\n", api.Tree.OverrideOf(Nvme));
    }

    [Fact]
    public async Task Bind_FaultsFileProbeBindsNothing_StillEndsBoundThroughTheExplicitBind()
    {
        await using var api = await VfioApiHost.StartAsync(
            settings: new Dictionary<string, string?> { ["Vfio:OperationTimeout"] = "00:00:01" },
            faults: new Dictionary<string, string[]> { [Nvme] = ["probe_binds_nothing"] });
        var id = await api.RegisterAsync(Nvme);

        var response = await api.PostAsync($"/devices/{id}/bind");

        Assert.Equal(HttpStatusCode.OK, response.Status);
        Assert.True(response.Body["bound_to_vfio"]!.GetValue<bool>());
        Assert.Equal("vfio-pci", api.Tree.DriverOf(Nvme));
    }

    [Fact]
    public async Task Bind_FaultsFileBindRefused_OperationFailedRolledBack()
    {
        await using var api = await VfioApiHost.StartAsync(
            settings: new Dictionary<string, string?> { ["Vfio:OperationTimeout"] = "00:00:01" },
            faults: new Dictionary<string, string[]> { [Nvme] = ["bind_refused"] });
        var id = await api.RegisterAsync(Nvme);

        var response = await api.PostAsync($"/devices/{id}/bind");

        AssertProblem(response, HttpStatusCode.BadGateway, "operation_failed");
        Assert.True(response.Body["rolled_back"]!.GetValue<bool>());
        Assert.Equal("nvme", api.Tree.DriverOf(Nvme));
        Assert.Equal("ready", (await api.GetDeviceAsync(id))["state"]!.GetValue<string>());
    }

    [Fact]
    public async Task Bind_HostWithoutVfioPci_503VfioNotAvailable()
    {
        await using var api = await VfioApiHost.StartAsync(
            prepareTree: root => Directory.Delete(Path.Combine(root, "sys/bus/pci/drivers/vfio-pci"), recursive: true));
        var id = await api.RegisterAsync(Nvme);

        var response = await api.PostAsync($"/devices/{id}/bind");

        AssertProblem(response, HttpStatusCode.ServiceUnavailable, "vfio_not_available");
        Assert.Single(response.Body["missing"]!.AsArray());
    }

    [Fact]
    public async Task Bind_DeviceChangedUnderneath_409DeviceChanged()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Nvme);
        File.WriteAllText(api.Tree.Path($"/sys/bus/pci/devices/{Nvme}/vendor"), "0x8086\n");

        var response = await api.PostAsync($"/devices/{id}/bind");

        AssertProblem(response, HttpStatusCode.Conflict, "device_changed");
        Assert.Equal("nvme", api.Tree.DriverOf(Nvme));
    }

    [Fact]
    public async Task Reset_Device_200AndTheKernelCountsAReset()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Nvme);

        var response = await api.PostAsync($"/devices/{id}/reset");
        var withMethod = await api.PostAsync($"/devices/{id}/reset?method=flr");

        Assert.Equal(HttpStatusCode.OK, response.Status);
        Assert.Equal(id, response.Body["id"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.OK, withMethod.Status);
        Assert.Equal(2, api.Kernel.ResetCount(PciAddress.Parse(Nvme)));
        Assert.Equal("flr bus\n", api.Tree.Read($"/sys/bus/pci/devices/{Nvme}/reset_method"));
    }

    [Fact]
    public async Task Reset_MethodTheDeviceLacks_400ValidationFailed()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Nvme);

        var response = await api.PostAsync($"/devices/{id}/reset?method=pm");

        AssertProblem(response, HttpStatusCode.BadRequest, "validation_failed");
        Assert.Equal(0, api.Kernel.ResetCount(PciAddress.Parse(Nvme)));
    }

    [Theory]
    [InlineData("af_flr")]
    [InlineData("device_specific")]
    public async Task Reset_KernelResetMethodWithAnUnderscore_200(string method)
    {
        // Linux 6.1 names its reset methods device_specific, acpi, flr, af_flr, pm and bus.
        await using var api = await VfioApiHost.StartAsync(prepareTree: root => new SysfsTreeBuilder(root).AddDevice(new SimulatedDeviceSpec
        {
            Address = PciAddress.Parse(Nic),
            VendorId = 0x8086,
            DeviceId = 0x10fb,
            ClassCode = 0x020000,
            Driver = "ixgbe",
            IommuGroup = 60,
            ResetMethods = [method, "bus"],
        }));
        var id = await api.RegisterAsync(Nic);

        var response = await api.PostAsync($"/devices/{id}/reset?method={method}");

        Assert.True(HttpStatusCode.OK == response.Status, response.Body.ToJsonString());
        Assert.Equal(1, api.Kernel.ResetCount(PciAddress.Parse(Nic)));
        Assert.Equal($"{method} bus\n", api.Tree.Read($"/sys/bus/pci/devices/{Nic}/reset_method"));
    }

    [Fact]
    public async Task Reset_ResetFails_OperationFailed()
    {
        await using var api = await VfioApiHost.StartAsync(faults: new Dictionary<string, string[]> { [Nvme] = ["reset_fails"] });
        var id = await api.RegisterAsync(Nvme);

        var response = await api.PostAsync($"/devices/{id}/reset");

        AssertProblem(response, HttpStatusCode.BadGateway, "operation_failed");
    }

    [Fact]
    public async Task ResetAndUnbind_Attached_409InUseWithAttachedTo()
    {
        await using var api = await VfioApiHost.StartAsync();
        var id = await api.RegisterAsync(Nvme);
        await api.PostAsync($"/devices/{id}/bind");
        var registry = api.Application.Services.GetRequiredService<DeviceRegistry>();
        registry.Update(registry.Find(id)! with { Attachment = new AttachmentRecord { InstanceId = "inst-7", AttachedAt = DateTime.UtcNow } });

        var reset = await api.PostAsync($"/devices/{id}/reset");
        var unbind = await api.PostAsync($"/devices/{id}/unbind");

        AssertProblem(reset, HttpStatusCode.Conflict, "in_use");
        AssertProblem(unbind, HttpStatusCode.Conflict, "in_use");
        Assert.Equal("inst-7", unbind.Body["attached_to"]!.GetValue<string>());
        Assert.Equal("vfio-pci", api.Tree.DriverOf(Nvme));
    }

    [Fact]
    public async Task OpenApi_Document_DescribesBindUnbindAndReset()
    {
        await using var api = await VfioApiHost.StartAsync();

        using var response = await api.Client.GetAsync("/openapi/v1.json");
        var document = await VfioApiHost.ReadAsync(response);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var paths = document["paths"]!.AsObject();
        Assert.Equal("bindDevice", paths["/devices/{id}/bind"]!["post"]!["operationId"]!.GetValue<string>());
        Assert.Equal("unbindDevice", paths["/devices/{id}/unbind"]!["post"]!["operationId"]!.GetValue<string>());
        Assert.Equal("resetDevice", paths["/devices/{id}/reset"]!["post"]!["operationId"]!.GetValue<string>());
        var bindParameters = paths["/devices/{id}/bind"]!["post"]!["parameters"]!.AsArray().Select(p => p!["name"]!.GetValue<string>());
        Assert.Superset(new HashSet<string> { "id", "group", "dry_run", "force" }, bindParameters.ToHashSet());
        var resetParameters = paths["/devices/{id}/reset"]!["post"]!["parameters"]!.AsArray().Select(p => p!["name"]!.GetValue<string>());
        Assert.Contains("method", resetParameters);
    }
}
