using PciPassthrough.Devices;
using PciPassthrough.PciIds;
using PciPassthrough.Simulation;
using PciPassthrough.Sysfs;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Discovery.Tests;

public sealed class PciDiscoveryTests : IDisposable
{
    private const string Ids =
        "10de  NVIDIA Corporation\n" +
        "\t2230  GA102GL [RTX A6000]\n" +
        "\t\t10de 1459  RTX A6000\n" +
        "8086  Intel Corporation\n" +
        "\t1533  I210 Gigabit Network Connection\n" +
        "\t\t15d9 1533  I210 [Supermicro]\n" +
        "C 02  Network controller\n" +
        "\t00  Ethernet controller\n" +
        "C 03  Display controller\n" +
        "\t00  VGA compatible controller\n";

    private readonly TempDirectory _root = new("pcipt-discovery");

    public void Dispose() => _root.Dispose();

    private static PciIdsProvider Names() => new(PciIdsDatabase.Parse(new StringReader(Ids)));

    private PciDiscovery Discovery() => new(new LinuxSysfs(_root.Path), Names());

    private SysfsTreeBuilder Tree(bool iommu = true)
    {
        var builder = new SysfsTreeBuilder(_root.Path);
        return iommu ? builder.WithIommu() : builder;
    }

    private static PciAddress A(string text) => PciAddress.Parse(text);

    [Fact]
    public void DiscoverAvailableDevices_FixtureGpu_ReportsEverythingSysfsShows()
    {
        GpuServerFixture.WriteTo(_root.Path);

        var gpu = Assert.Single(Discovery().DiscoverAvailableDevices(), d => d.PciAddress == A("0000:17:00.0"));

        Assert.Equal(0x10de, gpu.VendorId);
        Assert.Equal(0x2230, gpu.DeviceId);
        Assert.Equal(0x030000, gpu.ClassCode.Value);
        Assert.Equal("030000", gpu.ClassCode.ToString());
        Assert.Equal(DeviceType.Gpu, gpu.Type);
        Assert.False(gpu.IsBridge);
        Assert.Equal("nvidia", gpu.CurrentDriver);
        Assert.Equal(0, gpu.NumaNode);
        Assert.Equal(11, gpu.IommuGroup);
        Assert.Equal([A("0000:17:00.0"), A("0000:17:00.1")], gpu.IommuGroupMembers);
        Assert.Equal(0x10de, gpu.SubsystemVendorId);
        Assert.Equal(0x1459, gpu.SubsystemDeviceId);
        Assert.Equal("NVIDIA Corporation", gpu.VendorName);
        Assert.Equal("GA102GL [RTX A6000]", gpu.DeviceName);
        Assert.Equal("RTX A6000", gpu.SubsystemName);
        Assert.Equal("VGA compatible controller", gpu.ClassName);
    }

    [Fact]
    public void DiscoverAvailableDevices_FixtureTree_EveryNonBridgeFunctionInAddressOrder()
    {
        GpuServerFixture.WriteTo(_root.Path);

        var devices = Discovery().DiscoverAvailableDevices();

        var expected = GpuServerFixture.Devices.Where(d => !d.IsBridge).Select(d => d.Address).Order().ToList();
        Assert.Equal(expected, devices.Select(d => d.PciAddress));
        Assert.Equal(12, devices.Count);
        Assert.DoesNotContain(devices, d => d.IsBridge);
    }

    [Fact]
    public void DiscoverAvailableDevices_UnknownIds_NamesNull()
    {
        Tree().AddDevice(SysfsTrees.Function("0000:01:00.0", vendor: 0x1234, device: 0x5678));
        Tree().AddDevice(SysfsTrees.Function("0000:02:00.0", vendor: 0x8086, device: 0xfeed));

        var devices = Discovery().DiscoverAvailableDevices();

        Assert.Null(devices[0].VendorName);
        Assert.Null(devices[0].DeviceName);
        Assert.Null(devices[0].SubsystemName);
        Assert.Equal("Intel Corporation", devices[1].VendorName);
        Assert.Null(devices[1].DeviceName);
    }

