using System.Buffers.Binary;
using System.Globalization;
using PciPassthrough.Devices;

namespace PciPassthrough.Simulation;

/// <summary>
/// Writes a directory tree shaped like Linux sysfs (and the bits of /dev and /proc the daemon
/// reads): real directories under <c>sys/devices/pciDDDD:BB/...</c>, <c>bus/pci/devices/&lt;address&gt;</c>
/// links into them, <c>driver</c> and <c>iommu_group</c> links, <c>kernel/iommu_groups/N/devices</c>,
/// and a 256-byte <c>config</c> space consistent with the id files, so <c>lspci</c> reads the tree too.
/// </summary>
public sealed class SysfsTreeBuilder
{
    public SysfsTreeBuilder(string root)
    {
        Root = Path.GetFullPath(root);
        Directory.CreateDirectory(Sys("bus/pci/devices"));
        Directory.CreateDirectory(Sys("bus/pci/drivers"));
        Directory.CreateDirectory(Path.Combine(Root, "dev"));
        Directory.CreateDirectory(Path.Combine(Root, "proc"));
        WriteIfMissing(Sys("bus/pci/drivers_probe"), "");
        WriteIfMissing(Sys("bus/pci/rescan"), "");
        WriteIfMissing(Path.Combine(Root, "proc", "cmdline"), "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n");
    }

    public string Root { get; }

    private readonly Dictionary<PciAddress, SimulatedDeviceSpec> _devices = [];

    /// <summary>
    /// Turns the IOMMU on: an IOMMU unit under class/iommu, <c>kernel/iommu_groups</c>, the VFIO
    /// container node, and a kernel command line that asks for it.
    /// </summary>
    public SysfsTreeBuilder WithIommu(string unit = "dmar0", string cmdline = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet intel_iommu=on iommu=pt")
    {
        Directory.CreateDirectory(Sys("kernel/iommu_groups"));
        Directory.CreateDirectory(Sys($"class/iommu/{unit}/intel-iommu"));
        // Extended capabilities of a unit with interrupt remapping (bit 3), as VT-d reports them.
        WriteIfMissing(Sys($"class/iommu/{unit}/intel-iommu/ecap"), "f050da\n");
        Directory.CreateDirectory(Path.Combine(Root, "dev", "vfio"));
        WriteIfMissing(Path.Combine(Root, "dev", "vfio", "vfio"), "");
        File.WriteAllText(Path.Combine(Root, "proc", "cmdline"), cmdline + "\n");
        return this;
    }

    /// <summary>Adds a driver directory with its <c>bind</c>, <c>unbind</c>, <c>new_id</c>, <c>remove_id</c> files.</summary>
    public SysfsTreeBuilder WithDriver(string name)
    {
        var dir = Sys($"bus/pci/drivers/{name}");
        Directory.CreateDirectory(dir);
        foreach (var file in new[] { "bind", "unbind", "new_id", "remove_id", "uevent" })
        {
            WriteIfMissing(Path.Combine(dir, file), "");
        }

        return this;
    }

    public SysfsTreeBuilder AddDevices(IEnumerable<SimulatedDeviceSpec> devices)
    {
        foreach (var device in devices)
        {
            AddDevice(device);
        }

        return this;
    }

    public SysfsTreeBuilder AddDevice(SimulatedDeviceSpec spec)
    {
        _devices[spec.Address] = spec;
        var dir = DevicePath(spec);
        Directory.CreateDirectory(dir);
        WriteAttribute(dir, "vendor", Hex(spec.VendorId, 4));
        WriteAttribute(dir, "device", Hex(spec.DeviceId, 4));
        WriteAttribute(dir, "subsystem_vendor", Hex(spec.SubsystemVendorId, 4));
        WriteAttribute(dir, "subsystem_device", Hex(spec.SubsystemDeviceId, 4));
        WriteAttribute(dir, "class", Hex(spec.ClassCode, 6));
        WriteAttribute(dir, "revision", Hex(spec.Revision, 2));
        WriteAttribute(dir, "numa_node", spec.NumaNode.ToString(CultureInfo.InvariantCulture));
        WriteAttribute(dir, "driver_override", "(null)");
        WriteAttribute(dir, "enable", spec.Driver is null ? "0" : "1");
        WriteAttribute(dir, "irq", "0");
        WriteAttribute(dir, "local_cpulist", spec.NumaNode == 1 ? "8-15" : "0-7");
        WriteAttribute(dir, "modalias", Modalias(spec));
        if ((spec.ClassCode >> 8) == 0x0300)
        {
            // Linux shows boot_vga on VGA-class functions only.
            WriteAttribute(dir, "boot_vga", spec.BootVga ? "1" : "0");
        }
        if (spec.ResetMethods.Count > 0)
        {
            WriteAttribute(dir, "reset_method", string.Join(' ', spec.ResetMethods));
            File.WriteAllText(Path.Combine(dir, "reset"), "");
        }

        File.WriteAllBytes(Path.Combine(dir, "config"), ConfigSpace(spec));
        WriteDeviceNodes(spec, dir);
        Link(Path.Combine(dir, "subsystem"), Sys("bus/pci"));
        Link(Sys($"bus/pci/devices/{spec.Address}"), dir);

        if (spec.Driver is { } driver)
        {
            WithDriver(driver);
            Link(Path.Combine(dir, "driver"), Sys($"bus/pci/drivers/{driver}"));
            Link(Sys($"bus/pci/drivers/{driver}/{spec.Address}"), dir);
        }

        if (spec.IommuGroup is { } group)
        {
            var groupDir = Sys($"kernel/iommu_groups/{group}");
            Directory.CreateDirectory(Path.Combine(groupDir, "devices"));
            WriteIfMissing(Path.Combine(groupDir, "type"), "identity\n");
            Link(Path.Combine(dir, "iommu_group"), groupDir);
            Link(Path.Combine(groupDir, "devices", spec.Address.ToString()), dir);
        }

        return this;
    }

    /// <summary>The real directory of a function: <c>sys/devices/pciDDDD:BB/&lt;bridges&gt;/&lt;address&gt;</c>.</summary>
    public string DevicePath(SimulatedDeviceSpec spec)
    {
        var chain = new Stack<PciAddress>();
        chain.Push(spec.Address);
        var parent = spec.Parent;
        while (parent is { } p)
        {
            chain.Push(p);
            parent = _devices.TryGetValue(p, out var parentSpec) ? parentSpec.Parent : null;
        }

        var top = chain.Peek();
        var path = Sys(string.Create(CultureInfo.InvariantCulture, $"devices/pci{top.Domain:x4}:{top.Bus:x2}"));
        foreach (var hop in chain)
        {
            path = Path.Combine(path, hop.ToString());
        }

        return path;
    }

    private string Sys(string relative) => Path.Combine(Root, "sys", relative);

    /// <summary>
    /// The traces a driver's device nodes leave: <c>drm/cardN</c> and <c>nvme/nvmeN</c> class
    /// directories under the function, NVIDIA's <c>/proc/driver/nvidia/gpus/X/information</c>,
    /// and the node itself under dev/.
    /// </summary>
    private void WriteDeviceNodes(SimulatedDeviceSpec spec, string dir)
    {
        foreach (var node in spec.DriverDeviceNodes)
        {
            var name = Path.GetFileName(node);
            var devFile = Path.Combine(Root, node.TrimStart('/'));
            Directory.CreateDirectory(Path.GetDirectoryName(devFile)!);
            WriteIfMissing(devFile, "");
            if (node.StartsWith("/dev/dri/", StringComparison.Ordinal))
            {
                Directory.CreateDirectory(Path.Combine(dir, "drm", name));
                File.WriteAllText(Path.Combine(dir, "drm", name, "dev"), "226:0\n");
            }
            else if (node.StartsWith("/dev/nvme", StringComparison.Ordinal))
            {
                Directory.CreateDirectory(Path.Combine(dir, "nvme", name));
                File.WriteAllText(Path.Combine(dir, "nvme", name, "dev"), "240:0\n");
            }
            else if (name.StartsWith("nvidia", StringComparison.Ordinal) && int.TryParse(name["nvidia".Length..],
                         NumberStyles.None, CultureInfo.InvariantCulture, out var minor))
            {
                var info = Path.Combine(Root, "proc", "driver", "nvidia", "gpus", spec.Address.ToString());
                Directory.CreateDirectory(info);
                File.WriteAllText(Path.Combine(info, "information"), string.Create(CultureInfo.InvariantCulture,
                    $"Model: \t\t NVIDIA GPU\nBus Location: \t {spec.Address}\nDevice Minor: \t {minor}\n"));
            }
        }
    }

    private static void WriteAttribute(string dir, string name, string value) =>
        File.WriteAllText(Path.Combine(dir, name), value + "\n");

    private static void WriteIfMissing(string path, string content)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        if (!File.Exists(path))
        {
            File.WriteAllText(path, content);
        }
    }

