using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Kernel;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests.Guest.Cases;

/// <summary>Binding a function that is alone in its IOMMU group, and giving it back.</summary>
public sealed class BindCases(CaseContext context)
{
    private const string Device = Topology.Solo;

    [KernelCase("bind_vfio_ioctls", Order = 30,
        Description = "bind 0000:00:02.0: vfio-pci, /dev/vfio/N, and the VFIO ioctls a VMM makes succeed; unbind is in_use while the agent holds the group")]
    public async Task BindVfioIoctls()
    {
        var kernel = context.Kernel;
        var group = kernel.GroupOf(Device);
        var id = await context.Api.RegisterAsync(Device);
        var bound = (await context.Api.PostAsync($"/devices/{id}/bind")).Expect(200);
        context.Detail("bind_ms", bound.ElapsedMs);
        KernelChecks.OnVfio(kernel, Device, "after bind");
        Expect.Equal("vfio-pci", kernel.OverrideOf(Device), "driver_override after bind");
        KernelChecks.ResponseAgrees(kernel, bound, Device, "bind");
        Expect.Equal("bound", bound.Text("state"), "state after bind");
        Expect.Equal("e1000e", bound.TextOrNull("original_driver"), "original_driver after bind");

        using (var vfio = VfioGroupSession.Open(group, [Device]))
        {
            context.Detail("vfio", new JsonObject(vfio.Results.Select(r => KeyValuePair.Create(r.Key, (JsonNode?)JsonValue.Create(r.Value?.ToString())))));
            // A VMM holds the group now: the daemon must see it and refuse to take the device away.
            var refused = (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(409, "in_use");
            var holders = refused.Json["holders"]?.AsArray().OfType<JsonObject>().ToList() ?? [];
            Expect.True(holders.Any(h => h["pid"]?.GetValue<int>() == Environment.ProcessId && h["path"]?.GetValue<string>() == $"/dev/vfio/{group}"),
                $"unbind while the agent (pid {Environment.ProcessId}) holds /dev/vfio/{group}: holders should name it, got {refused.Raw}");
            KernelChecks.OnVfio(kernel, Device, "after the refused unbind");
        }

        var unbound = (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(200);
        KernelChecks.OnHostDriver(kernel, Device, "after unbind");
        KernelChecks.ResponseAgrees(kernel, unbound, Device, "unbind");
    }

    [KernelCase("bind_idempotent_and_dry_run", Order = 40,
        Description = "a second bind is a no-op (same ETag, no kernel change); dry runs of bind and unbind change nothing in sysfs or /dev/vfio")]
    public async Task BindIdempotentAndDryRun()
    {
        var kernel = context.Kernel;
        var id = await context.Api.RegisterAsync(Device);

        var before = kernel.Capture();
        var bindPlan = (await context.Api.PostAsync($"/devices/{id}/bind?dry_run=true")).Expect(200);
        Expect.Empty(before.Differences(kernel.Capture(), "before", "after"), "kernel changes made by a dry-run bind");
        Expect.True(bindPlan.Bool("dry_run") && bindPlan.Bool("would_succeed"), $"dry-run bind plan: {bindPlan.Raw}");
        var actions = bindPlan.Json["steps"]?.AsArray().Select(s => s?["action"]?.GetValue<string>() ?? "?").ToList() ?? [];
        Expect.Sequence(["set_override", "unbind", "probe"], actions, "steps of the dry-run bind plan");

        var first = (await context.Api.PostAsync($"/devices/{id}/bind")).Expect(200);
        KernelChecks.OnVfio(kernel, Device, "after the first bind");
        var bound = kernel.Capture();
        var second = (await context.Api.PostAsync($"/devices/{id}/bind")).Expect(200);
        Expect.Empty(bound.Differences(kernel.Capture(), "before", "after"), "kernel changes made by a second bind");
        Expect.True(first.ETag is not null, "the bind response has no ETag");
        Expect.Equal(first.ETag, second.ETag, "ETag of the second bind (the record must not change)");
        var get = (await context.Api.GetAsync($"/devices/{id}")).Expect(200);
        Expect.Equal(first.ETag, get.ETag, "ETag of GET after the second bind");

        var unbindPlan = (await context.Api.PostAsync($"/devices/{id}/unbind?dry_run=true")).Expect(200);
        Expect.Empty(bound.Differences(kernel.Capture(), "before", "after"), "kernel changes made by a dry-run unbind");
        Expect.True(unbindPlan.Bool("would_succeed"), $"dry-run unbind plan: {unbindPlan.Raw}");
        var restoreActions = unbindPlan.Json["steps"]?.AsArray().Select(s => s?["action"]?.GetValue<string>() ?? "?").ToList() ?? [];
        Expect.Sequence(["set_override", "unbind", "probe"], restoreActions, "steps of the dry-run unbind plan");
        var after = (await context.Api.GetAsync($"/devices/{id}")).Expect(200);
        Expect.Equal(first.ETag, after.ETag, "ETag after the dry-run unbind");

        context.Detail("etag", first.ETag);
        context.Detail("bind_plan_steps", bindPlan.Json["steps"]?.DeepClone());
        (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(200);
        KernelChecks.OnHostDriver(kernel, Device, "after unbind");
    }

    [KernelCase("unbind_restores_host_driver", Order = 50,
        Description = "unbind returns 0000:00:02.0 to e1000e: driver_override (null), its net interface back in /sys/class/net, /dev/vfio/N gone")]
    public async Task UnbindRestoresHostDriver()
    {
        var kernel = context.Kernel;
        var group = kernel.GroupOf(Device);
        var netBefore = GuestKernel.NetInterfacesOf(Device);
        Expect.True(netBefore.Count == 1, $"{Device} should have one net interface before the bind, has [{string.Join(", ", netBefore)}]");
        var id = await context.Api.RegisterAsync(Device);
        (await context.Api.PostAsync($"/devices/{id}/bind")).Expect(200);
        KernelChecks.OnVfio(kernel, Device, "after bind");
        Expect.Empty(GuestKernel.NetInterfacesOf(Device), "net interfaces of the function while on vfio-pci");

        var unbound = (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(200);
        KernelChecks.OnHostDriver(kernel, Device, "after unbind");
        var netAfter = GuestKernel.NetInterfacesOf(Device);
        Expect.True(netAfter.Count == 1, $"after unbind, /sys/class/net should hold one interface whose device is {Device}, found [{string.Join(", ", netAfter)}]");
        Expect.True(!GuestKernel.VfioGroupNodeExists(group), $"/dev/vfio/{group} still exists after unbind");
        KernelChecks.ResponseAgrees(kernel, unbound, Device, "unbind");
        Expect.Equal("ready", unbound.Text("state"), "state after unbind");
        Expect.Equal(null, unbound.TextOrNull("vfio_group_path"), "vfio_group_path after unbind");

        var again = (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(200);
        Expect.Equal(unbound.ETag, again.ETag, "ETag of a second unbind (idempotent)");
        context.Detail("net_before", netBefore);
        context.Detail("net_after", netAfter);
        context.Detail("unbind_ms", unbound.ElapsedMs);
    }

    [KernelCase("delete_returns_bound_device", Order = 55,
        Description = "DELETE of a device the daemon bound gives it back to e1000e first, then forgets it")]
    public async Task DeleteReturnsBoundDevice()
    {
        var kernel = context.Kernel;
        var id = await context.Api.RegisterAsync(Device);
        (await context.Api.PostAsync($"/devices/{id}/bind")).Expect(200);
        KernelChecks.OnVfio(kernel, Device, "after bind");
        (await context.Api.DeleteAsync($"/devices/{id}")).Expect(204);
        KernelChecks.OnHostDriver(kernel, Device, "after DELETE");
        Expect.True(!GuestKernel.VfioGroupNodeExists(kernel.GroupOf(Device)), "/dev/vfio/N still exists after DELETE");
        (await context.Api.GetAsync($"/devices/{id}")).Expect(404, "not_found");
    }

    [KernelCase("forced_unbind_while_held_times_out", Order = 60,
        Description = "unbind?force=true while a VMM holds the VFIO device: the kernel blocks the unbind, the daemon answers 504 unbind_timeout and quarantines; once released, POST reset finishes the restore")]
    public async Task ForcedUnbindWhileHeldTimesOut()
    {
        var kernel = context.Kernel;
        var group = kernel.GroupOf(Device);
        var id = await context.Api.RegisterAsync(Device);
        (await context.Api.PostAsync($"/devices/{id}/bind")).Expect(200);
        KernelChecks.OnVfio(kernel, Device, "after bind");

        var vmm = context.Track(VfioGroupSession.Open(group, [Device]));
        // vfio-pci's remove waits for the open device to be released: the unbind write blocks in
        // the kernel, and the daemon must give up after Vfio:OperationTimeout instead of hanging.
        var timedOut = (await context.Api.PostAsync($"/devices/{id}/unbind?force=true")).Expect(504, "unbind_timeout");
        context.Detail("unbind_timeout_ms", timedOut.ElapsedMs);
        context.Detail("unbind_timeout_problem", timedOut.Json.DeepClone());
        // What the kernel shows while the unbind is blocked: Linux 6.1 has removed the driver link
        // already, and /dev/vfio/N stays while the VMM holds it. (driver_override is not read: its
        // show takes the device lock, which the blocked unbind holds until the VMM lets go.)
        context.Detail("kernel_while_blocked", $"driver={kernel.DriverOf(Device) ?? "none"} dev_vfio={string.Join(" ", kernel.DevVfio())}");
        var problems = new Mismatches();
        var holders = timedOut.Json["holders"]?.AsArray().OfType<JsonObject>().ToList() ?? [];
        problems.Check(holders.Any(h => h["pid"]?.GetValue<int>() == Environment.ProcessId),
            $"the unbind_timeout problem lists holders {timedOut.Json["holders"]?.ToJsonString()}, not the agent (pid {Environment.ProcessId}) that holds /dev/vfio/{group}");
        var quarantined = (await context.Api.GetAsync($"/devices/{id}")).Expect(200);
        problems.Equal("quarantined", quarantined.Text("state"), "state after the timed-out unbind");
        var host = (await context.Api.GetAsync("/host")).Expect(200);
        var findings = host.Json["findings"]?.AsArray().Select(f => f?["code"]?.GetValue<string>()).ToList() ?? [];
        problems.Check(findings.Contains("stuck_kernel_writes") && findings.Contains("quarantined_devices"),
            $"GET /host should report the stuck write and the quarantined device, findings: {string.Join(", ", findings)}");
        var refused = await context.Api.PostAsync($"/devices/{id}/bind");
        problems.Check(refused.Status == 409 && refused.Code == "quarantined", $"bind of the quarantined device: {refused.Status} {refused.Code}");

        vmm.Dispose();
        Expect.True(await kernel.WaitForDriverAsync(Device, null, TimeSpan.FromSeconds(30)),
            $"the blocked unbind did not finish once the device was released (driver {kernel.DriverOf(Device)})");
        var reset = (await context.Api.PostAsync($"/devices/{id}/reset")).Expect(200);
        KernelChecks.OnHostDriver(kernel, Device, "after POST reset");
        Expect.Equal("ready", reset.Text("state"), "state after POST reset");
        Expect.True(!GuestKernel.VfioGroupNodeExists(group), $"/dev/vfio/{group} still exists after the restore");
        KernelChecks.JournalEmpty(context.Daemon, "after POST reset");
        problems.ThrowIfAny("the timed-out unbind");
    }

    [KernelCase("unbind_of_device_found_on_vfio", Order = 57,
        Description = "a device already on vfio-pci when registered (bound by hand) has no original driver; unbind releases it and the kernel gives it back to e1000e")]
    public async Task UnbindOfDeviceFoundOnVfio()
    {
        var kernel = context.Kernel;
        var path = GuestKernel.DevicePath(Device);
        kernel.Sysfs.Write($"{path}/driver_override", "vfio-pci");
        kernel.Sysfs.Write($"{path}/driver/unbind", Device);
        kernel.Sysfs.Write("/sys/bus/pci/drivers_probe", Device);
        KernelChecks.OnVfio(kernel, Device, "after the raw bind");

        var id = await context.Api.RegisterAsync(Device);
        var device = (await context.Api.GetAsync($"/devices/{id}")).Expect(200);
        Expect.Equal(null, device.TextOrNull("original_driver"), "original_driver of a device found on vfio-pci");
        Expect.Equal("bound", device.Text("state"), "state of a device found on vfio-pci");
        var plan = (await context.Api.PostAsync($"/devices/{id}/unbind?dry_run=true")).Expect(200);
        context.Detail("unbind_plan_steps", plan.Json["steps"]?.DeepClone());
        var unbound = (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(200);
        KernelChecks.OnHostDriver(kernel, Device, "after unbind");
        KernelChecks.ResponseAgrees(kernel, unbound, Device, "unbind");
        Expect.True(!GuestKernel.VfioGroupNodeExists(kernel.GroupOf(Device)), "/dev/vfio/N still exists after unbind");
    }
}
