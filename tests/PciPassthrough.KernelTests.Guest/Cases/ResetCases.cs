using PciPassthrough.KernelTests.Guest.Daemon;
using PciPassthrough.KernelTests.Guest.Kernel;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests.Guest.Cases;

/// <summary>POST /devices/{id}/reset through the kernel's reset and reset_method attributes.</summary>
public sealed class ResetCases(CaseContext context)
{
    private readonly Mismatches _problems = new();

    [KernelCase("reset_through_kernel", Order = 65,
        Description = "reset of 0000:00:02.0, with ?method=pm and a refused ?method=flr; ?method=bus on 0000:01:00.0; reset_method put back and nothing left in flight each time; the display (no reset) refused")]
    public async Task ResetThroughKernel()
    {
        var kernel = context.Kernel;
        var solo = await context.Api.RegisterAsync(Topology.Solo);
        var methods = kernel.Boot.Devices[Topology.Solo].ResetMethod;
        await ResetAsync($"/devices/{solo}/reset", "a reset", r => r.Status == 200);
        _problems.Equal("e1000e", kernel.DriverOf(Topology.Solo), "driver after reset");
        await ResetAsync($"/devices/{solo}/reset?method=pm", "a reset with ?method=pm", r => r.Status == 200);
        _problems.Equal(methods, Methods(kernel, Topology.Solo), "reset_method after a reset with ?method=pm");
        await ResetAsync($"/devices/{solo}/reset?method=flr", "a reset with ?method=flr (not available: 400)",
            r => r.Status == 400 && r.Code == "validation_failed");
        _problems.Equal(methods, Methods(kernel, Topology.Solo), "reset_method after the refused ?method=flr");

        // QEMU's root port does not bring the link back within the kernel's 1 s after a secondary
        // bus reset ("Data Link Layer Link Active not set in 1000 msec"), so Linux answers ENOTTY
        // here; either way the daemon must report the kernel's answer and put reset_method back.
        var port = await context.Api.RegisterAsync(Topology.RootPortNic);
        var portMethods = kernel.Boot.Devices[Topology.RootPortNic].ResetMethod;
        var bus = await ResetAsync($"/devices/{port}/reset?method=bus", "a reset with ?method=bus (200, or 502 naming the kernel's ENOTTY)",
            r => r.Status == 200 || (r.Status == 502 && r.Code == "operation_failed" && r.Raw.Contains("ENOTTY", StringComparison.Ordinal)));
        context.Detail("bus_reset", $"{bus.Status} {bus.Code}: {bus.TextOrNull("detail") ?? "reset"}");
        _problems.Equal(portMethods, Methods(kernel, Topology.RootPortNic), "reset_method after a reset with ?method=bus");
        _problems.Equal("e1000e", kernel.DriverOf(Topology.RootPortNic), "driver after the bus reset");
        _problems.Equal(1, GuestKernel.NetInterfacesOf(Topology.RootPortNic).Count, "net interfaces of 0000:01:00.0 after the bus reset");
        _problems.Equal("ready", (await context.Api.GetAsync($"/devices/{port}")).Expect(200).Text("state"), "state after the bus reset");

        var display = await context.Api.RegisterAsync(Topology.Display);
        var refused = await ResetAsync($"/devices/{display}/reset", "a reset of the display, which has no reset method (a problem)",
            r => r.Status == 409 && r.Code == "reset_unsupported");
        context.Detail("display_reset", $"{refused.Status} {refused.Code}: {refused.TextOrNull("detail")}");
        _problems.Equal("bochs-drm", kernel.DriverOf(Topology.Display), "driver of the display after the refused reset");
        _problems.Equal("ready", (await context.Api.GetAsync($"/devices/{display}")).Expect(200).Text("state"), "state of the display after the refused reset");
        _problems.ThrowIfAny("POST /devices/{id}/reset");
    }

    /// <summary>One reset request: its answer must satisfy <paramref name="expected"/> and it must leave nothing in the journal.</summary>
    private async Task<ApiResponse> ResetAsync(string path, string what, Func<ApiResponse, bool> expected)
    {
        var before = KernelChecks.JournalEntries(context.Daemon);
        var response = await context.Api.PostAsync(path);
        _problems.Check(expected(response), $"{what}: got {response.Status} {ApiResponse.Truncate(response.Raw)}");
        var left = KernelChecks.NewJournalEntries(context.Daemon, before);
        _problems.Check(left is null, $"{what} ({response.Status}) left an operation in the journal: {left}");
        return response;
    }

    private static string? Methods(GuestKernel kernel, string address) => kernel.Capture().Devices[address].ResetMethod;
}
