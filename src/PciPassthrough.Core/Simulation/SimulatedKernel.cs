using System.Globalization;
using System.Text.Json;
using PciPassthrough.Devices;
using PciPassthrough.Storage;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Simulation;

/// <summary>
/// An <see cref="ISysfs"/> that reacts to writes the way Linux 6.1 does, over a real directory
/// tree (so its state survives a daemon crash and can be inspected with ls and cat). Reads go
/// straight to the tree; writes to the kernel's control files change it:
/// <list type="bullet">
/// <item><c>devices/X/driver_override</c>: a name up to the first newline sets it, a lone newline clears it
/// (reads <c>(null)</c>).</item>
/// <item><c>drivers/D/unbind</c>: the device's <c>driver</c> link and the driver's entry go away; ENODEV when
/// the device is not bound to D.</item>
/// <item><c>drivers/D/bind</c>: ENODEV when D does not match (override set to another driver, or neither
/// override nor id table matches), EBUSY when already bound, the probe's error otherwise.</item>
/// <item><c>drivers_probe</c>: binds the driver named by the override, else the native driver (its id
/// table) or one whose <c>new_id</c> matches; always succeeds for an existing device, bound or not.</item>
/// <item>vfio-pci refuses bridges and devices without an IOMMU group with EINVAL;
/// <c>/dev/vfio/N</c> exists while a function of group N is bound to vfio-pci.</item>
/// <item><c>reset</c> takes "1" (EINVAL otherwise, ENOTTY with every method disabled); <c>reset_method</c>
/// takes a subset of the supported methods, "default", or "" (disable).</item>
/// </list>
/// A device's native driver is the one its <c>driver</c> link names when the kernel first sees it.
/// Faults (<see cref="SimulatedFault"/>) make unbinds hang or crawl, drivers refuse, probes bind
/// nothing, resets fail, and fake processes hold devices.
/// </summary>
public sealed class SimulatedKernel : LinuxSysfs, IDisposable
{
    public const string StateFolder = ".pcipt-sim";

    private readonly Lock _gate = new();
    private readonly string _statePath;
    private readonly SimulatedKernelState _state;
    private readonly Dictionary<PciAddress, List<SimulatedFault>> _faults = [];
    private readonly CancellationTokenSource _disposed = new();
    private readonly ManualResetEventSlim _faultsChanged = new(false);

    public SimulatedKernel(string root, IReadOnlyDictionary<PciAddress, IReadOnlyList<SimulatedFault>>? faults = null)
        : base(root)
    {
        _statePath = System.IO.Path.Combine(Root, StateFolder, "state.json");
        _state = LoadState();
        foreach (var (address, list) in faults ?? new Dictionary<PciAddress, IReadOnlyList<SimulatedFault>>())
        {
            _faults[address] = [.. list];
        }

        lock (_gate)
        {
            RepairTornLinks();
            LearnDevices();
            SyncDevVfio();
            RenderHolders();
            SaveState();
        }
    }

    /// <summary>How many times the device was reset successfully.</summary>
    public int ResetCount(PciAddress address)
    {
        lock (_gate)
        {
            return _state.ResetCounts.GetValueOrDefault(address.ToString());
        }
    }

    /// <summary>The driver whose id table matches the device (what a probe without override binds).</summary>
    public string? NativeDriver(PciAddress address)
    {
        lock (_gate)
        {
            return _state.NativeDrivers.GetValueOrDefault(address.ToString());
        }
    }

    public void AddFault(PciAddress address, SimulatedFault fault)
    {
        lock (_gate)
        {
            if (!_faults.TryGetValue(address, out var list))
            {
                _faults[address] = list = [];
            }

            list.Add(fault);
            RenderHolders();
        }

        SignalFaultsChanged();
    }

    /// <summary>Removes every fault of the device; blocked unbinds of it go ahead.</summary>
    public void ClearFaults(PciAddress address)
    {
        lock (_gate)
        {
            _faults.Remove(address);
            RenderHolders();
        }

        SignalFaultsChanged();
    }

    /// <summary>The fake process exits: its /proc entry goes, and unbinds it blocked go ahead.</summary>
    public void KillHolder(int pid)
    {
        lock (_gate)
        {
            foreach (var list in _faults.Values)
            {
                list.RemoveAll(f => f is SimulatedFault.Holder h && h.Pid == pid);
            }

            RenderHolders();
        }

        SignalFaultsChanged();
    }

