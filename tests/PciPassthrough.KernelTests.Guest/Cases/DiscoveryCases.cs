using System.Diagnostics;
using System.Globalization;
using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Kernel;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests.Guest.Cases;

/// <summary>What the daemon reports about the host, compared with the kernel read directly.</summary>
public sealed class DiscoveryCases(CaseContext context)
{
    [KernelCase("discovery_matches_sysfs", Order = 10,
        Description = "GET /devices/available equals a direct read of /sys: ids, classes, groups and members, drivers, no bridges; names as lspci gives them")]
    public async Task DiscoveryMatchesSysfs()
    {
        var kernel = context.Kernel;
        var expected = ReadFunctionsFromSysfs(kernel);
        var response = (await context.Api.GetAsync("/devices/available")).Expect(200);
        var listed = response.Json.AsArray().OfType<JsonObject>().ToList();
        var names = LspciNames();
        var mismatches = new Mismatches();

        var listedAddresses = listed.Select(d => Str(d, "pci_address") ?? "").ToList();
        mismatches.Equal(string.Join(" ", expected.Keys), string.Join(" ", listedAddresses),
            "addresses listed (every function but bridges, ordered)");
        foreach (var device in listed)
        {
            var address = Str(device, "pci_address") ?? "";
            if (!expected.TryGetValue(address, out var sysfs))
            {
                continue;
            }

            foreach (var (field, value) in sysfs)
            {
                mismatches.Equal(value, JsonText(device, field), $"{address} {field}");
            }

            mismatches.Equal("false", JsonText(device, "registered"), $"{address} registered");
            if (names.TryGetValue(address, out var lspci))
            {
                mismatches.Equal(lspci.Vendor, Str(device, "vendor_name"), $"{address} vendor_name (lspci)");
                mismatches.Equal(lspci.Device, Str(device, "device_name"), $"{address} device_name (lspci)");
            }
            else
            {
                mismatches.Check(false, $"{address}: lspci does not list it");
            }
        }

        // The topology the other cases rely on, as the kernel built it.
        var solo = kernel.GroupOf(Topology.Solo);
        mismatches.Equal(Topology.Solo, string.Join(" ", kernel.GroupMembers(solo)), $"group {solo} of {Topology.Solo}");
        var shared = kernel.GroupOf(Topology.LegacyNic);
        mismatches.Equal($"{Topology.DmiBridge} {Topology.LegacyNic} {Topology.Display}", string.Join(" ", kernel.GroupMembers(shared)),
            $"group {shared} of {Topology.LegacyNic}");
        var pair = kernel.GroupOf(Topology.MultiFunction0);
        mismatches.Equal($"{Topology.MultiFunction0} {Topology.MultiFunction1}", string.Join(" ", kernel.GroupMembers(pair)),
            $"group {pair} of {Topology.MultiFunction0}");
        foreach (var (address, driver) in Topology.BootDrivers)
        {
            mismatches.Equal(driver, kernel.DriverOf(address), $"{address} boot driver");
        }

        var gpus = (await context.Api.GetAsync("/devices/available?type=gpu")).Expect(200);
        mismatches.Equal(Topology.Display, string.Join(" ", gpus.Json.AsArray().OfType<JsonObject>().Select(d => Str(d, "pci_address"))),
            "GET /devices/available?type=gpu");

        context.Detail("functions", expected.Count);
        context.Detail("groups", new JsonObject { ["solo"] = solo, ["shared_with_display"] = shared, ["multifunction"] = pair });
        context.Detail("latency_ms", response.ElapsedMs);
        mismatches.ThrowIfAny("GET /devices/available disagrees with the kernel");
    }

    [KernelCase("host_report_matches_kernel", Order = 20,
        Description = "GET /host: IOMMU on with the kernel's group count, interrupt remapping on, vfio-pci and /dev/vfio/vfio present, the kernel command line, ready")]
    public async Task HostReportMatchesKernel()
    {
        var host = (await context.Api.GetAsync("/host")).Expect(200);
        var json = host.Json;
        var mismatches = new Mismatches();
        var groups = Directory.EnumerateDirectories("/sys/kernel/iommu_groups").Count();
        mismatches.Equal("true", json["ready"]?.ToJsonString(), "ready");
        mismatches.Equal("true", json["iommu"]?["enabled"]?.ToJsonString(), "iommu.enabled");
        mismatches.Equal(groups.ToString(CultureInfo.InvariantCulture), json["iommu"]?["groups"]?.ToJsonString(), "iommu.groups");
        // QEMU's intel-iommu runs with intremap=on and the kernel says so (DMAR-IR: Enabled IRQ remapping).
        mismatches.Equal("true", json["iommu"]?["interrupt_remapping"]?.ToJsonString(), "iommu.interrupt_remapping");
        mismatches.Equal("true", json["vfio"]?["vfio_pci_available"]?.ToJsonString(), "vfio.vfio_pci_available");
        mismatches.Equal("true", json["vfio"]?["dev_vfio"]?.ToJsonString(), "vfio.dev_vfio");
        mismatches.Equal(File.ReadAllText("/proc/cmdline").Trim(), Str(json, "kernel_cmdline"), "kernel_cmdline");
        var errors = json["findings"]?.AsArray().OfType<JsonObject>().Where(f => Str(f, "severity") == "error").Select(f => Str(f, "code")).ToList() ?? [];
        mismatches.Check(errors.Count == 0, $"error findings on a ready host: {string.Join(", ", errors)}");
        context.Detail("host", json.DeepClone());
        mismatches.ThrowIfAny("GET /host disagrees with the kernel");
    }

