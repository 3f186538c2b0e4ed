using System.Text;
using PciPassthrough.Devices;
using PciPassthrough.Discovery;
using PciPassthrough.Simulation;
using PciPassthrough.Sysfs;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.PciIds.Tests;

public class PciIdsDatabaseTests
{
    // The shapes of the real file: header comments, a comment between a vendor and its devices,
    // subsystem lines ("svsv sdsd  name" after two tabs), a vendor without devices, UTF-8 and
    // brackets in names, and the class section with subclasses and programming interfaces.
    private const string Sample =
        "#\n" +
        "#\tList of PCI ID's\n" +
        "#\n" +
        "\n" +
        "# Syntax:\n" +
        "# vendor  vendor_name\n" +
        "#\tdevice  device_name\t\t\t\t<-- single tab\n" +
        "#\t\tsubvendor subdevice  subsystem_name\t<-- two tabs\n" +
        "\n" +
        "0010  Allied Telesis, Inc (Wrong ID)\n" +
        "# This is a relabelled RTL-8139\n" +
        "\t8139  AT-2500TX V3 Ethernet\n" +
        "001c  PEAK-System Technik GmbH\n" +
        "\t0001  PCAN-PCI CAN-Bus controller\n" +
        "\t\t001c 0004  2 Channel CAN Bus SJC1000\n" +
        "\t\t001c 0005  2 Channel CAN Bus SJC1000 (Optically Isolated)\n" +
        "0a5c  Broadcom Corporation\n" +
        "10de  NVIDIA Corporation\n" +
        "\t2230  GA102GL [RTX A6000]\n" +
        "\t\t10de 1459  RTX A6000\n" +
        "\t\t103c 1459  HP RTX A6000 [board]\n" +
        "\n" +
        "\t1aef  GA102 High Definition Audio Controller\n" +
        "15cf  Hilscher Gesellschaft für Systemautomation mbH\n" +
        "\t0000  CIFX PCI/PCIe\n" +
        "\t\t15cf 0000  Own ids, listed anyway\n" +
        "\t\t15cf 0001  CIFX 50E – ünïcödé [x]\n" +
        "8086  Intel Corporation\n" +
        "\t1533  I210 Gigabit Network Connection\n" +
        "\t\t15d9 1533  I210 [Supermicro]\n" +
        "\ta1af  C620 Series Chipset Family USB 3.0 xHCI Controller\n" +
        "ffff  Illegal Vendor ID\n" +
        "\n" +
        "\n" +
        "# List of known device classes, subclasses and programming interfaces\n" +
        "\n" +
        "# Syntax:\n" +
        "# C class\tclass_name\n" +
        "#\tsubclass\tsubclass_name  \t\t<-- single tab\n" +
        "#\t\tprog-if  prog-if_name  \t<-- two tabs\n" +
        "\n" +
        "C 00  Unclassified device\n" +
        "\t00  Non-VGA unclassified device\n" +
        "C 02  Network controller\n" +
        "\t00  Ethernet controller\n" +
        "\t80  Network controller\n" +
        "C 03  Display controller\n" +
        "\t00  VGA compatible controller\n" +
        "\t\t00  VGA controller\n" +
        "\t\t01  8514 controller\n" +
        "\t02  3D controller\n" +
        "C 0c  Serial bus controller\n" +
        "\t03  USB controller\n" +
        "\t\t30  XHCI\n";

    private static PciIdsDatabase ParseSample() => PciIdsDatabase.Parse(new StringReader(Sample));

    [Theory]
    [InlineData(0x0010, "Allied Telesis, Inc (Wrong ID)")]
    [InlineData(0x001c, "PEAK-System Technik GmbH")]
    [InlineData(0x0a5c, "Broadcom Corporation")]
    [InlineData(0x10de, "NVIDIA Corporation")]
    [InlineData(0x15cf, "Hilscher Gesellschaft für Systemautomation mbH")]
    [InlineData(0x8086, "Intel Corporation")]
    [InlineData(0xffff, "Illegal Vendor ID")]
    public void VendorName_ListedVendor_Name(int vendor, string expected)
    {
        Assert.Equal(expected, ParseSample().VendorName(vendor));
    }

    [Theory]
    [InlineData(0x0010, 0x8139, "AT-2500TX V3 Ethernet")]
    [InlineData(0x001c, 0x0001, "PCAN-PCI CAN-Bus controller")]
    [InlineData(0x10de, 0x2230, "GA102GL [RTX A6000]")]
    [InlineData(0x10de, 0x1aef, "GA102 High Definition Audio Controller")]
    [InlineData(0x15cf, 0x0000, "CIFX PCI/PCIe")]
    [InlineData(0x8086, 0x1533, "I210 Gigabit Network Connection")]
    [InlineData(0x8086, 0xa1af, "C620 Series Chipset Family USB 3.0 xHCI Controller")]
    public void DeviceName_ListedDevice_Name(int vendor, int device, string expected)
    {
        Assert.Equal(expected, ParseSample().DeviceName(vendor, device));
    }