    /// <summary>Stops or starts a simulated service: a stopped one holds nothing.</summary>
    public void SetServiceActive(string unit, bool active)
    {
        lock (_gate)
        {
            if (active)
            {
                _state.StoppedServices.Remove(unit);
            }
            else
            {
                _state.StoppedServices.Add(unit);
            }

            SaveState();
            RenderHolders();
        }

        SignalFaultsChanged();
    }

    public bool IsServiceActive(string unit)
    {
        lock (_gate)
        {
            return !_state.StoppedServices.Contains(unit);
        }
    }

    /// <summary>
    /// The hang is over (as when a stuck user finally exits): every <c>unbind_hangs</c> fault is
    /// removed, so unbinds blocked by one finish and later ones do not hang.
    /// </summary>
    public void ReleaseHangs()
    {
        lock (_gate)
        {
            foreach (var list in _faults.Values)
            {
                list.RemoveAll(f => f is SimulatedFault.UnbindHangs);
            }
        }

        SignalFaultsChanged();
    }

    public override void Write(string path, string value)
    {
        SysfsPaths.EnsureSafe(path);
        if (value.Length == 0)
        {
            // sysfs returns 0 for an empty write before any attribute code runs.
            if (!Exists(path))
            {
                throw KernelErrno.Failure(KernelErrno.ENOENT, path);
            }

            return;
        }

        var parts = path.Split('/');
        // parts: "", "sys", "bus", "pci", ...
        if (path == SysfsPaths.DriversProbe)
        {
            DriversProbe(path, value);
        }
        else if (path == "/sys/bus/pci/rescan")
        {
            // Nothing appears or disappears in a simulated host.
        }
        else if (parts.Length == 7 && path.StartsWith(SysfsPaths.PciDrivers + "/", StringComparison.Ordinal))
        {
            DriverControl(path, parts[5], parts[6], value);
        }
        else if (parts.Length == 7 && path.StartsWith(SysfsPaths.PciDevices + "/", StringComparison.Ordinal) &&
                 PciAddress.TryParse(parts[5], out var address) && parts[5] == address.ToString())
        {
            DeviceControl(path, address, parts[6], value);
        }
        else if (parts.Length == 8 && parts[6] == "driver" && PciAddress.TryParse(parts[5], out var bound) &&
                 path.StartsWith(SysfsPaths.PciDevices + "/", StringComparison.Ordinal))
        {
            // devices/X/driver/unbind is the driver's own unbind file reached through the link.
            var driver = CurrentDriver(bound) ?? throw KernelErrno.Failure(KernelErrno.ENOENT, path);
            DriverControl(path, driver, parts[7], value);
        }
        else
        {
            throw Exists(path) ? KernelErrno.Failure(KernelErrno.EACCES, path) : KernelErrno.Failure(KernelErrno.ENOENT, path);
        }
    }

    public void Dispose()
    {
        _disposed.Cancel();
        _faultsChanged.Set();
        _disposed.Dispose();
        _faultsChanged.Dispose();
    }

    private void DeviceControl(string path, PciAddress address, string attribute, string value)
    {
        if (!Exists(SysfsPaths.Device(address)))
        {
            throw KernelErrno.Failure(KernelErrno.ENOENT, path);
        }

        switch (attribute)
        {
            case "driver_override":
                SetDriverOverride(address, value);
                break;
            case "reset":
                Reset(path, address, value);
                break;
            case "reset_method":
                SetResetMethod(path, address, value);
                break;
            default:
                throw Exists(path) ? KernelErrno.Failure(KernelErrno.EACCES, path) : KernelErrno.Failure(KernelErrno.ENOENT, path);
        }
    }

    private void DriverControl(string path, string driver, string file, string value)
    {
        if (!SysfsPaths.IsValidDriverName(driver) || !Exists(SysfsPaths.Driver(driver)))
        {
            throw KernelErrno.Failure(KernelErrno.ENOENT, path);
        }

        switch (file)
        {
            case "unbind":
                Unbind(path, driver, value);
                break;
            case "bind":
                Bind(path, driver, value);
                break;
            case "new_id":
                NewId(path, driver, value);
                break;
            case "remove_id":
                RemoveId(path, driver, value);
                break;
            default:
                throw Exists(path) ? KernelErrno.Failure(KernelErrno.EACCES, path) : KernelErrno.Failure(KernelErrno.ENOENT, path);
        }
    }

