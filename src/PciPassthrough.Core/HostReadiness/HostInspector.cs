using System.Globalization;
using PciPassthrough.PciIds;
using PciPassthrough.Registry;
using PciPassthrough.Sysfs;
using PciPassthrough.Vfio;

namespace PciPassthrough.HostReadiness;

/// <summary>
/// Reads the host's readiness for passthrough: IOMMU groups and interrupt remapping, the vfio-pci
/// driver and <c>/dev/vfio/vfio</c>, the kernel command line; and the daemon's own troubles
/// (stuck kernel writes, quarantined devices, no pci.ids).
/// </summary>
public sealed class HostInspector(ISysfs sysfs, SysfsVfioBinder binder, BoundedKernelWriter writer, DeviceRegistry registry,
    PciIdsProvider pciIds)
{
    public const string Info = "info";
    public const string Warning = "warning";
    public const string Error = "error";

    public HostReport Inspect()
    {
        var cmdline = (sysfs.ReadText(SysfsPaths.KernelCmdline) ?? "").Trim();
        var args = cmdline.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var groups = sysfs.ListDirectory(SysfsPaths.IommuGroups).Count;
        var vfio = binder.CheckVfioAvailable();
        var remapping = InterruptRemapping(args);
        var findings = new List<Finding>();

        if (groups == 0)
        {
            findings.Add(new Finding("iommu_disabled", Error, "The kernel made no IOMMU groups: the IOMMU is off or absent",
                "Enable VT-d/AMD-Vi in the firmware and add intel_iommu=on (Intel) or amd_iommu=on (AMD) to the kernel command line"));
        }

        if (!vfio.VfioPciDriver)
        {
            findings.Add(new Finding("vfio_pci_missing", Error, "The vfio-pci driver is not loaded",
                "modprobe vfio-pci, and list it in /etc/modules-load.d/ to load it at boot"));
        }

        if (!vfio.DevVfio)
        {
            findings.Add(new Finding("dev_vfio_missing", Error, "/dev/vfio/vfio does not exist", "modprobe vfio (loaded with vfio-pci)"));
        }

        if (groups > 0 && remapping is false)
        {
            findings.Add(new Finding("interrupt_remapping_off", Warning,
                "Interrupt remapping is off: a device could inject interrupts into the host",
                "Remove intremap=off / nointremap from the kernel command line; use allow_unsafe_interrupts only on trusted hardware"));
        }

        if (groups > 0 && !args.Contains("iommu=pt"))
        {
            findings.Add(new Finding("iommu_not_passthrough", Info,
                "Host devices use translated DMA (no iommu=pt); this costs host I/O performance, not safety",
                "Add iommu=pt to the kernel command line if host I/O performance matters"));
        }

        if (pciIds.Database.VendorCount == 0)
        {
            findings.Add(new Finding("pci_ids_missing", Info, "No pci.ids database: vendor and device names are null",
                "apt-get install pci.ids (or hwdata), or set Host:PciIds"));
        }

        if (writer.StuckWrites > 0)
        {
            findings.Add(new Finding("stuck_kernel_writes", Warning,
                $"{writer.StuckWrites.ToString(CultureInfo.InvariantCulture)} kernel write(s) did not return and are still blocked",
                "See the devices in state quarantined and the processes holding them; reset them once those processes exit"));
        }

        var quarantined = registry.All().Where(r => r.Quarantine is not null).Select(r => r.Name).ToList();
        if (quarantined.Count > 0)
        {
            findings.Add(new Finding("quarantined_devices", Warning, "Quarantined: " + string.Join(", ", quarantined),
                "POST /devices/{id}/reset once whatever held them is gone, or run a reconcile"));
        }

        return new HostReport
        {
            Ready = findings.All(f => f.Severity != Error),
            Iommu = new IommuStatus(groups > 0, groups, groups > 0 ? remapping : null),
            Vfio = new VfioStatus(vfio.VfioPciDriver, vfio.DevVfio),
            KernelCmdline = cmdline,
            Findings = findings,
        };
    }

    /// <summary>
    /// Off when the command line turns it off; otherwise on when an Intel unit reports the IR
    /// capability (extended capability bit 3) or an AMD unit is present (AMD-Vi remaps by
    /// default); unknown when there is no unit to ask.
    /// </summary>
    private bool? InterruptRemapping(string[] args)
    {
        if (args.Any(a => a is "intremap=off" or "nointremap" or "intel_iommu=off" or "amd_iommu=off"))
        {
            return false;
        }

        foreach (var unit in sysfs.ListDirectory(SysfsPaths.IommuClass))
        {
            if (!SysfsPaths.IsValidDriverName(unit))
            {
                continue;
            }

            var ecap = sysfs.ReadText($"{SysfsPaths.IommuClass}/{unit}/intel-iommu/ecap")?.Trim();
            if (ecap is not null && long.TryParse(ecap, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var bits))
            {
                return (bits & 0x8) != 0;
            }

            if (unit.StartsWith("ivhd", StringComparison.Ordinal))
            {
                return true;
            }
        }

        return null;
    }
}