    [Theory]
    [InlineData(0x1234, 0x0000)]   // unknown vendor
    [InlineData(0x0a5c, 0x0000)]   // vendor without devices
    [InlineData(0x10de, 0x0000)]   // unknown device of a known vendor
    [InlineData(0x8086, 0x2230)]   // another vendor's device id
    [InlineData(0x10de, 0x1533)]
    [InlineData(0x0000, 0x0000)]
    [InlineData(0x0000, 0x0001)]   // 0000 appears only as a device id (of 15cf) and as class ids
    [InlineData(0x0002, 0x0000)]   // class 02 / subclass 00 are not vendor 0002 device 0000
    [InlineData(0x0003, 0x0002)]
    [InlineData(0x001c, 0x0004)]   // a subsystem id is not a device of its vendor
    [InlineData(0x15cf, 0x0030)]
    public void DeviceName_NotListed_Null(int vendor, int device)
    {
        Assert.Null(ParseSample().DeviceName(vendor, device));
    }

    [Theory]
    [InlineData(0x1234)]
    [InlineData(0x0000)]
    [InlineData(0x0002)]   // "C 02" is a class, not a vendor
    [InlineData(0x000c)]
    [InlineData(0x8139)]   // a device id, not a vendor
    public void VendorName_NotListed_Null(int vendor)
    {
        Assert.Null(ParseSample().VendorName(vendor));
    }

    [Fact]
    public void Parse_Sample_CountsEntries()
    {
        var db = ParseSample();

        Assert.Equal(7, db.VendorCount);
        Assert.Equal(7, db.DeviceCount);
        Assert.Equal(7, db.SubsystemCount);
    }

    [Fact]
    public void Parse_CommentBetweenVendorAndDevice_DeviceStaysWithVendor()
    {
        Assert.Equal("AT-2500TX V3 Ethernet", ParseSample().DeviceName(0x0010, 0x8139));
    }

    [Fact]
    public void Parse_BlankLineBetweenDevices_DeviceStaysWithVendor()
    {
        Assert.Equal("GA102 High Definition Audio Controller", ParseSample().DeviceName(0x10de, 0x1aef));
    }

    [Theory]
    [InlineData(0x001c, 0x0001, 0x001c, 0x0004, "2 Channel CAN Bus SJC1000")]
    [InlineData(0x001c, 0x0001, 0x001c, 0x0005, "2 Channel CAN Bus SJC1000 (Optically Isolated)")]
    [InlineData(0x10de, 0x2230, 0x10de, 0x1459, "RTX A6000")]
    [InlineData(0x10de, 0x2230, 0x103c, 0x1459, "HP RTX A6000 [board]")]
    [InlineData(0x8086, 0x1533, 0x15d9, 0x1533, "I210 [Supermicro]")]
    [InlineData(0x15cf, 0x0000, 0x15cf, 0x0001, "CIFX 50E – ünïcödé [x]")]
    [InlineData(0x15cf, 0x0000, 0x15cf, 0x0000, "CIFX PCI/PCIe")]  // own ids win over a listed entry, as in libpci
    public void SubsystemName_ListedEntry_Name(int vendor, int device, int subVendor, int subDevice, string expected)
    {
        Assert.Equal(expected, ParseSample().SubsystemName(vendor, device, subVendor, subDevice));
    }

    [Theory]
    [InlineData(0x8086, 0x1533, "I210 Gigabit Network Connection")]
    [InlineData(0x10de, 0x1aef, "GA102 High Definition Audio Controller")]
    public void SubsystemName_SubsystemIdsEqualDeviceIds_NamesTheDevice(int vendor, int device, string expected)
    {
        Assert.Equal(expected, ParseSample().SubsystemName(vendor, device, vendor, device));
    }

    [Theory]
    [InlineData(0x10de, 0x2230, 0x10de, 0x0000)]   // unlisted board of a listed device
    [InlineData(0x10de, 0x1aef, 0x10de, 0x1459)]   // board listed under another device only
    [InlineData(0x1234, 0x5678, 0x1234, 0x5678)]   // own ids of an unknown device
    [InlineData(0x1234, 0x5678, 0x10de, 0x1459)]
    [InlineData(0x8086, 0x1533, 0x0000, 0x0000)]
    public void SubsystemName_NotListed_Null(int vendor, int device, int subVendor, int subDevice)
    {
        Assert.Null(ParseSample().SubsystemName(vendor, device, subVendor, subDevice));
    }

