using Microsoft.Win32.SafeHandles;

namespace PciPassthrough.KernelTests.Guest.Kernel;

/// <summary>
/// The VFIO user API (linux/vfio.h) called for real through ioctl, as a VMM does before it
/// maps a device: container, API version, IOMMU model, group viability, group into container,
/// device file descriptor. Numbers are <c>_IO(';', 100 + n)</c>.
/// </summary>
public static class Vfio
{
    public const nuint GetApiVersion = 0x3B64;
    public const nuint CheckExtension = 0x3B65;
    public const nuint SetIommu = 0x3B66;
    public const nuint GroupGetStatus = 0x3B67;
    public const nuint GroupSetContainer = 0x3B68;
    public const nuint GroupGetDeviceFd = 0x3B6A;
    public const nuint DeviceGetInfo = 0x3B6B;

    public const int ApiVersion = 0;
    public const int Type1Iommu = 1;
    public const int Type1v2Iommu = 3;
    public const uint GroupFlagsViable = 1;
    public const uint DeviceFlagsPci = 1 << 1;

    public static SafeFileHandle Open(string path)
    {
        var fd = Libc.Open(path, Libc.ORdwr | Libc.OCloexec);
        if (fd < 0)
        {
            throw new VfioCallException($"open {path} failed: {Libc.LastError()}");
        }

        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>An ioctl whose argument is a plain integer; returns the ioctl's non-negative result.</summary>
    public static int Call(SafeFileHandle fd, nuint request, nint argument, string what)
    {
        var result = Libc.IoctlValue(Fd(fd), request, argument);
        if (result < 0)
        {
            throw new VfioCallException($"{what} failed: {Libc.LastError()}");
        }

        return result;
    }

    /// <summary>VFIO_GROUP_GET_STATUS: the group's flags (bit 0: viable).</summary>
    public static unsafe uint GetGroupFlags(SafeFileHandle group, string what)
    {
        var status = stackalloc uint[2];
        status[0] = 8; // argsz
        status[1] = 0; // flags
        if (Libc.IoctlPointer(Fd(group), GroupGetStatus, status) < 0)
        {
            throw new VfioCallException($"{what} failed: {Libc.LastError()}");
        }

        return status[1];
    }

    /// <summary>VFIO_GROUP_SET_CONTAINER: the argument is a pointer to the container's fd.</summary>
    public static unsafe void SetContainer(SafeFileHandle group, SafeFileHandle container, string what)
    {
        var containerFd = Fd(container);
        if (Libc.IoctlPointer(Fd(group), GroupSetContainer, &containerFd) < 0)
        {
            throw new VfioCallException($"{what} failed: {Libc.LastError()}");
        }
    }

    /// <summary>VFIO_GROUP_GET_DEVICE_FD: a file descriptor for one function of the group.</summary>
    public static SafeFileHandle GetDeviceFd(SafeFileHandle group, string address, string what)
    {
        var fd = Libc.IoctlString(Fd(group), GroupGetDeviceFd, address);
        if (fd < 0)
        {
            throw new VfioCallException($"{what} failed: {Libc.LastError()}");
        }

        return new SafeFileHandle(fd, ownsHandle: true);
    }

    /// <summary>VFIO_DEVICE_GET_INFO: (flags, regions, irqs).</summary>
    public static unsafe (uint Flags, uint Regions, uint Irqs) GetDeviceInfo(SafeFileHandle device, string what)
    {
        var info = stackalloc uint[4];
        info[0] = 16; // argsz: argsz, flags, num_regions, num_irqs
        info[1] = info[2] = info[3] = 0;
        if (Libc.IoctlPointer(Fd(device), DeviceGetInfo, info) < 0)
        {
            throw new VfioCallException($"{what} failed: {Libc.LastError()}");
        }

        return (info[1], info[2], info[3]);
    }

    private static int Fd(SafeFileHandle handle) => (int)handle.DangerousGetHandle();
}

/// <summary>A VFIO call the kernel refused.</summary>
public sealed class VfioCallException : Exception
{
    public VfioCallException()
    {
    }

    public VfioCallException(string message)
        : base(message)
    {
    }

    public VfioCallException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>
/// A VFIO group opened the way a VMM opens it, with every step's result recorded: the handles
/// stay open (the group is "in use") until disposed.
/// </summary>
public sealed class VfioGroupSession : IDisposable
{
    private readonly List<SafeFileHandle> _handles = [];