    /// <summary>
    /// Every non-bridge function as the contract shapes it, read straight from /sys: field name to
    /// its JSON text (so a null, a number and a string compare exactly).
    /// </summary>
    private static SortedDictionary<string, Dictionary<string, string>> ReadFunctionsFromSysfs(GuestKernel kernel)
    {
        var functions = new SortedDictionary<string, Dictionary<string, string>>(StringComparer.Ordinal);
        foreach (var dir in Directory.EnumerateFileSystemEntries("/sys/bus/pci/devices"))
        {
            var address = Path.GetFileName(dir);
            string Attr(string name) => File.ReadAllText(Path.Combine(dir, name)).Trim();
            string Hex4(string name) => JsonValue.Create(Attr(name)[2..].ToLowerInvariant()).ToJsonString();
            var classCode = Attr("class")[2..].ToLowerInvariant();
            if (classCode.StartsWith("06", StringComparison.Ordinal))
            {
                continue; // bridges are never listed
            }

            var group = kernel.GroupOf(address);
            var numa = int.Parse(Attr("numa_node"), CultureInfo.InvariantCulture);
            functions[address] = new Dictionary<string, string>
            {
                ["vendor_id"] = Hex4("vendor"),
                ["device_id"] = Hex4("device"),
                ["subsystem_vendor_id"] = Hex4("subsystem_vendor"),
                ["subsystem_device_id"] = Hex4("subsystem_device"),
                ["class_code"] = JsonValue.Create(classCode).ToJsonString(),
                ["type"] = JsonValue.Create(classCode.StartsWith("03", StringComparison.Ordinal) ? "gpu" : "pci").ToJsonString(),
                ["iommu_group"] = group.ToString(CultureInfo.InvariantCulture),
                ["iommu_group_members"] = new JsonArray([.. kernel.GroupMembers(group).Select(m => (JsonNode?)m)]).ToJsonString(),
                ["current_driver"] = kernel.DriverOf(address) is { } driver ? JsonValue.Create(driver).ToJsonString() : "null",
                ["numa_node"] = numa >= 0 ? numa.ToString(CultureInfo.InvariantCulture) : "null",
            };
        }

        return functions;
    }

    /// <summary>Vendor and device names by address from <c>lspci -vmm -D</c> (null where lspci shows only a number).</summary>
    private static Dictionary<string, (string? Vendor, string? Device)> LspciNames()
    {
        var start = new ProcessStartInfo("lspci") { RedirectStandardOutput = true, UseShellExecute = false };
        start.ArgumentList.Add("-vmm");
        start.ArgumentList.Add("-D");
        using var process = Process.Start(start) ?? throw new CaseFailedException("lspci did not start");
        var output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        var names = new Dictionary<string, (string?, string?)>(StringComparer.Ordinal);
        foreach (var block in output.Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            var fields = block.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => l.Split(':', 2))
                .Where(p => p.Length == 2)
                .GroupBy(p => p[0].Trim(), StringComparer.Ordinal)
                .ToDictionary(g => g.Key, g => g.First()[1].Trim(), StringComparer.Ordinal);
            if (fields.TryGetValue("Slot", out var slot))
            {
                names[slot] = (Name(fields.GetValueOrDefault("Vendor"), "Vendor"), Name(fields.GetValueOrDefault("Device"), "Device"));
            }
        }

        return names;
    }

    // lspci prints "Device 1111" (or "Vendor 1234") when pci.ids has no name; the contract says null.
    private static string? Name(string? text, string placeholder) =>
        text is null || (text.StartsWith(placeholder + " ", StringComparison.Ordinal) && text.Length == placeholder.Length + 5) ? null : text;

    private static string JsonText(JsonObject node, string property) =>
        node.TryGetPropertyValue(property, out var value) ? value?.ToJsonString() ?? "null" : "(missing)";

    private static string? Str(JsonNode? node, string property) =>
        node?[property] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
}