    [Theory]
    [InlineData(0x02, 0x00, "Ethernet controller")]
    [InlineData(0x02, 0x80, "Network controller")]
    [InlineData(0x03, 0x00, "VGA compatible controller")]
    [InlineData(0x03, 0x02, "3D controller")]
    [InlineData(0x0c, 0x03, "USB controller")]
    [InlineData(0x00, 0x00, "Non-VGA unclassified device")]
    public void ClassName_ListedSubclass_SubclassName(int baseClass, int subClass, string expected)
    {
        Assert.Equal(expected, ParseSample().ClassName(baseClass, subClass));
    }

    [Theory]
    [InlineData(0x02, 0x42, "Network controller")]
    [InlineData(0x03, 0x80, "Display controller")]
    [InlineData(0x0c, 0x30, "Serial bus controller")]  // 30 is a prog-if of 0c03, not a subclass of 0c
    public void ClassName_UnlistedSubclass_BaseClassName(int baseClass, int subClass, string expected)
    {
        Assert.Equal(expected, ParseSample().ClassName(baseClass, subClass));
    }

    [Theory]
    [InlineData(0x04, 0x03)]
    [InlineData(0x06, 0x00)]
    [InlineData(0xff, 0x00)]
    public void ClassName_UnlistedClass_Null(int baseClass, int subClass)
    {
        Assert.Null(ParseSample().ClassName(baseClass, subClass));
    }

    [Fact]
    public void Empty_AnyLookup_Null()
    {
        var db = PciIdsDatabase.Empty;

        Assert.Null(db.VendorName(0x8086));
        Assert.Null(db.DeviceName(0x8086, 0x1533));
        Assert.Null(db.SubsystemName(0x8086, 0x1533, 0x8086, 0x1533));
        Assert.Null(db.ClassName(0x02, 0x00));
        Assert.Equal(0, db.VendorCount);
    }

    [Fact]
    public void Parse_CrLfLineEndings_SameNames()
    {
        var db = PciIdsDatabase.Parse(new StringReader(Sample.Replace("\n", "\r\n", StringComparison.Ordinal)));

        Assert.Equal("GA102GL [RTX A6000]", db.DeviceName(0x10de, 0x2230));
        Assert.Equal("HP RTX A6000 [board]", db.SubsystemName(0x10de, 0x2230, 0x103c, 0x1459));
        Assert.Equal("Ethernet controller", db.ClassName(0x02, 0x00));
    }

    [Fact]
    public void Load_Utf8File_KeepsNonAsciiNames()
    {
        using var dir = new TempDirectory();
        var path = dir.Combine("pci.ids");
        File.WriteAllText(path, Sample, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false));

        var db = PciIdsDatabase.Load(path);

