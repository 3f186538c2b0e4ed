using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Daemon;
using PciPassthrough.KernelTests.Guest.Kernel;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests.Guest.Cases;

/// <summary>Checks of the real kernel's state shared by several cases.</summary>
public static class KernelChecks
{
    /// <summary>The function is on vfio-pci, its override says vfio-pci, and /dev/vfio/N exists.</summary>
    public static void OnVfio(GuestKernel kernel, string address, string when)
    {
        Expect.Equal("vfio-pci", kernel.DriverOf(address), $"{when}: the kernel's driver of {address}");
        var group = kernel.GroupOf(address);
        Expect.True(GuestKernel.VfioGroupNodeExists(group), $"{when}: /dev/vfio/{group} does not exist (it holds: {string.Join(" ", kernel.DevVfio())})");
    }

    /// <summary>The function is back on its host driver with no override.</summary>
    public static void OnHostDriver(GuestKernel kernel, string address, string when)
    {
        var boot = Topology.BootDrivers[address];
        Expect.Equal(boot, kernel.DriverOf(address), $"{when}: the kernel's driver of {address}");
        Expect.Equal("(null)", kernel.OverrideOf(address), $"{when}: driver_override of {address}");
    }

    /// <summary>A device response says what the kernel says: bound or not, its driver, its /dev/vfio path.</summary>
    public static void ResponseAgrees(GuestKernel kernel, ApiResponse response, string address, string when)
    {
        var driver = kernel.DriverOf(address);
        Expect.Equal(driver, response.TextOrNull("current_driver"), $"{when}: current_driver in the response");
        Expect.Equal(driver == "vfio-pci", response.Bool("bound_to_vfio"), $"{when}: bound_to_vfio in the response");
        var group = kernel.GroupOf(address);
        var node = driver == "vfio-pci" && GuestKernel.VfioGroupNodeExists(group) ? $"/dev/vfio/{group}" : null;
        Expect.Equal(node, response.TextOrNull("vfio_group_path"), $"{when}: vfio_group_path in the response");
    }

    /// <summary>No operation is left in flight: the daemon's journal folder is empty.</summary>
    public static void JournalEmpty(DaemonHost daemon, string when)
    {
        var entries = Directory.Exists(daemon.JournalDirectory) ? Directory.GetFiles(daemon.JournalDirectory) : [];
        if (entries.Length > 0)
        {
            throw new CaseFailedException($"{when}: the journal still holds " + string.Join("; ", entries.Select(Describe)));
        }
    }

    /// <summary>The journal's entries now (file names).</summary>
    public static IReadOnlySet<string> JournalEntries(DaemonHost daemon) =>
        Directory.Exists(daemon.JournalDirectory)
            ? Directory.GetFiles(daemon.JournalDirectory).ToHashSet(StringComparer.Ordinal)
            : new HashSet<string>(StringComparer.Ordinal);

    /// <summary>Entries that appeared since <paramref name="before"/> and are still there: operations left in flight.</summary>
    public static string? NewJournalEntries(DaemonHost daemon, IReadOnlySet<string> before)
    {
        var added = JournalEntries(daemon).Where(e => !before.Contains(e)).ToList();
        return added.Count == 0 ? null : string.Join("; ", added.Select(Describe));
    }

    /// <summary>A journal entry in one line: file, operation, step.</summary>
    public static string Describe(string entry)
    {
        try
        {
            var json = JsonNode.Parse(File.ReadAllText(entry));
            return $"{Path.GetFileName(entry)} ({json?["operation"]} of {json?["pci_address"]}, step {json?["step"]}: {json?["step_description"] ?? "before the first step"})";
        }
        catch (Exception e) when (e is IOException or System.Text.Json.JsonException)
        {
            return $"{Path.GetFileName(entry)} (unreadable: {e.Message})";
        }
    }
}
