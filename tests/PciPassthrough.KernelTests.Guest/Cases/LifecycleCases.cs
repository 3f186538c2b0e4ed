using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Kernel;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests.Guest.Cases;

/// <summary>Handing a device to an instance (a process standing for a VMM) and taking it back.</summary>
public sealed class LifecycleCases(CaseContext context)
{
    private const string Device = Topology.Solo;

    [KernelCase("attach_detach", Order = 100,
        Description = "attach binds and records the instance; another instance gets 409 in_use; detach with release: true restores e1000e")]
    public async Task AttachDetach()
    {
        var kernel = context.Kernel;
        var vmm = context.StartSleeper();
        var id = await context.Api.RegisterAsync(Device);

        var attached = (await context.Api.AttachAsync(id, "vm-a", vmm.Id)).Expect(200);
        context.Detail("attach_ms", attached.ElapsedMs);
        KernelChecks.OnVfio(kernel, Device, "after attach");
        KernelChecks.ResponseAgrees(kernel, attached, Device, "attach");
        Expect.Equal("vm-a", attached.TextOrNull("attached_to"), "attached_to after attach");
        Expect.Equal("attached", attached.Text("state"), "state after attach");

        var retry = (await context.Api.AttachAsync(id, "vm-a", vmm.Id)).Expect(200);
        Expect.Equal(attached.ETag, retry.ETag, "ETag of a retried attach by the same instance");
        var other = (await context.Api.AttachAsync(id, "vm-b", null)).Expect(409, "in_use");
        Expect.Equal("vm-a", other.TextOrNull("attached_to"), "attached_to in the in_use problem");
        (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(409, "in_use");
        (await context.Api.DetachAsync(id, "vm-b", release: true)).Expect(409, "not_owner");
        KernelChecks.OnVfio(kernel, Device, "after the refused requests");

        var detached = (await context.Api.DetachAsync(id, "vm-a", release: true)).Expect(200);
        context.Detail("detach_release_ms", detached.ElapsedMs);
        KernelChecks.OnHostDriver(kernel, Device, "after detach with release");
        KernelChecks.ResponseAgrees(kernel, detached, Device, "detach");
        Expect.Equal(null, detached.TextOrNull("attached_to"), "attached_to after detach");
        Expect.True(!GuestKernel.VfioGroupNodeExists(kernel.GroupOf(Device)), "/dev/vfio/N still exists after detach with release");
    }

    [KernelCase("reconcile_orphan_and_stranded", Order = 110,
        Description = "attach with a live pid, kill the process: POST /reconcile clears the orphan and reports the device stranded_on_vfio; unbind restores it")]
    public async Task ReconcileOrphanAndStranded()
    {
        var kernel = context.Kernel;
        var vmm = context.StartSleeper();
        var id = await context.Api.RegisterAsync(Device);
        (await context.Api.AttachAsync(id, "vm-gone", vmm.Id)).Expect(200);
        KernelChecks.OnVfio(kernel, Device, "after attach");

        var quiet = (await context.Api.PostAsync("/reconcile?dry_run=true")).Expect(200);
        Expect.True(!Kinds(quiet).Contains("orphan_cleared"), $"a reconcile while the instance lives must not clear it: {quiet.Raw}");

        vmm.Kill();
        await vmm.WaitForExitAsync();
        var report = (await context.Api.PostAsync("/reconcile")).Expect(200);
        context.Detail("report", report.Json.DeepClone());
        var actions = report.Json["actions"]?.AsArray().OfType<JsonObject>().Where(a => a["pci_address"]?.GetValue<string>() == Device).ToList() ?? [];
        Expect.True(actions.Any(a => a["kind"]?.GetValue<string>() == "orphan_cleared" && a["applied"]?.GetValue<bool>() == true),
            $"reconcile should apply orphan_cleared for {Device}: {report.Raw}");
        Expect.True(actions.Any(a => a["kind"]?.GetValue<string>() == "stranded_on_vfio"),
            $"reconcile should report {Device} stranded_on_vfio: {report.Raw}");

        var device = (await context.Api.GetAsync($"/devices/{id}")).Expect(200);
        Expect.Equal(null, device.TextOrNull("attached_to"), "attached_to after the reconcile");
        KernelChecks.OnVfio(kernel, Device, "after the reconcile (RestoreStranded is off: it stays bound)");
        Expect.Equal("bound", device.Text("state"), "state after the reconcile");

        (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(200);
        KernelChecks.OnHostDriver(kernel, Device, "after unbind");
    }

    [KernelCase("reconcile_restores_lost_driver", Order = 115,
        Description = "a registered device left without a driver (unbound by hand) gets its original driver back from POST /reconcile")]
    public async Task ReconcileRestoresLostDriver()
    {
        var kernel = context.Kernel;
        var id = await context.Api.RegisterAsync(Device);
        kernel.Sysfs.Write("/sys/bus/pci/drivers/e1000e/unbind", Device);
        Expect.Equal(null, kernel.DriverOf(Device), "driver after the raw unbind");
        var report = (await context.Api.PostAsync("/reconcile")).Expect(200);
        context.Detail("report", report.Json.DeepClone());
        var actions = report.Json["actions"]?.AsArray().OfType<JsonObject>().Where(a => a["pci_address"]?.GetValue<string>() == Device).ToList() ?? [];
        Expect.True(actions.Any(a => a["kind"]?.GetValue<string>() == "driver_restored" && a["applied"]?.GetValue<bool>() == true),
            $"reconcile should apply driver_restored for {Device}: {report.Raw}");
        KernelChecks.OnHostDriver(kernel, Device, "after the reconcile");
        Expect.True(GuestKernel.NetInterfacesOf(Device).Count == 1, "no net interface after the reconcile restored e1000e");
        var device = (await context.Api.GetAsync($"/devices/{id}")).Expect(200);
        Expect.Equal("ready", device.Text("state"), "state after the reconcile");
    }

    private static List<string> Kinds(Daemon.ApiResponse report) =>
        report.Json["actions"]?.AsArray().Select(a => a?["kind"]?.GetValue<string>() ?? "").ToList() ?? [];
}