        Assert.Equal("Hilscher Gesellschaft für Systemautomation mbH", db.VendorName(0x15cf));
        Assert.Equal("CIFX 50E – ünïcödé [x]", db.SubsystemName(0x15cf, 0x0000, 0x15cf, 0x0001));
    }

    [Fact]
    public void Parse_MalformedLines_IgnoredWithoutLosingTheRest()
    {
        const string text =
            "8086  Intel Corporation\n" +
            "\tzzzz  not hex\n" +
            "\t123  three digits\n" +
            "\t1533\n" +                       // no name
            "\t1533  I210 Gigabit Network Connection\n" +
            "\t\t15d9  missing subdevice\n" +
            "\t\t15d9 1533 one space only\n" +
            "\t\t15d9 1534  I210 board\n" +
            "xyz1  Not a vendor\n" +
            "\t0001  orphan device of a bad vendor line\n" +
            "10de  NVIDIA Corporation\n" +
            "\t2230  GA102GL [RTX A6000]\n";

        var db = PciIdsDatabase.Parse(new StringReader(text));

        Assert.Equal("I210 Gigabit Network Connection", db.DeviceName(0x8086, 0x1533));
        Assert.Equal("I210 board", db.SubsystemName(0x8086, 0x1533, 0x15d9, 0x1534));
        Assert.Null(db.DeviceName(0x8086, 0x0123));
        Assert.Null(db.DeviceName(0x8086, 0x0001));
        Assert.Equal("GA102GL [RTX A6000]", db.DeviceName(0x10de, 0x2230));
        Assert.Equal(2, db.VendorCount);
    }

    [Fact]
    public void Load_RealDatabase_HasThousandsOfEntries()
    {
        var db = PciIdsDatabase.Load(Lspci.PciIdsPath);

        Assert.True(db.VendorCount > 1000, $"{db.VendorCount} vendors");
        Assert.True(db.DeviceCount > 10000, $"{db.DeviceCount} devices");
        Assert.True(db.SubsystemCount > 10000, $"{db.SubsystemCount} subsystems");
        Assert.Equal("Intel Corporation", db.VendorName(0x8086));
        Assert.Equal("Ethernet controller", db.ClassName(0x02, 0x00));
    }

    /// <summary>
    /// Every device line of every 50th vendor of the real pci.ids, plus an unlisted device of each of
    /// those vendors and a few unlisted vendors, put in a synthetic sysfs tree; lspci reads the tree
    /// with the same pci.ids and must print exactly the names our database gives.
    /// </summary>
    [Fact]
    public void Names_SampleOfRealDatabase_MatchLspci()
    {
        var sample = SampleRealIds(every: 50);
        Assert.True(sample.Count > 300, $"only {sample.Count} ids sampled");
        Assert.Contains(sample, s => !s.Listed);

        using var root = new TempDirectory("pcipt-lspci");
        var builder = new SysfsTreeBuilder(root.Path);
        var addresses = new Dictionary<PciAddress, (int Vendor, int Device)>();
        for (var i = 0; i < sample.Count; i++)
        {
            var address = new PciAddress(i / 8192, (i / 256) % 32, (i % 256) / 8, i % 8);
            addresses[address] = (sample[i].Vendor, sample[i].Device);
            builder.AddDevice(new SimulatedDeviceSpec
            {
                Address = address,
                VendorId = sample[i].Vendor,
                DeviceId = sample[i].Device,
                ClassCode = 0x020000,
            });
        }

        var db = PciIdsDatabase.Load(Lspci.PciIdsPath);
        var discovered = new PciDiscovery(new LinuxSysfs(root.Path), new PciIdsProvider(db)).DiscoverAvailableDevices();
        var listed = Lspci.Parse(Lspci.Run("-A", "linux-sysfs", "-O", $"sysfs.path={root.Combine("sys", "bus", "pci")}",
            "-i", Lspci.PciIdsPath, "-D", "-nn"));

        Assert.Equal(addresses.Keys.Order(), listed.Select(l => l.Address));
        Assert.Equal(addresses.Keys.Order(), discovered.Select(d => d.PciAddress));
        var mismatches = new List<string>();
        foreach (var (ours, theirs) in discovered.Zip(listed))
        {
            Assert.Equal((theirs.VendorId, theirs.DeviceId), (ours.VendorId, ours.DeviceId));
            var expected = Lspci.NamesText(ours.VendorName, ours.DeviceName);
            if (expected != theirs.Names)
            {
                mismatches.Add($"{ours.VendorId:x4}:{ours.DeviceId:x4}: ours '{expected}', lspci '{theirs.Names}'");
            }
        }

        Assert.True(mismatches.Count == 0, string.Join('\n', mismatches));
    }

    private sealed record SampledId(int Vendor, int Device, bool Listed);

    /// <summary>Reads vendor and device lines of the real file with a parser of the test's own.</summary>
    private static List<SampledId> SampleRealIds(int every)
    {
        var vendors = new List<(int Id, List<int> Devices, bool NonAscii)>();
        foreach (var line in File.ReadLines(Lspci.PciIdsPath, Encoding.UTF8))
        {
            if (line.StartsWith("C ", StringComparison.Ordinal))
            {
                break;
            }

            if (line.Length > 6 && IsHex4(line.AsSpan(0, 4)) && line[4] == ' ')
            {
                vendors.Add((Convert.ToInt32(line[..4], 16), [], line.Any(c => c > 127)));
            }
            else if (line.Length > 7 && line[0] == '\t' && line[1] != '\t' && IsHex4(line.AsSpan(1, 4)) && vendors.Count > 0)
            {
                vendors[^1].Devices.Add(Convert.ToInt32(line.Substring(1, 4), 16));
                if (line.Any(c => c > 127))
                {
                    vendors[^1] = vendors[^1] with { NonAscii = true };
                }
            }
        }

        var known = vendors.Select(v => v.Id).ToHashSet();
        var sample = new List<SampledId>();
        foreach (var (vendor, devices, _) in vendors.Where((v, i) => i % every == 0 || v.NonAscii))
        {
            sample.AddRange(devices.Select(d => new SampledId(vendor, d, true)));
            var unlisted = Enumerable.Range(0, 0x10000).Reverse().First(d => !devices.Contains(d));
            sample.Add(new SampledId(vendor, unlisted, false));
        }

        foreach (var vendor in Enumerable.Range(0x0100, 0xff00).Where(v => !known.Contains(v)).Take(5))
        {
            sample.Add(new SampledId(vendor, 0x1234, false));
        }

        return sample.DistinctBy(s => (s.Vendor, s.Device)).ToList();
    }

    private static bool IsHex4(ReadOnlySpan<char> text) =>
        text.Length == 4 && text.ToArray().All(c => char.IsAsciiHexDigitLower(c) || char.IsAsciiDigit(c));
}
