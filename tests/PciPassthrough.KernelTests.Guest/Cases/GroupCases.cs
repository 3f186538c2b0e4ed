using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Kernel;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests.Guest.Cases;

/// <summary>IOMMU groups with more than one endpoint: the kernel's unit of isolation.</summary>
public sealed class GroupCases(CaseContext context)
{
    [KernelCase("group_conflict_shared_with_display", Order = 70,
        Description = "bind of the e1000 0000:03:01.0 is 409 iommu_group_conflict naming the display 0000:03:02.0 on bochs-drm; nothing changes")]
    public async Task GroupConflictSharedWithDisplay()
    {
        var kernel = context.Kernel;
        var group = kernel.GroupOf(Topology.LegacyNic);
        var id = await context.Api.RegisterAsync(Topology.LegacyNic);
        var before = kernel.Capture();

        var refused = (await context.Api.PostAsync($"/devices/{id}/bind")).Expect(409, "iommu_group_conflict");
        var blockers = refused.Json["blocking_devices"]?.AsArray().OfType<JsonObject>().ToList() ?? [];
        Expect.True(blockers.Any(b => b["pci_address"]?.GetValue<string>() == Topology.Display && b["driver"]?.GetValue<string>() == "bochs-drm"),
            $"blocking_devices should name {Topology.Display} (bochs-drm): {refused.Raw}");
        Expect.True(blockers.All(b => b["pci_address"]?.GetValue<string>() != Topology.DmiBridge),
            $"the bridge {Topology.DmiBridge} (no driver) does not block the group: {refused.Raw}");
        Expect.Empty(before.Differences(kernel.Capture(), "before", "after"), "kernel changes made by the refused bind");
        KernelChecks.OnHostDriver(kernel, Topology.LegacyNic, "after the refused bind");
        KernelChecks.OnHostDriver(kernel, Topology.Display, "after the refused bind");
        Expect.True(!GuestKernel.VfioGroupNodeExists(group), $"/dev/vfio/{group} exists after the refused bind");

        var plan = (await context.Api.PostAsync($"/devices/{id}/bind?dry_run=true")).Expect(200);
        Expect.Equal("iommu_group_conflict", plan.TextOrNull("would_fail_with"), "would_fail_with of the dry-run bind");
        var device = (await context.Api.GetAsync($"/devices/{id}")).Expect(200);
        Expect.Equal("ready", device.Text("state"), "state after the refused bind");
        context.Detail("blocking_devices", refused.Json["blocking_devices"]?.DeepClone());
        context.Detail("group", group);
    }

    [KernelCase("group_bind_multifunction", Order = 80,
        Description = "0000:02:00.0 alone is refused (its sibling function is on e1000e); ?group=true binds both, /dev/vfio/N is viable and both device fds open; unbind restores both")]
    public async Task GroupBindMultifunction()
    {
        var kernel = context.Kernel;
        var group = kernel.GroupOf(Topology.MultiFunction0);
        var id = await context.Api.RegisterAsync(Topology.MultiFunction0);

        var refused = (await context.Api.PostAsync($"/devices/{id}/bind")).Expect(409, "iommu_group_conflict");
        Expect.True(refused.Raw.Contains(Topology.MultiFunction1, StringComparison.Ordinal),
            $"the conflict should name {Topology.MultiFunction1}: {refused.Raw}");
        KernelChecks.OnHostDriver(kernel, Topology.MultiFunction0, "after the refused single bind");

        var bound = (await context.Api.PostAsync($"/devices/{id}/bind?group=true")).Expect(200);
        context.Detail("group_bind_ms", bound.ElapsedMs);
        KernelChecks.OnVfio(kernel, Topology.MultiFunction0, "after the group bind");
        KernelChecks.OnVfio(kernel, Topology.MultiFunction1, "after the group bind");
        KernelChecks.ResponseAgrees(kernel, bound, Topology.MultiFunction0, "group bind");
        using (var vfio = VfioGroupSession.Open(group, [Topology.MultiFunction0, Topology.MultiFunction1]))
        {
            Expect.True(vfio.Viable, $"/dev/vfio/{group} is not viable");
            context.Detail("vfio", new JsonObject(vfio.Results.Select(r => KeyValuePair.Create(r.Key, (JsonNode?)JsonValue.Create(r.Value?.ToString())))));
        }

        var unbound = (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(200);
        context.Detail("group_unbind_ms", unbound.ElapsedMs);
        KernelChecks.OnHostDriver(kernel, Topology.MultiFunction0, "after unbind");
        KernelChecks.OnHostDriver(kernel, Topology.MultiFunction1, "after unbind (the function bound with it)");
        Expect.True(!GuestKernel.VfioGroupNodeExists(group), $"/dev/vfio/{group} still exists after unbind");
    }

    [KernelCase("group_bind_with_bridge_and_display", Order = 85,
        Description = "?group=true on the e1000 0000:03:01.0 takes the display from bochs-drm too, leaves the bridge alone; the group is viable; unbind gives the display back to bochs-drm")]
    public async Task GroupBindWithBridgeAndDisplay()
    {
        var kernel = context.Kernel;
        var group = kernel.GroupOf(Topology.LegacyNic);
        var id = await context.Api.RegisterAsync(Topology.LegacyNic);
        var plan = (await context.Api.PostAsync($"/devices/{id}/bind?group=true&dry_run=true")).Expect(200);
        var planned = plan.Json["steps"]?.AsArray().Select(s => s?["pci_address"]?.GetValue<string>()).Distinct().ToList() ?? [];
        Expect.Sequence([Topology.LegacyNic, Topology.Display], planned.OfType<string>(), "functions the group bind plan writes to");

        var bound = (await context.Api.PostAsync($"/devices/{id}/bind?group=true")).Expect(200);
        context.Detail("group_bind_ms", bound.ElapsedMs);
        KernelChecks.OnVfio(kernel, Topology.LegacyNic, "after the group bind");
        KernelChecks.OnVfio(kernel, Topology.Display, "after the group bind");
        Expect.Equal(null, kernel.DriverOf(Topology.DmiBridge), "driver of the bridge after the group bind");
        Expect.Equal("(null)", kernel.OverrideOf(Topology.DmiBridge), "driver_override of the bridge after the group bind");
        using (var vfio = VfioGroupSession.Open(group, [Topology.LegacyNic, Topology.Display]))
        {
            context.Detail("vfio_viable", vfio.Viable);
        }

        (await context.Api.PostAsync($"/devices/{id}/unbind")).Expect(200);
        KernelChecks.OnHostDriver(kernel, Topology.LegacyNic, "after unbind");
        KernelChecks.OnHostDriver(kernel, Topology.Display, "after unbind (the display bound with it)");
        Expect.True(!GuestKernel.VfioGroupNodeExists(group), $"/dev/vfio/{group} still exists after unbind");
    }
}
