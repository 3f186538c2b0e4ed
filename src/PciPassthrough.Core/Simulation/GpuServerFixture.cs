using PciPassthrough.Devices;

namespace PciPassthrough.Simulation;

/// <summary>
/// The built-in simulated host (<c>--simulate</c>): a two-socket GPU server. See docs/simulate.md.
/// </summary>
/// <remarks>
/// Socket 0 (NUMA node 0): a GPU with its audio function in one IOMMU group, an NVMe drive, a
/// dual-port NIC (each port its own group). Socket 1 (node 1): a second GPU with audio, a second
/// NVMe drive. Chipset: the BMC's VGA (held by the host console driver) shares a group with an
/// onboard NIC behind the BMC's PCI bridge, so binding that NIC must be refused; a USB controller
/// and SMBus on the root bus. Root ports, host bridges and the PCI-to-PCI bridge complete it.
/// </remarks>
public static class GpuServerFixture
{
    public const int Intel = 0x8086;
    public const int Nvidia = 0x10de;
    public const int Samsung = 0x144d;
    public const int Aspeed = 0x1a03;

    /// <summary>Drivers that exist on the simulated host besides the ones devices are bound to.</summary>
    public static IReadOnlyList<string> ExtraDrivers { get; } = ["vfio-pci", "pcieport"];

    public static IReadOnlyList<SimulatedDeviceSpec> Devices { get; } = Build();

    /// <summary>Writes the fixture's tree under <paramref name="root"/>.</summary>
    public static SysfsTreeBuilder WriteTo(string root)
    {
        var builder = new SysfsTreeBuilder(root).WithIommu();
        foreach (var driver in ExtraDrivers)
        {
            builder.WithDriver(driver);
        }

        return builder.AddDevices(Devices);
    }

    private static PciAddress A(string text) => PciAddress.Parse(text);