    private void SetDriverOverride(PciAddress address, string value)
    {
        if (value.Length == 0)
        {
            return; // a zero-length write never reaches the attribute
        }

        var newline = value.IndexOf('\n', StringComparison.Ordinal);
        var name = newline >= 0 ? value[..newline] : value;
        if (name.Contains('\0', StringComparison.Ordinal))
        {
            name = name[..name.IndexOf('\0', StringComparison.Ordinal)];
        }

        lock (_gate)
        {
            File.WriteAllText(DeviceFile(address, "driver_override"), name.Length == 0 ? "(null)\n" : name + "\n");
        }
    }

    private void Unbind(string path, string driver, string value)
    {
        var address = FindDevice(path, value);
        if (CurrentDriver(address) != driver)
        {
            throw KernelErrno.Failure(KernelErrno.ENODEV, path);
        }

        WaitWhileUnbindBlocked(address);
        lock (_gate)
        {
            // The device may have been unbound by another writer while this one waited.
            if (CurrentDriver(address) != driver)
            {
                throw KernelErrno.Failure(KernelErrno.ENODEV, path);
            }

            Detach(address, driver);
        }
    }

    private void Bind(string path, string driver, string value)
    {
        var address = FindDevice(path, value);
        lock (_gate)
        {
            if (!Matches(driver, address))
            {
                throw KernelErrno.Failure(KernelErrno.ENODEV, path);
            }

            if (CurrentDriver(address) is not null)
            {
                throw KernelErrno.Failure(KernelErrno.EBUSY, path);
            }

            if (ProbeError(driver, address) is { } errno)
            {
                throw KernelErrno.Failure(errno, path);
            }

            Attach(address, driver);
        }
    }

    private void DriversProbe(string path, string value)
    {
        var address = FindDevice(path, value);
        lock (_gate)
        {
            if (CurrentDriver(address) is not null || HasFault<SimulatedFault.ProbeBindsNothing>(address))
            {
                return;
            }

            foreach (var driver in Candidates(address))
            {
                // As in the kernel, a failing probe is not reported to the writer: the next
                // matching driver is tried, and the write succeeds whatever happens.
                if (ProbeError(driver, address) is null)
                {
                    Attach(address, driver);
                    return;
                }
            }
        }
    }

    private void NewId(string path, string driver, string value)
    {
        var fields = value.Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length < 2 || !PciId.TryParse(fields[0], out var vendor) || !PciId.TryParse(fields[1], out var device))
        {
            throw KernelErrno.Failure(KernelErrno.EINVAL, path);
        }