    /// <summary>A relative symlink, as sysfs makes them; replaces an existing link.</summary>
    private static void Link(string linkPath, string target)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(linkPath)!);
        if (new FileInfo(linkPath).LinkTarget is not null || File.Exists(linkPath))
        {
            File.Delete(linkPath);
        }

        File.CreateSymbolicLink(linkPath, Path.GetRelativePath(Path.GetDirectoryName(linkPath)!, target));
    }

    private static string Hex(int value, int digits) =>
        "0x" + value.ToString("x" + digits.ToString(CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);

    private static string Modalias(SimulatedDeviceSpec s) => string.Create(CultureInfo.InvariantCulture,
        $"pci:v{s.VendorId:X8}d{s.DeviceId:X8}sv{s.SubsystemVendorId:X8}sd{s.SubsystemDeviceId:X8}bc{(s.ClassCode >> 16) & 0xff:X2}sc{(s.ClassCode >> 8) & 0xff:X2}i{s.ClassCode & 0xff:X2}");

    /// <summary>The standard configuration header (type 0 for functions, type 1 for PCI-to-PCI bridges).</summary>
    private static byte[] ConfigSpace(SimulatedDeviceSpec s)
    {
        var config = new byte[256];
        BinaryPrimitives.WriteUInt16LittleEndian(config.AsSpan(0x00), (ushort)s.VendorId);
        BinaryPrimitives.WriteUInt16LittleEndian(config.AsSpan(0x02), (ushort)s.DeviceId);
        BinaryPrimitives.WriteUInt16LittleEndian(config.AsSpan(0x04), 0x0006); // memory + bus master
        config[0x08] = (byte)s.Revision;
        config[0x09] = (byte)(s.ClassCode & 0xff);
        config[0x0a] = (byte)((s.ClassCode >> 8) & 0xff);
        config[0x0b] = (byte)((s.ClassCode >> 16) & 0xff);
        var multiFunction = s.Address.Function != 0 ? 0x80 : 0;
        if (s.IsPciToPciBridge)
        {
            config[0x0e] = (byte)(0x01 | multiFunction);
            config[0x18] = s.Address.Bus;
        }
        else
        {
            config[0x0e] = (byte)multiFunction;
            BinaryPrimitives.WriteUInt16LittleEndian(config.AsSpan(0x2c), (ushort)s.SubsystemVendorId);
            BinaryPrimitives.WriteUInt16LittleEndian(config.AsSpan(0x2e), (ushort)s.SubsystemDeviceId);
        }

        return config;
    }
}