    private static List<SimulatedDeviceSpec> Build()
    {
        var list = new List<SimulatedDeviceSpec>
        {
            // Root complex of socket 0.
            Bridge("0000:00:00.0", Intel, 0x2020, 0x060000, group: 0, numa: 0, driver: null),
            new() { Address = A("0000:00:14.0"), VendorId = Intel, DeviceId = 0xa1af, ClassCode = 0x0c0330, SubsystemVendorId = 0x15d9, SubsystemDeviceId = 0x095d, Driver = "xhci_hcd", IommuGroup = 1, NumaNode = 0, ResetMethods = ["flr"] },
            new() { Address = A("0000:00:1f.4"), VendorId = Intel, DeviceId = 0xa1a3, ClassCode = 0x0c0500, SubsystemVendorId = 0x15d9, SubsystemDeviceId = 0x095d, Driver = "i801_smbus", IommuGroup = 2, NumaNode = 0, ResetMethods = [] },
            Bridge("0000:00:1c.0", Intel, 0xa190, 0x060400, group: 3, numa: 0, driver: "pcieport"),
            // BMC: the VGA behind the ASPEED PCI-to-PCI bridge shares a group with the onboard NIC.
            Bridge("0000:02:00.0", Aspeed, 0x1150, 0x060400, group: 3, numa: 0, driver: null, parent: "0000:00:1c.0"),
            new() { Address = A("0000:03:00.0"), VendorId = Aspeed, DeviceId = 0x2000, ClassCode = 0x030000, SubsystemVendorId = 0x15d9, SubsystemDeviceId = 0x095d, Driver = "ast", IommuGroup = 3, NumaNode = 0, Parent = A("0000:02:00.0"), ResetMethods = ["pm", "bus"], DriverDeviceNodes = ["/dev/dri/card0"], BootVga = true },
            new() { Address = A("0000:04:00.0"), VendorId = Intel, DeviceId = 0x1533, ClassCode = 0x020000, SubsystemVendorId = 0x15d9, SubsystemDeviceId = 0x1533, Driver = "igb", IommuGroup = 3, NumaNode = 0, Parent = A("0000:02:00.0") },

            // Socket 0 PCIe: GPU + audio, NVMe, dual-port NIC.
            Bridge("0000:16:00.0", Intel, 0x2030, 0x060400, group: 10, numa: 0, driver: "pcieport"),
            new() { Address = A("0000:17:00.0"), VendorId = Nvidia, DeviceId = 0x2230, ClassCode = 0x030000, SubsystemVendorId = Nvidia, SubsystemDeviceId = 0x1459, Driver = "nvidia", IommuGroup = 11, NumaNode = 0, Parent = A("0000:16:00.0"), ResetMethods = ["flr", "bus"], DriverDeviceNodes = ["/dev/nvidia0", "/dev/nvidiactl"] },
            new() { Address = A("0000:17:00.1"), VendorId = Nvidia, DeviceId = 0x1aef, ClassCode = 0x040300, SubsystemVendorId = Nvidia, SubsystemDeviceId = 0x1459, Driver = "snd_hda_intel", IommuGroup = 11, NumaNode = 0, Parent = A("0000:16:00.0"), ResetMethods = ["flr", "bus"] },
            Bridge("0000:3a:00.0", Intel, 0x2031, 0x060400, group: 20, numa: 0, driver: "pcieport"),
            new() { Address = A("0000:3b:00.0"), VendorId = Samsung, DeviceId = 0xa80a, ClassCode = 0x010802, SubsystemVendorId = Samsung, SubsystemDeviceId = 0xa801, Driver = "nvme", IommuGroup = 21, NumaNode = 0, Parent = A("0000:3a:00.0"), ResetMethods = ["flr", "bus"], DriverDeviceNodes = ["/dev/nvme0"] },
            Bridge("0000:5d:00.0", Intel, 0x2032, 0x060400, group: 30, numa: 0, driver: "pcieport"),
            new() { Address = A("0000:5e:00.0"), VendorId = Intel, DeviceId = 0x1572, ClassCode = 0x020000, SubsystemVendorId = Intel, SubsystemDeviceId = 0x0006, Driver = "i40e", IommuGroup = 31, NumaNode = 0, Parent = A("0000:5d:00.0"), ResetMethods = ["flr"] },
            new() { Address = A("0000:5e:00.1"), VendorId = Intel, DeviceId = 0x1572, ClassCode = 0x020000, SubsystemVendorId = Intel, SubsystemDeviceId = 0x0006, Driver = "i40e", IommuGroup = 32, NumaNode = 0, Parent = A("0000:5d:00.0"), ResetMethods = ["flr"] },

            // Socket 1 PCIe: second GPU + audio, second NVMe.
            Bridge("0000:ae:00.0", Intel, 0x2030, 0x060400, group: 40, numa: 1, driver: "pcieport"),
            new() { Address = A("0000:af:00.0"), VendorId = Nvidia, DeviceId = 0x2230, ClassCode = 0x030000, SubsystemVendorId = Nvidia, SubsystemDeviceId = 0x1459, Driver = "nvidia", IommuGroup = 41, NumaNode = 1, Parent = A("0000:ae:00.0"), ResetMethods = ["flr", "bus"], DriverDeviceNodes = ["/dev/nvidia1", "/dev/nvidiactl"] },
            new() { Address = A("0000:af:00.1"), VendorId = Nvidia, DeviceId = 0x1aef, ClassCode = 0x040300, SubsystemVendorId = Nvidia, SubsystemDeviceId = 0x1459, Driver = "snd_hda_intel", IommuGroup = 41, NumaNode = 1, Parent = A("0000:ae:00.0"), ResetMethods = ["flr", "bus"] },
            Bridge("0000:d7:00.0", Intel, 0x2031, 0x060400, group: 50, numa: 1, driver: "pcieport"),
            new() { Address = A("0000:d8:00.0"), VendorId = Samsung, DeviceId = 0xa80a, ClassCode = 0x010802, SubsystemVendorId = Samsung, SubsystemDeviceId = 0xa801, Driver = "nvme", IommuGroup = 51, NumaNode = 1, Parent = A("0000:d7:00.0"), ResetMethods = ["flr", "bus"], DriverDeviceNodes = ["/dev/nvme1"] },
        };
        return list;
    }

    private static SimulatedDeviceSpec Bridge(string address, int vendor, int device, int classCode, int group, int numa,
        string? driver, string? parent = null) => new()
        {
            Address = A(address),
            VendorId = vendor,
            DeviceId = device,
            ClassCode = classCode,
            SubsystemVendorId = 0,
            SubsystemDeviceId = 0,
            Driver = driver,
            IommuGroup = group,
            NumaNode = numa,
            Parent = parent is null ? null : A(parent),
            ResetMethods = [],
        };
}