    [Theory]
    [InlineData(0x030000, DeviceType.Gpu)]
    [InlineData(0x030001, DeviceType.Gpu)]
    [InlineData(0x030200, DeviceType.Gpu)]
    [InlineData(0x038000, DeviceType.Gpu)]
    [InlineData(0x03ff00, DeviceType.Gpu)]
    [InlineData(0x000300, DeviceType.Pci)]
    [InlineData(0x020000, DeviceType.Pci)]
    [InlineData(0x040300, DeviceType.Pci)]
    [InlineData(0x120000, DeviceType.Pci)]
    [InlineData(0x0c0330, DeviceType.Pci)]
    [InlineData(0x300000, DeviceType.Pci)]
    [InlineData(0xff0000, DeviceType.Pci)]
    public void DiscoverAvailableDevices_ClassCode_GpuOnlyForBaseClass03(int classCode, DeviceType expected)
    {
        Tree().AddDevice(SysfsTrees.Function("0000:01:00.0", classCode: classCode));

        var device = Assert.Single(Discovery().DiscoverAvailableDevices());

        Assert.Equal(expected, device.Type);
        Assert.Equal(classCode, device.ClassCode.Value);
    }

    [Theory]
    [InlineData(0x060000)]
    [InlineData(0x060100)]
    [InlineData(0x060400)]
    [InlineData(0x060401)]
    [InlineData(0x068000)]
    public void DiscoverAvailableDevices_Bridges_Excluded(int classCode)
    {
        Tree()
            .AddDevice(SysfsTrees.Function("0000:00:1c.0", classCode: classCode, group: 1))
            .AddDevice(SysfsTrees.Function("0000:01:00.0", group: 1, parent: "0000:00:1c.0"));

        var device = Assert.Single(Discovery().DiscoverAvailableDevices());

        Assert.Equal(A("0000:01:00.0"), device.PciAddress);
    }

    [Fact]
    public void GetDeviceInfo_Bridge_Returned()
    {
        GpuServerFixture.WriteTo(_root.Path);

        var bridge = Discovery().GetDeviceInfo(A("0000:02:00.0"));

        Assert.NotNull(bridge);
        Assert.True(bridge.IsBridge);
        Assert.Equal(0x060400, bridge.ClassCode.Value);
        Assert.Equal(DeviceType.Pci, bridge.Type);
        Assert.Null(bridge.CurrentDriver);
        Assert.Equal(3, bridge.IommuGroup);
    }

    [Fact]
    public void GetDeviceInfo_NoSuchDevice_Null()
    {
        GpuServerFixture.WriteTo(_root.Path);

        Assert.Null(Discovery().GetDeviceInfo(A("0000:99:00.0")));
        Assert.Null(Discovery().GetIommuGroup(A("0000:99:00.0")));
    }

    [Fact]
    public void DiscoverAvailableDevices_CreatedOutOfOrderAcrossDomains_SortedByAddress()
    {
        string[] created =
        [
            "0001:00:00.0", "0000:ff:1f.7", "0000:0a:00.1", "0000:0a:00.0", "ffff:00:00.0", "0000:00:02.0",
            "0000:09:00.0", "0000:10:00.0", "000a:00:00.0", "0001:00:00.3", "0000:00:1f.0", "0000:00:01.0",
        ];
        var tree = Tree();
        foreach (var address in created)
        {
            tree.AddDevice(SysfsTrees.Function(address));
        }

        var devices = Discovery().DiscoverAvailableDevices();

        Assert.Equal(created.Order(StringComparer.Ordinal), devices.Select(d => d.PciAddress.ToString()));
    }

    [Fact]
    public void DiscoverAvailableDevices_SharedGroup_MembersSortedIncludingBridgesAndSelf()
    {
        GpuServerFixture.WriteTo(_root.Path);

        var devices = Discovery().DiscoverAvailableDevices();

        string[] group3 = ["0000:00:1c.0", "0000:02:00.0", "0000:03:00.0", "0000:04:00.0"];
        foreach (var address in new[] { "0000:03:00.0", "0000:04:00.0" })
        {
            var device = devices.Single(d => d.PciAddress == A(address));
            Assert.Equal(3, device.IommuGroup);
            Assert.Equal(group3, device.IommuGroupMembers.Select(m => m.ToString()));
        }

        Assert.Equal(group3.Select(A), Discovery().GetIommuGroupDevices(3));
        Assert.Equal(group3.Select(A), Discovery().GetDeviceInfo(A("0000:02:00.0"))!.IommuGroupMembers);
    }

    [Fact]
    public void DiscoverAvailableDevices_GroupMembersCreatedOutOfOrder_Sorted()
    {
        var tree = Tree();
        foreach (var address in new[] { "0000:05:00.3", "0000:05:00.0", "0000:04:00.0", "0000:05:00.1" })
        {
            tree.AddDevice(SysfsTrees.Function(address, group: 7));
        }

        var device = Discovery().DiscoverAvailableDevices()[0];

        Assert.Equal(["0000:04:00.0", "0000:05:00.0", "0000:05:00.1", "0000:05:00.3"], device.IommuGroupMembers.Select(m => m.ToString()));
    }

