using System.Globalization;
using PciPassthrough.Devices;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Vfio;

/// <summary>
/// The /dev nodes through which processes reach a PCI function while a host driver has it: DRM
/// cards and render nodes (<c>devices/X/drm/*</c>), NVMe controllers and namespaces
/// (<c>devices/X/nvme/*</c>), and NVIDIA GPUs (<c>/proc/driver/nvidia/gpus/X/information</c>, Device Minor).
/// A process with one of these open keeps the driver busy: unbinding then waits for it.
/// </summary>
public static class DeviceNodes
{
    public static IReadOnlyList<string> For(ISysfs sysfs, PciAddress address)
    {
        var nodes = new List<string>();
        var device = SysfsPaths.Device(address);
        foreach (var entry in sysfs.ListDirectory(device + "/drm"))
        {
            if (IsNodeName(entry) && (entry.StartsWith("card", StringComparison.Ordinal) || entry.StartsWith("renderD", StringComparison.Ordinal)))
            {
                nodes.Add("/dev/dri/" + entry);
            }
        }

        foreach (var controller in sysfs.ListDirectory(device + "/nvme"))
        {
            if (!IsNodeName(controller) || !controller.StartsWith("nvme", StringComparison.Ordinal))
            {
                continue;
            }

            nodes.Add("/dev/" + controller);
            foreach (var ns in sysfs.ListDirectory($"{device}/nvme/{controller}"))
            {
                if (IsNodeName(ns) && ns.StartsWith(controller + "n", StringComparison.Ordinal))
                {
                    nodes.Add("/dev/" + ns);
                }
            }
        }

        var nvidia = sysfs.ReadText($"/proc/driver/nvidia/gpus/{address}/information");
        if (nvidia is not null)
        {
            foreach (var line in nvidia.Split('\n'))
            {
                if (line.StartsWith("Device Minor:", StringComparison.Ordinal) &&
                    int.TryParse(line["Device Minor:".Length..].Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var minor))
                {
                    nodes.Add("/dev/nvidia" + minor.ToString(CultureInfo.InvariantCulture));
                }
            }
        }

        return nodes;
    }

    private static bool IsNodeName(string name) =>
        name.Length is > 0 and <= 64 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.') && name[0] != '.';
}
