using PciPassthrough.PciIds;
using PciPassthrough.Sysfs;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Discovery.Tests;

/// <summary>
/// Discovery over this machine's real /sys, checked against lspci on the same machine: same
/// functions (bridges aside), same ids, drivers, groups and the names lspci prints.
/// </summary>
public class RealSysfsTests
{
    private static (IReadOnlyList<AvailableDevice> Ours, IReadOnlyList<LspciDevice> Theirs, PciIdsDatabase Db) DiscoverBoth()
    {
        var listed = Lspci.Parse(Lspci.Run("-D", "-nn", "-k"));
        var db = PciIdsDatabase.Load(Lspci.PciIdsPath);
        var ours = new PciDiscovery(new LinuxSysfs("/"), new PciIdsProvider(db)).DiscoverAvailableDevices();
        return (ours, listed, db);
    }

    [Fact]
    public void DiscoverAvailableDevices_RealHost_SameFunctionsAsLspciExceptBridges()
    {
        var (ours, theirs, _) = DiscoverBoth();

        Assert.NotEmpty(theirs);
        Assert.Equal(theirs.Where(t => !t.IsBridge).Select(t => t.Address), ours.Select(d => d.PciAddress));
    }

    [Fact]
    public void DiscoverAvailableDevices_RealHost_IdsClassAndDriverMatchLspci()
    {
        var (ours, theirs, _) = DiscoverBoth();
        var byAddress = theirs.ToDictionary(t => t.Address);

        Assert.All(ours, device =>
        {
            var listed = byAddress[device.PciAddress];
            Assert.Equal(listed.VendorId, device.VendorId);
            Assert.Equal(listed.DeviceId, device.DeviceId);
            Assert.Equal(listed.ClassCode16, device.ClassCode.Value >> 8);
            Assert.Equal(listed.Driver, device.CurrentDriver);
        });
    }

    [Fact]
    public void DiscoverAvailableDevices_RealHost_NamesAsLspciPrintsThem()
    {
        var (ours, theirs, db) = DiscoverBoth();
        var byAddress = theirs.ToDictionary(t => t.Address);

        Assert.All(ours, device =>
        {
            var listed = byAddress[device.PciAddress];
            Assert.Equal(listed.Names, Lspci.NamesText(device.VendorName, device.DeviceName));
            if (listed.SubsystemNames is not null)
            {
                Assert.Equal(listed.SubsystemVendorId, device.SubsystemVendorId);
                Assert.Equal(listed.SubsystemDeviceId, device.SubsystemDeviceId);
                Assert.Equal(listed.SubsystemNames,
                    Lspci.NamesText(db.VendorName(device.SubsystemVendorId!.Value), device.SubsystemName));
            }
        });
    }

    [Fact]
    public void DiscoverAvailableDevices_RealHost_IommuGroupsAsLspciShowsThem()
    {
        // lspci -v prints "IOMMU group: N" for a device in a group and nothing without an IOMMU,
        // where the daemon reports -1 (this CI machine has no IOMMU: every group is -1).
        var groups = Lspci.Parse(Lspci.Run("-D", "-nn", "-v")).ToDictionary(t => t.Address, t => t.IommuGroup);
        var (ours, _, _) = DiscoverBoth();
        var iommuEnabled = Directory.Exists("/sys/kernel/iommu_groups") &&
            Directory.EnumerateFileSystemEntries("/sys/kernel/iommu_groups").Any();

        Assert.All(ours, device =>
        {
            Assert.Equal(groups[device.PciAddress] ?? -1, device.IommuGroup);
            if (!iommuEnabled)
            {
                Assert.Equal(-1, device.IommuGroup);
                Assert.Empty(device.IommuGroupMembers);
            }
        });
    }
}