    [Fact]
    public void DiscoverAvailableDevices_NoIommu_GroupMinusOneAndNoMembers()
    {
        var tree = Tree(iommu: false);
        tree.AddDevice(SysfsTrees.Function("0000:01:00.0", driver: "igb"));
        tree.AddDevice(SysfsTrees.Function("0000:02:00.0", classCode: 0x030000));

        var devices = Discovery().DiscoverAvailableDevices();

        Assert.Equal(2, devices.Count);
        Assert.All(devices, d =>
        {
            Assert.Equal(-1, d.IommuGroup);
            Assert.Empty(d.IommuGroupMembers);
        });
        Assert.Equal(-1, Discovery().GetIommuGroup(A("0000:01:00.0")));
    }

    [Fact]
    public void DiscoverAvailableDevices_DeviceWithoutGroupLinkOnIommuHost_MinusOne()
    {
        Tree()
            .AddDevice(SysfsTrees.Function("0000:01:00.0", group: 4))
            .AddDevice(SysfsTrees.Function("0000:02:00.0"));

        var devices = Discovery().DiscoverAvailableDevices();

        Assert.Equal(4, devices[0].IommuGroup);
        Assert.Equal([A("0000:01:00.0")], devices[0].IommuGroupMembers);
        Assert.Equal(-1, devices[1].IommuGroup);
        Assert.Empty(devices[1].IommuGroupMembers);
    }

    [Fact]
    public void DiscoverAvailableDevices_NoDriverLink_DriverNull()
    {
        Tree().AddDevice(SysfsTrees.Function("0000:01:00.0", driver: null));

        var device = Assert.Single(Discovery().DiscoverAvailableDevices());

        Assert.Null(device.CurrentDriver);
        Assert.Null(Discovery().GetCurrentDriver(A("0000:01:00.0")));
    }

    [Fact]
    public void DiscoverAvailableDevices_DanglingDriverLink_NameOfTheLinkLikeLspci()
    {
        Tree().AddDevice(SysfsTrees.Function("0000:01:00.0"));
        var link = SysfsTrees.Attribute(_root.Path, "0000:01:00.0", "driver");
        File.CreateSymbolicLink(link, "../../../bus/pci/drivers/gone-driver");

        var device = Assert.Single(Discovery().DiscoverAvailableDevices());

        Assert.Equal("gone-driver", device.CurrentDriver);
    }

    [Fact]
    public void GetCurrentDriver_DriverLinkChanged_SeenAtOnce()
    {
        var tree = Tree().WithDriver("vfio-pci");
        tree.AddDevice(SysfsTrees.Function("0000:01:00.0", driver: "igb"));
        var discovery = Discovery();
        Assert.Equal("igb", discovery.GetCurrentDriver(A("0000:01:00.0")));

        SysfsTrees.Link(SysfsTrees.Attribute(_root.Path, "0000:01:00.0", "driver"), Path.Combine(_root.Path, "sys/bus/pci/drivers/vfio-pci"));

        Assert.Equal("vfio-pci", discovery.GetCurrentDriver(A("0000:01:00.0")));
        Assert.Equal("vfio-pci", discovery.DiscoverAvailableDevices()[0].CurrentDriver);
    }

    [Theory]
    [InlineData(-1, null)]
    [InlineData(0, 0)]
    [InlineData(1, 1)]
    [InlineData(7, 7)]
    public void DiscoverAvailableDevices_NumaNode_MinusOneIsNull(int numa, int? expected)
    {
        Tree().AddDevice(SysfsTrees.Function("0000:01:00.0", numa: numa));

        Assert.Equal(expected, Assert.Single(Discovery().DiscoverAvailableDevices()).NumaNode);
    }

    [Theory]
    [InlineData("")]
    [InlineData("garbage\n")]
    public void DiscoverAvailableDevices_NumaNodeUnreadable_Null(string content)
    {
        Tree().AddDevice(SysfsTrees.Function("0000:01:00.0", numa: 0));
        SysfsTrees.WriteAttribute(_root.Path, "0000:01:00.0", "numa_node", content);

        Assert.Null(Assert.Single(Discovery().DiscoverAvailableDevices()).NumaNode);
    }

    [Fact]
    public void DiscoverAvailableDevices_SubsystemIds_ReadAndNamed()
    {
        Tree().AddDevice(SysfsTrees.Function("0000:01:00.0") with { SubsystemVendorId = 0x15d9, SubsystemDeviceId = 0x1533 });

        var device = Assert.Single(Discovery().DiscoverAvailableDevices());

        Assert.Equal(0x15d9, device.SubsystemVendorId);
        Assert.Equal(0x1533, device.SubsystemDeviceId);
        Assert.Equal("I210 [Supermicro]", device.SubsystemName);
    }