        lock (_gate)
        {
            var id = $"{PciId.Format(vendor)} {PciId.Format(device)}";
            if (!_state.DynamicIds.TryGetValue(driver, out var ids))
            {
                _state.DynamicIds[driver] = ids = [];
            }

            // The kernel refuses an id the driver already matches (dynamic or in its own table).
            if (ids.Contains(id) || AllDevices().Any(a => IdOf(a) == id && _state.NativeDrivers.GetValueOrDefault(a.ToString()) == driver))
            {
                throw KernelErrno.Failure(KernelErrno.EEXIST, path);
            }

            ids.Add(id);
            SaveState();
            // Adding an id makes the kernel try the driver on every unbound device it now matches.
            foreach (var address in AllDevices())
            {
                if (CurrentDriver(address) is null && Matches(driver, address) && ProbeError(driver, address) is null)
                {
                    Attach(address, driver);
                }
            }
        }
    }

    private void RemoveId(string path, string driver, string value)
    {
        var fields = value.Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (fields.Length < 2 || !PciId.TryParse(fields[0], out var vendor) || !PciId.TryParse(fields[1], out var device))
        {
            throw KernelErrno.Failure(KernelErrno.EINVAL, path);
        }

        lock (_gate)
        {
            var id = $"{PciId.Format(vendor)} {PciId.Format(device)}";
            if (!_state.DynamicIds.TryGetValue(driver, out var ids) || !ids.Remove(id))
            {
                throw KernelErrno.Failure(KernelErrno.ENODEV, path);
            }

            SaveState();
        }
    }

    private void Reset(string path, PciAddress address, string value)
    {
        if (!File.Exists(DeviceFile(address, "reset")))
        {
            throw KernelErrno.Failure(KernelErrno.ENOENT, path);
        }

        if (ParseUnsigned(value) != 1)
        {
            throw KernelErrno.Failure(KernelErrno.EINVAL, path);
        }

        lock (_gate)
        {
            var methods = (ReadText(SysfsPaths.DeviceAttribute(address, DeviceAttribute.ResetMethod)) ?? "").Trim();
            if (methods.Length == 0)
            {
                throw KernelErrno.Failure(KernelErrno.ENOTTY, path);
            }

            if (HasFault<SimulatedFault.ResetFails>(address))
            {
                throw KernelErrno.Failure(KernelErrno.EIO, path);
            }

            var key = address.ToString();
            _state.ResetCounts[key] = _state.ResetCounts.GetValueOrDefault(key) + 1;
            SaveState();
        }
    }

    /// <summary>kstrtoul(buf, 0): an optional '+', then 0x-hex, 0-octal or decimal, one trailing newline; else null.</summary>
    private static ulong? ParseUnsigned(string value)
    {
        var text = value.EndsWith('\n') ? value[..^1] : value;
        if (text.StartsWith('+'))
        {
            text = text[1..];
        }

        var (digits, radix) = text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? (text[2..], 16)
            : text.Length > 1 && text[0] == '0' ? (text[1..], 8)
            : (text, 10);
        if (digits.Length == 0)
        {
            return null;
        }

        ulong result = 0;
        foreach (var c in digits)
        {
            var d = char.IsAsciiDigit(c) ? c - '0' : char.IsAsciiHexDigit(c) ? char.ToLowerInvariant(c) - 'a' + 10 : 99;
            if (d >= radix)
            {
                return null;
            }

            result = checked((result * (ulong)radix) + (ulong)d);
        }

        return result;
    }

    private void SetResetMethod(string path, PciAddress address, string value)
    {
        lock (_gate)
        {
            var supported = _state.SupportedResetMethods.GetValueOrDefault(address.ToString()) ?? [];
            var requested = value.Trim();
            string content;
            if (requested.Length == 0)
            {
                content = "";
            }
            else if (requested == "default")
            {
                content = string.Join(' ', supported);
            }
            else
            {
                var names = requested.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                // Linux refuses an unknown name but takes one listed twice (and shows it twice).
                if (names.Any(n => !supported.Contains(n)))
                {
                    throw KernelErrno.Failure(KernelErrno.EINVAL, path);
                }

                content = string.Join(' ', names);
            }

            File.WriteAllText(DeviceFile(address, "reset_method"), content.Length == 0 ? "\n" : content + "\n");
        }
    }

    private void WaitWhileUnbindBlocked(PciAddress address)
    {
        var deadline = DateTime.UtcNow;
        List<SimulatedFault> faults;
        lock (_gate)
        {
            faults = [.. _faults.GetValueOrDefault(address) ?? []];
        }

        foreach (var delay in faults.OfType<SimulatedFault.UnbindDelay>())
        {
            deadline += delay.Delay;
        }

        while (!_disposed.IsCancellationRequested)
        {
            bool blocked;
            lock (_gate)
            {
                var current = _faults.GetValueOrDefault(address) ?? [];
                blocked = current.OfType<SimulatedFault.UnbindHangs>().Any() ||
                    (WaitsForUsers(CurrentDriver(address)) && current.Any(f =>
                        f is SimulatedFault.Holder || (f is SimulatedFault.Service s && !_state.StoppedServices.Contains(s.Unit))));
            }

            var wait = deadline - DateTime.UtcNow;
            if (!blocked && wait <= TimeSpan.Zero)
            {
                return;
            }

            _faultsChanged.Reset();
            _faultsChanged.Wait(blocked ? TimeSpan.FromMilliseconds(200) : wait, CancellationToken.None);
        }

        throw new IOException("The simulated kernel was shut down while an unbind was blocked", KernelErrno.EIO);
    }

    /// <summary>
    /// Drivers whose remove waits until every user has closed the device (vfio-pci waits for the
    /// VMM to release it, NVIDIA's for /dev/nvidia* to be closed); others tear the device down
    /// under their users.
    /// </summary>
    private static bool WaitsForUsers(string? driver) => driver is SysfsPaths.VfioPciDriver or "nvidia";

    private void SignalFaultsChanged()
    {
        if (!_disposed.IsCancellationRequested)
        {
            _faultsChanged.Set();
        }
    }

    /// <summary>The drivers a probe tries, in order: the override alone, else the native driver then new_id matches.</summary>
    private List<string> Candidates(PciAddress address)
    {
        var candidates = new List<string>();
        if (DriverOverride(address) is { } forced)
        {
            // An override may be any text; only a loaded driver of exactly that name matches.
            if (SysfsPaths.IsValidDriverName(forced) && Exists(SysfsPaths.Driver(forced)))
            {
                candidates.Add(forced);
            }

            return candidates;
        }

        // Linux tries drivers in the order they registered. Drivers a new_id points at the device
        // are tried first here: a driver given an id by hand (vfio-pci) is the one meant to
        // bind, and that is what the kernel did in the real-kernel trace (vfio-pci loaded first).
        foreach (var driver in _state.DynamicIds.Keys.Order(StringComparer.Ordinal))
        {
            if (Matches(driver, address) && Exists(SysfsPaths.Driver(driver)) &&
                _state.DynamicIds[driver].Contains(IdOf(address) ?? ""))
            {
                candidates.Add(driver);
            }
        }

        if (_state.NativeDrivers.GetValueOrDefault(address.ToString()) is { } native && Exists(SysfsPaths.Driver(native)) &&
            !candidates.Contains(native))
        {
            candidates.Add(native);
        }

        return candidates;
    }

    /// <summary>pci_match_device: the override decides when set; otherwise dynamic ids, then the id table.</summary>
    private bool Matches(string driver, PciAddress address)
    {
        if (DriverOverride(address) is { } forced)
        {
            return forced == driver;
        }

        if (_state.NativeDrivers.GetValueOrDefault(address.ToString()) == driver)
        {
            return true;
        }

        return _state.DynamicIds.TryGetValue(driver, out var ids) && IdOf(address) is { } id && ids.Contains(id);
    }

    /// <summary>The errno a driver's probe fails with, or null when it binds.</summary>
    private int? ProbeError(string driver, PciAddress address)
    {
        if ((_faults.GetValueOrDefault(address) ?? []).OfType<SimulatedFault.BindRefused>().Any(f => f.Driver == driver))
        {
            return KernelErrno.EBUSY;
        }

        if (driver == SysfsPaths.VfioPciDriver)
        {
            // vfio-pci takes only normal (type 0) functions, and only with an IOMMU group.
            var isBridge = PciClassCode.TryParseSysfs(ReadText(SysfsPaths.DeviceAttribute(address, DeviceAttribute.Class)), out var cls) &&
                cls.Value >> 8 == 0x0604;
            if (isBridge || ReadLink(SysfsPaths.DeviceAttribute(address, DeviceAttribute.IommuGroup)) is null)
            {
                return KernelErrno.EINVAL;
            }
        }

        return null;
    }

    private void Attach(PciAddress address, string driver)
    {
        var deviceDir = RealDeviceDirectory(address);
        // Driver's entry first, the device's link last: the device's "driver" link is the truth,
        // and a torn pair is repaired from it at start-up.
        MakeLink(Full(SysfsPaths.Driver(driver) + "/" + address), deviceDir);
        MakeLink(System.IO.Path.Combine(deviceDir, "driver"), Full(SysfsPaths.Driver(driver)));
        if (driver == _state.NativeDrivers.GetValueOrDefault(address.ToString()))
        {
            foreach (var (relative, content) in _state.DriverTraces.GetValueOrDefault(address.ToString()) ?? [])
            {
                var file = System.IO.Path.Combine(Root, relative);
                Directory.CreateDirectory(System.IO.Path.GetDirectoryName(file)!);
                File.WriteAllText(file, content);
            }
        }

        SyncDevVfio();
        RenderHolders();
    }

    private void Detach(PciAddress address, string driver)
    {
        var deviceDir = RealDeviceDirectory(address);
        File.Delete(System.IO.Path.Combine(deviceDir, "driver"));
        File.Delete(Full(SysfsPaths.Driver(driver) + "/" + address));
        // The driver's class devices and /proc entries go with it.
        foreach (var relative in (_state.DriverTraces.GetValueOrDefault(address.ToString()) ?? []).Keys)
        {
            var file = System.IO.Path.Combine(Root, relative);
            if (File.Exists(file))
            {
                File.Delete(file);
                RemoveEmptyParents(System.IO.Path.GetDirectoryName(file)!, deviceDir);
            }
        }

        SyncDevVfio();
        RenderHolders();
    }

    /// <summary>Removes now-empty directories from <paramref name="directory"/> up to (not including) the device or /proc/driver.</summary>
    private void RemoveEmptyParents(string directory, string deviceDir)
    {
        var stop = System.IO.Path.Combine(Root, "proc", "driver");
        while (directory.Length > Root.Length && directory != deviceDir && directory != stop &&
               Directory.Exists(directory) && !Directory.EnumerateFileSystemEntries(directory).Any())
        {
            Directory.Delete(directory);
            directory = System.IO.Path.GetDirectoryName(directory)!;
        }
    }

    /// <summary><c>/dev/vfio/N</c> for every group with a function bound to vfio-pci, and no other.</summary>
    private void SyncDevVfio()
    {
        var devVfio = Full(SysfsPaths.DevVfio);
        if (!Directory.Exists(devVfio))
        {
            return;
        }

        var wanted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var address in AllDevices())
        {
            if (CurrentDriver(address) == SysfsPaths.VfioPciDriver && GroupOf(address) is { } group)
            {
                wanted.Add(group.ToString(CultureInfo.InvariantCulture));
            }
        }

        foreach (var entry in Directory.EnumerateFileSystemEntries(devVfio).Select(System.IO.Path.GetFileName).OfType<string>())
        {
            if (entry != "vfio" && !wanted.Contains(entry))
            {
                File.Delete(System.IO.Path.Combine(devVfio, entry));
            }
        }

        foreach (var group in wanted)
        {
            var node = System.IO.Path.Combine(devVfio, group);
            if (!File.Exists(node))
            {
                File.WriteAllText(node, "");
            }
        }
    }

    /// <summary>Fake /proc entries for holder processes, each fd pointing at what the process holds now.</summary>
    private void RenderHolders()
    {
        var proc = Full(SysfsPaths.Proc);
        Directory.CreateDirectory(proc);
        var marker = ".simulated";
        var wanted = new Dictionary<int, (string Command, string? Unit, List<string> Targets)>();
        foreach (var (address, faults) in _faults)
        {
            foreach (var fault in faults)
            {
                var (pid, command, unit) = fault switch
                {
                    SimulatedFault.Holder h => (h.Pid, h.Command, (string?)null),
                    SimulatedFault.Service s when !_state.StoppedServices.Contains(s.Unit) =>
                        (ServicePid(s.Unit), s.Unit[..^".service".Length], s.Unit),
                    _ => (0, "", null),
                };
                if (pid == 0)
                {
                    continue;
                }

                if (!wanted.TryGetValue(pid, out var entry))
                {
                    wanted[pid] = entry = (command, unit, []);
                }

                // A function without a device node is still held (a kernel-internal user): the
                // process shows no fd for it, and unbinds still wait for it to exit. A service
                // daemon holds driver nodes only: it lets go of a device that leaves its driver.
                if (HeldNode(address, driverNodesOnly: unit is not null) is { } node)
                {
                    entry.Targets.Add(node);
                }
            }
        }

        foreach (var dir in Directory.EnumerateDirectories(proc))
        {
            if (File.Exists(System.IO.Path.Combine(dir, marker)) &&
                (!int.TryParse(System.IO.Path.GetFileName(dir), out var pid) || !wanted.ContainsKey(pid)))
            {
                Directory.Delete(dir, recursive: true);
            }
        }

        foreach (var (pid, (command, unit, targets)) in wanted)
        {
            var dir = System.IO.Path.Combine(proc, pid.ToString(CultureInfo.InvariantCulture));
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }

            Directory.CreateDirectory(System.IO.Path.Combine(dir, "fd"));
            File.WriteAllText(System.IO.Path.Combine(dir, marker), "");
            File.WriteAllText(System.IO.Path.Combine(dir, "comm"), command + "\n");
            File.WriteAllText(System.IO.Path.Combine(dir, "cmdline"), command + "\0");
            File.WriteAllText(System.IO.Path.Combine(dir, "stat"), StatLine(pid, command));
            File.WriteAllText(System.IO.Path.Combine(dir, "cgroup"),
                unit is null ? "0::/user.slice/user-0.slice/session-1.scope\n" : $"0::/system.slice/{unit}\n");
            var fd = 3;
            foreach (var target in targets.Distinct(StringComparer.Ordinal))
            {
                File.CreateSymbolicLink(System.IO.Path.Combine(dir, "fd", fd++.ToString(CultureInfo.InvariantCulture)), target);
            }
        }
    }

    /// <summary>What a holder of the device has open: /dev/vfio/N while on vfio-pci, else the driver's node.</summary>
    private string? HeldNode(PciAddress address, bool driverNodesOnly = false)
    {
        if (CurrentDriver(address) == SysfsPaths.VfioPciDriver)
        {
            return !driverNodesOnly && GroupOf(address) is { } group ? SysfsPaths.VfioGroup(group) : null;
        }

        var nodes = Vfio.DeviceNodes.For(this, address);
        return nodes.Count > 0 ? nodes[0] : null;
    }

    /// <summary>A pid for a simulated service, the same in every process (string hashes are randomized per process).</summary>
    private static int ServicePid(string unit) => 20_000 + (int)(unit.Aggregate(17u, (h, c) => unchecked((h * 31) + c)) % 10_000);

    /// <summary>A /proc/PID/stat line; field 22 (start time in clock ticks) is fixed per pid.</summary>
    private static string StatLine(int pid, string command)
    {
        var fields = new string[52];
        fields[0] = pid.ToString(CultureInfo.InvariantCulture);
        fields[1] = $"({command})";
        fields[2] = "S";
        for (var i = 3; i < fields.Length; i++)
        {
            fields[i] = "0";
        }

        fields[3] = "1";
        fields[21] = (1000L + pid).ToString(CultureInfo.InvariantCulture);
        return string.Join(' ', fields) + "\n";
    }

    private void LearnDevices()
    {
        foreach (var address in AllDevices())
        {
            var key = address.ToString();
            if (!_state.NativeDrivers.ContainsKey(key))
            {
                var driver = CurrentDriver(address);
                _state.NativeDrivers[key] = driver == SysfsPaths.VfioPciDriver ? null : driver;
            }

            if (!_state.DriverTraces.ContainsKey(key))
            {
                _state.DriverTraces[key] = CaptureTraces(address);
            }

            if (!_state.SupportedResetMethods.ContainsKey(key))
            {
                var methods = ReadText(SysfsPaths.DeviceAttribute(address, DeviceAttribute.ResetMethod)) ?? "";
                _state.SupportedResetMethods[key] = [.. methods.Split(' ', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)];
            }
        }
    }

    /// <summary>The files a bound native driver shows for the device, relative to the root.</summary>
    private Dictionary<string, string> CaptureTraces(PciAddress address)
    {
        var traces = new Dictionary<string, string>(StringComparer.Ordinal);
        if (CurrentDriver(address) is null)
        {
            return traces;
        }

        var deviceDir = RealDeviceDirectory(address);
        foreach (var classDir in new[] { "drm", "nvme" })
        {
            var dir = System.IO.Path.Combine(deviceDir, classDir);
            if (Directory.Exists(dir))
            {
                foreach (var file in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
                {
                    traces[System.IO.Path.GetRelativePath(Root, file)] = File.ReadAllText(file);
                }
            }
        }

        var nvidia = System.IO.Path.Combine(Root, "proc", "driver", "nvidia", "gpus", address.ToString(), "information");
        if (File.Exists(nvidia))
        {
            traces[System.IO.Path.GetRelativePath(Root, nvidia)] = File.ReadAllText(nvidia);
        }

        return traces;
    }

    /// <summary>Removes a driver's entry whose device does not link back (a crash between the two link writes).</summary>
    private void RepairTornLinks()
    {
        foreach (var driver in ListDirectory(SysfsPaths.PciDrivers))
        {
            if (!SysfsPaths.IsValidDriverName(driver))
            {
                continue;
            }

            foreach (var entry in ListDirectory(SysfsPaths.Driver(driver)))
            {
                if (PciAddress.TryParse(entry, out var address) && entry == address.ToString() && CurrentDriver(address) != driver)
                {
                    File.Delete(Full(SysfsPaths.Driver(driver) + "/" + entry));
                }
            }
        }
    }

    private IEnumerable<PciAddress> AllDevices() =>
        ListDirectory(SysfsPaths.PciDevices)
            .Select(e => PciAddress.TryParse(e, out var a) && e == a.ToString() ? a : (PciAddress?)null)
            .OfType<PciAddress>()
            .Order();

    private PciAddress FindDevice(string path, string value)
    {
        // bus_find_device_by_name: the exact device name, a trailing newline allowed.
        var name = value.EndsWith('\n') ? value[..^1] : value;
        if (!PciAddress.TryParse(name, out var address) || name != address.ToString() || !Exists(SysfsPaths.Device(address)))
        {
            throw KernelErrno.Failure(KernelErrno.ENODEV, path);
        }

        return address;
    }

    private string? CurrentDriver(PciAddress address) =>
        ReadLink(SysfsPaths.DeviceAttribute(address, DeviceAttribute.Driver)) is { } link ? SysfsPaths.LastSegment(link) : null;

    private string? DriverOverride(PciAddress address)
    {
        // Compared exactly, as the kernel does: only the newline the show adds comes off.
        var value = ReadRaw(address, "driver_override").TrimEnd('\n');
        return value.Length == 0 || value == "(null)" ? null : value;
    }

    /// <summary>"vvvv dddd" of a device, as <c>new_id</c> takes it, or null when unreadable.</summary>
    private string? IdOf(PciAddress address) =>
        PciId.TryParse(Read(address, "vendor"), out var vendor) && PciId.TryParse(Read(address, "device"), out var device)
            ? $"{PciId.Format(vendor)} {PciId.Format(device)}"
            : null;

    private int? GroupOf(PciAddress address) =>
        ReadLink(SysfsPaths.DeviceAttribute(address, DeviceAttribute.IommuGroup)) is { } link &&
        int.TryParse(SysfsPaths.LastSegment(link), NumberStyles.None, CultureInfo.InvariantCulture, out var group)
            ? group
            : null;

    private bool HasFault<T>(PciAddress address)
        where T : SimulatedFault =>
        (_faults.GetValueOrDefault(address) ?? []).OfType<T>().Any();

    private string Read(PciAddress address, string file)
    {
        var path = System.IO.Path.Combine(RealDeviceDirectory(address), file);
        return File.Exists(path) ? File.ReadAllText(path).Trim() : "";
    }

    private string ReadRaw(PciAddress address, string file)
    {
        var path = System.IO.Path.Combine(RealDeviceDirectory(address), file);
        return File.Exists(path) ? File.ReadAllText(path) : "";
    }

    private string DeviceFile(PciAddress address, string file) => System.IO.Path.Combine(RealDeviceDirectory(address), file);

    private string RealDeviceDirectory(PciAddress address)
    {
        var link = Full(SysfsPaths.Device(address));
        var target = new FileInfo(link).LinkTarget ?? throw KernelErrno.Failure(KernelErrno.ENODEV, SysfsPaths.Device(address));
        return System.IO.Path.GetFullPath(System.IO.Path.Combine(System.IO.Path.GetDirectoryName(link)!, target));
    }

    private string Full(string hostPath) => Resolve(hostPath);

    private static void MakeLink(string linkPath, string target)
    {
        if (new FileInfo(linkPath).LinkTarget is not null || File.Exists(linkPath))
        {
            File.Delete(linkPath);
        }

        File.CreateSymbolicLink(linkPath, System.IO.Path.GetRelativePath(System.IO.Path.GetDirectoryName(linkPath)!, target));
    }

    private SimulatedKernelState LoadState()
    {
        if (!File.Exists(_statePath))
        {
            return new SimulatedKernelState();
        }

        return JsonSerializer.Deserialize(File.ReadAllBytes(_statePath), SimulationJsonContext.Default.SimulatedKernelState)
            ?? new SimulatedKernelState();
    }

    private void SaveState()
    {
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(_statePath)!);
        AtomicFile.WriteAllBytes(_statePath, JsonSerializer.SerializeToUtf8Bytes(_state, SimulationJsonContext.Default.SimulatedKernelState));
    }
}
