namespace PciPassthrough.KernelTests.Guest.Kernel;

/// <summary>
/// The guest's test devices, fixed by run-guest.sh's QEMU command line (the table in
/// guest/README.md). Group numbers are never assumed: cases read them from sysfs.
/// </summary>
public static class Topology
{
    /// <summary>e1000e alone in its IOMMU group on the root bus (eth0).</summary>
    public const string Solo = "0000:00:02.0";

    /// <summary>e1000e behind its own PCIe root port, alone in its group.</summary>
    public const string RootPortNic = "0000:01:00.0";

    /// <summary>Function 0 of the multifunction e1000e pair behind a root port (one group for both).</summary>
    public const string MultiFunction0 = "0000:02:00.0";

    /// <summary>Function 1 of the multifunction pair.</summary>
    public const string MultiFunction1 = "0000:02:00.1";

    /// <summary>e1000 behind the DMI-to-PCI bridge, sharing its group with the display.</summary>
    public const string LegacyNic = "0000:03:01.0";

    /// <summary>bochs-display held by bochs-drm, in the same group as <see cref="LegacyNic"/>.</summary>
    public const string Display = "0000:03:02.0";

    /// <summary>The DMI-to-PCI bridge (no driver; a member of the display's group).</summary>
    public const string DmiBridge = "0000:00:05.0";

    /// <summary>The functions cases bind and unbind, and the drivers they boot on.</summary>
    public static readonly IReadOnlyDictionary<string, string> BootDrivers = new Dictionary<string, string>
    {
        [Solo] = "e1000e",
        [RootPortNic] = "e1000e",
        [MultiFunction0] = "e1000e",
        [MultiFunction1] = "e1000e",
        [LegacyNic] = "e1000",
        [Display] = "bochs-drm",
    };

    /// <summary>The harness's own 9p transports (host root, results): never written to.</summary>
    public static readonly IReadOnlyList<string> HarnessDevices = ["0000:00:06.0", "0000:00:07.0"];
}