    [Fact]
    public void DiscoverAvailableDevices_SubsystemFilesMissing_IdsNull()
    {
        Tree().AddDevice(SysfsTrees.Function("0000:01:00.0"));
        File.Delete(SysfsTrees.Attribute(_root.Path, "0000:01:00.0", "subsystem_vendor"));
        File.Delete(SysfsTrees.Attribute(_root.Path, "0000:01:00.0", "subsystem_device"));

        var device = Assert.Single(Discovery().DiscoverAvailableDevices());

        Assert.Null(device.SubsystemVendorId);
        Assert.Null(device.SubsystemDeviceId);
        Assert.Null(device.SubsystemName);
    }

    [Fact]
    public void DiscoverAvailableDevices_JunkEntriesInBusDirectory_Ignored()
    {
        Tree()
            .AddDevice(SysfsTrees.Function("0000:01:00.0"))
            .AddDevice(SysfsTrees.Function("0000:02:00.0"));
        var bus = SysfsTrees.PciDevices(_root.Path);
        File.WriteAllText(Path.Combine(bus, "README"), "not a device\n");
        File.WriteAllText(Path.Combine(bus, "0000:03:00"), "");
        Directory.CreateDirectory(Path.Combine(bus, "not-an-address"));
        Directory.CreateDirectory(Path.Combine(bus, "0000:04:20.0"));
        File.CreateSymbolicLink(Path.Combine(bus, "0000:zz:00.0"), "../../../devices/pci0000:00/0000:01:00.0");
        File.CreateSymbolicLink(Path.Combine(bus, "dangling"), "../../../devices/nowhere");
        File.CreateSymbolicLink(Path.Combine(bus, "0000:05:00.0"), "../../../devices/nowhere");
        File.WriteAllText(Path.Combine(bus, ".hidden"), "");

        var devices = Discovery().DiscoverAvailableDevices();

        Assert.Equal(["0000:01:00.0", "0000:02:00.0"], devices.Select(d => d.PciAddress.ToString()));
    }

    [Fact]
    public void DiscoverAvailableDevices_NonCanonicalAliasEntries_NoDuplicates()
    {
        // The kernel names entries only in the canonical long lowercase form; an entry in another
        // spelling of an address that exists must not list that device a second time.
        Tree().AddDevice(SysfsTrees.Function("0000:0a:00.0"));
        var bus = SysfsTrees.PciDevices(_root.Path);
        File.CreateSymbolicLink(Path.Combine(bus, "0a:00.0"), "../../../devices/pci0000:0a/0000:0a:00.0");
        File.CreateSymbolicLink(Path.Combine(bus, "0000:0A:00.0"), "../../../devices/pci0000:0a/0000:0a:00.0");

        var devices = Discovery().DiscoverAvailableDevices();

        Assert.Equal(["0000:0a:00.0"], devices.Select(d => d.PciAddress.ToString()));
    }

    [Fact]
    public void DiscoverAvailableDevices_VendorFileMissing_DeviceSkipped()
    {
        Tree()
            .AddDevice(SysfsTrees.Function("0000:01:00.0"))
            .AddDevice(SysfsTrees.Function("0000:02:00.0"))
            .AddDevice(SysfsTrees.Function("0000:03:00.0"));
        File.Delete(SysfsTrees.Attribute(_root.Path, "0000:02:00.0", "vendor"));

        var devices = Discovery().DiscoverAvailableDevices();

        Assert.Equal(["0000:01:00.0", "0000:03:00.0"], devices.Select(d => d.PciAddress.ToString()));
        Assert.Null(Discovery().GetDeviceInfo(A("0000:02:00.0")));
    }

    [Theory]
    [InlineData("vendor", "garbage\n")]
    [InlineData("vendor", "")]
    [InlineData("vendor", "0x123456\n")]
    [InlineData("vendor", "-0x1\n")]
    [InlineData("vendor", "\0\0\0\0")]
    [InlineData("device", "0xzzzz\n")]
    [InlineData("class", "nope\n")]
    [InlineData("class", "0x12345678\n")]
    public void DiscoverAvailableDevices_GarbageIdFile_DeviceSkipped(string attribute, string content)
    {
        Tree()
            .AddDevice(SysfsTrees.Function("0000:01:00.0"))
            .AddDevice(SysfsTrees.Function("0000:02:00.0"));
        SysfsTrees.WriteAttribute(_root.Path, "0000:02:00.0", attribute, content);

        var devices = Discovery().DiscoverAvailableDevices();

        Assert.Equal(["0000:01:00.0"], devices.Select(d => d.PciAddress.ToString()));
    }