    private VfioGroupSession(int group)
    {
        Group = group;
    }

    public int Group { get; }

    /// <summary>Each call made and what the kernel answered, in order.</summary>
    public Dictionary<string, object?> Results { get; } = [];

    public bool Viable { get; private set; }

    /// <summary>
    /// Opens /dev/vfio/vfio and /dev/vfio/N, checks the API and the group's viability, puts the
    /// group in the container, selects the type1 IOMMU and opens a device fd for each address.
    /// Throws <see cref="VfioCallException"/> at the first refusal, handles closed.
    /// </summary>
    public static VfioGroupSession Open(int group, IReadOnlyList<string> addresses)
    {
        var session = new VfioGroupSession(group);
        try
        {
            session.Run(addresses);
            return session;
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        // Device fds first, then the group (which leaves the container), then the container.
        for (var i = _handles.Count - 1; i >= 0; i--)
        {
            _handles[i].Dispose();
        }

        _handles.Clear();
    }

    private void Run(IReadOnlyList<string> addresses)
    {
        var container = Keep(Vfio.Open("/dev/vfio/vfio"));
        var api = Vfio.Call(container, Vfio.GetApiVersion, 0, "VFIO_GET_API_VERSION");
        Results["api_version"] = api;
        if (api != Vfio.ApiVersion)
        {
            throw new VfioCallException($"VFIO_GET_API_VERSION returned {api}, expected {Vfio.ApiVersion}");
        }

        var type1v2 = Vfio.Call(container, Vfio.CheckExtension, Vfio.Type1v2Iommu, "VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU)");
        var type1 = Vfio.Call(container, Vfio.CheckExtension, Vfio.Type1Iommu, "VFIO_CHECK_EXTENSION(VFIO_TYPE1_IOMMU)");
        Results["type1v2_iommu"] = type1v2;
        Results["type1_iommu"] = type1;
        if (type1v2 <= 0 && type1 <= 0)
        {
            throw new VfioCallException("VFIO_CHECK_EXTENSION: neither VFIO_TYPE1v2_IOMMU nor VFIO_TYPE1_IOMMU is supported");
        }

        var groupPath = $"/dev/vfio/{Group}";
        var groupFd = Keep(Vfio.Open(groupPath));
        var flags = Vfio.GetGroupFlags(groupFd, $"VFIO_GROUP_GET_STATUS on {groupPath}");
        Viable = (flags & Vfio.GroupFlagsViable) != 0;
        Results["group_flags"] = flags;
        Results["group_viable"] = Viable;
        if (!Viable)
        {
            throw new VfioCallException($"VFIO_GROUP_GET_STATUS on {groupPath}: the group is not viable (flags {flags})");
        }

        Vfio.SetContainer(groupFd, container, $"VFIO_GROUP_SET_CONTAINER on {groupPath}");
        Results["set_container"] = "ok";
        var model = type1v2 > 0 ? Vfio.Type1v2Iommu : Vfio.Type1Iommu;
        Vfio.Call(container, Vfio.SetIommu, model, $"VFIO_SET_IOMMU({(model == Vfio.Type1v2Iommu ? "TYPE1v2" : "TYPE1")})");
        Results["set_iommu"] = model == Vfio.Type1v2Iommu ? "VFIO_TYPE1v2_IOMMU" : "VFIO_TYPE1_IOMMU";
        foreach (var address in addresses)
        {
            var device = Keep(Vfio.GetDeviceFd(groupFd, address, $"VFIO_GROUP_GET_DEVICE_FD(\"{address}\")"));
            var (deviceFlags, regions, irqs) = Vfio.GetDeviceInfo(device, $"VFIO_DEVICE_GET_INFO on {address}");
            Results[$"device_fd {address}"] = (int)device.DangerousGetHandle();
            Results[$"device_info {address}"] = $"flags={deviceFlags} (pci={(deviceFlags & Vfio.DeviceFlagsPci) != 0}) regions={regions} irqs={irqs}";
            if ((deviceFlags & Vfio.DeviceFlagsPci) == 0)
            {
                throw new VfioCallException($"VFIO_DEVICE_GET_INFO on {address}: not a PCI device (flags {deviceFlags})");
            }
        }
    }

    private SafeFileHandle Keep(SafeFileHandle handle)
    {
        _handles.Add(handle);
        return handle;
    }
}
