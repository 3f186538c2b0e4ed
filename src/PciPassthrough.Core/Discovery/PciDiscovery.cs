using System.Collections.Concurrent;
using System.Globalization;
using PciPassthrough.Devices;
using PciPassthrough.PciIds;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Discovery;

/// <summary>
/// Discovery over <see cref="ISysfs"/>: <c>/sys/bus/pci/devices/&lt;address&gt;</c> for ids, class,
/// driver, NUMA node and IOMMU group link, <c>/sys/kernel/iommu_groups/N/devices</c> for the members.
/// Reads only, so it works without root.
/// </summary>
public sealed class PciDiscovery(ISysfs sysfs, PciIdsProvider pciIds) : IPciDiscovery
{
    public IReadOnlyList<AvailableDevice> DiscoverAvailableDevices()
    {
        var groups = new ConcurrentDictionary<int, IReadOnlyList<PciAddress>>();
        // Entries are named by the kernel; anything that is not a canonical address is not a PCI function.
        var addresses = sysfs.ListDirectory(SysfsPaths.PciDevices)
            .Select(e => PciAddress.TryParse(e, out var a) && e == a.ToString() ? a : (PciAddress?)null)
            .OfType<PciAddress>()
            .ToArray();
        var devices = addresses.Select(a => ReadDevice(a, groups)).OfType<AvailableDevice>().Where(d => !d.IsBridge).ToList();
        devices.Sort((a, b) => a.PciAddress.CompareTo(b.PciAddress));
        return devices;
    }

    public AvailableDevice? GetDeviceInfo(PciAddress address) => ReadDevice(address, groups: null);

    public IReadOnlyList<PciAddress> GetIommuGroupDevices(int iommuGroup)
    {
        if (iommuGroup < 0)
        {
            return [];
        }

        var members = new List<PciAddress>();
        foreach (var entry in sysfs.ListDirectory(SysfsPaths.IommuGroupDevices(iommuGroup)))
        {
            // The kernel names entries canonically; anything else is not one of its devices.
            if (PciAddress.TryParse(entry, out var member) && entry == member.ToString())
            {
                members.Add(member);
            }
        }

        members.Sort();
        return members;
    }

    public int? GetIommuGroup(PciAddress address) =>
        sysfs.Exists(SysfsPaths.Device(address)) ? ReadIommuGroup(address) : null;

    /// <summary>The group of a device known to exist: -1 without an iommu_group link.</summary>
    private int ReadIommuGroup(PciAddress address)
    {
        var link = sysfs.ReadLink(SysfsPaths.DeviceAttribute(address, DeviceAttribute.IommuGroup));
        return link is not null &&
               int.TryParse(SysfsPaths.LastSegment(link), NumberStyles.None, CultureInfo.InvariantCulture, out var group)
            ? group
            : -1;
    }

    public string? GetCurrentDriver(PciAddress address)
    {
        var link = sysfs.ReadLink(SysfsPaths.DeviceAttribute(address, DeviceAttribute.Driver));
        return link is null ? null : SysfsPaths.LastSegment(link);
    }

    public string GetDeviceSysfsPath(PciAddress address) => SysfsPaths.Device(address);

    private AvailableDevice? ReadDevice(PciAddress address, ConcurrentDictionary<int, IReadOnlyList<PciAddress>>? groups)
    {
        // A device can disappear between the directory listing and these reads (hot unplug,
        // SR-IOV VFs going away); it is then simply not there.
        if (!PciId.TryParse(Read(address, DeviceAttribute.Vendor), out var vendor) ||
            !PciId.TryParse(Read(address, DeviceAttribute.Device), out var device) ||
            !PciClassCode.TryParseSysfs(Read(address, DeviceAttribute.Class), out var classCode))
        {
            return null;
        }

        int? subVendor = PciId.TryParse(Read(address, DeviceAttribute.SubsystemVendor), out var sv) ? sv : null;
        int? subDevice = PciId.TryParse(Read(address, DeviceAttribute.SubsystemDevice), out var sd) ? sd : null;
        // The id files were readable, so the device exists.
        var group = ReadIommuGroup(address);
        IReadOnlyList<PciAddress> members;
        if (group < 0)
        {
            members = [];
        }
        else
        {
            members = groups is null ? GetIommuGroupDevices(group) : groups.GetOrAdd(group, GetIommuGroupDevices);
        }

        var db = pciIds.Database;
        return new AvailableDevice
        {
            PciAddress = address,
            VendorId = vendor,
            DeviceId = device,
            SubsystemVendorId = subVendor,
            SubsystemDeviceId = subDevice,
            ClassCode = classCode,
            VendorName = db.VendorName(vendor),
            DeviceName = db.DeviceName(vendor, device),
            SubsystemName = subVendor is { } v && subDevice is { } d ? db.SubsystemName(vendor, device, v, d) : null,
            ClassName = db.ClassName(classCode.BaseClass, classCode.SubClass),
            IommuGroup = group,
            IommuGroupMembers = members,
            CurrentDriver = GetCurrentDriver(address),
            NumaNode = ReadNumaNode(address),
        };
    }

    private int? ReadNumaNode(PciAddress address) =>
        int.TryParse(Read(address, DeviceAttribute.NumaNode), NumberStyles.AllowLeadingSign | NumberStyles.AllowTrailingWhite,
            CultureInfo.InvariantCulture, out var node) && node >= 0
            ? node
            : null;

    private string? Read(PciAddress address, DeviceAttribute attribute)
    {
        try
        {
            return sysfs.ReadText(SysfsPaths.DeviceAttribute(address, attribute));
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }
}