    [Fact]
    public void DiscoverAvailableDevices_VendorUnreadable_DeviceSkipped()
    {
        // Root can read any file, so "unreadable" is a directory where the attribute should be.
        Tree()
            .AddDevice(SysfsTrees.Function("0000:01:00.0"))
            .AddDevice(SysfsTrees.Function("0000:02:00.0"));
        var vendor = SysfsTrees.Attribute(_root.Path, "0000:02:00.0", "vendor");
        File.Delete(vendor);
        Directory.CreateDirectory(vendor);

        var devices = Discovery().DiscoverAvailableDevices();

        Assert.Equal(["0000:01:00.0"], devices.Select(d => d.PciAddress.ToString()));
    }

    [Fact]
    public void DiscoverAvailableDevices_DeviceLinkDangling_Skipped()
    {
        Tree()
            .AddDevice(SysfsTrees.Function("0000:01:00.0"))
            .AddDevice(SysfsTrees.Function("0000:02:00.0"));
        Directory.Delete(SysfsTrees.DeviceDirectory(_root.Path, "0000:02:00.0"), recursive: true);

        var devices = Discovery().DiscoverAvailableDevices();

        Assert.Equal(["0000:01:00.0"], devices.Select(d => d.PciAddress.ToString()));
    }

    [Fact]
    public void DiscoverAvailableDevices_EmptyOrMissingBus_Empty()
    {
        Assert.Empty(Discovery().DiscoverAvailableDevices());
        Tree();
        Assert.Empty(Discovery().DiscoverAvailableDevices());
    }

    [Fact]
    public void GetDeviceSysfsPath_Address_KernelPathOfTheDevice()
    {
        Assert.Equal("/sys/bus/pci/devices/0000:17:00.0", Discovery().GetDeviceSysfsPath(A("17:00.0")));
        Assert.Equal("/sys/bus/pci/devices/ffff:ff:1f.7", Discovery().GetDeviceSysfsPath(A("FFFF:FF:1F.7")));
    }

    [Fact]
    public void GetIommuGroupDevices_MissingOrNegativeGroup_Empty()
    {
        GpuServerFixture.WriteTo(_root.Path);

        Assert.Empty(Discovery().GetIommuGroupDevices(999));
        Assert.Empty(Discovery().GetIommuGroupDevices(-1));
        Assert.Equal([A("0000:17:00.0"), A("0000:17:00.1")], Discovery().GetIommuGroupDevices(11));
    }

    [Fact]
    public void GetIommuGroupDevices_JunkInGroupDirectory_Ignored()
    {
        Tree().AddDevice(SysfsTrees.Function("0000:01:00.0", group: 5));
        var members = Path.Combine(_root.Path, "sys/kernel/iommu_groups/5/devices");
        File.WriteAllText(Path.Combine(members, "junk"), "");
        Directory.CreateDirectory(Path.Combine(members, "0000:01:20.0"));

        Assert.Equal([A("0000:01:00.0")], Discovery().GetIommuGroupDevices(5));
    }

    [Fact]
    public void DiscoverAvailableDevices_TwoThousandDevices_AllInOrder()
    {
        var tree = Tree();
        var expected = new List<PciAddress>();
        // Walk the addresses in a scrambled order (a stride coprime with the count) over two domains.
        const int Count = 2000;
        for (var k = 0; k < Count; k++)
        {
            var i = (k * 7919) % Count;
            var address = new PciAddress(i % 2 == 0 ? 0 : 1, i / 256, (i % 256) / 8, i % 8);
            expected.Add(address);
            tree.AddDevice(SysfsTrees.Function(address.ToString(), device: i, group: i / 8));
        }

        var devices = Discovery().DiscoverAvailableDevices();

        Assert.Equal(Count, devices.Count);
        Assert.Equal(expected.Order(), devices.Select(d => d.PciAddress));
        Assert.All(devices, d => Assert.Equal(8, d.IommuGroupMembers.Count));
        Assert.All(devices, d => Assert.Contains(d.PciAddress, d.IommuGroupMembers));
        Assert.All(devices, d => Assert.Equal(d.IommuGroupMembers.Order(), d.IommuGroupMembers));
        Assert.Equal(Count, devices.Select(d => d.DeviceId).Distinct().Count());
    }
}
