using System.Globalization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using PciPassthrough.Devices;
using PciPassthrough.Discovery;
using PciPassthrough.Errors;
using PciPassthrough.Registry;
using PciPassthrough.Sysfs;

namespace PciPassthrough.Vfio;

/// <summary>
/// Moves PCI functions to and from vfio-pci the way the kernel expects, over <see cref="ISysfs"/>:
/// bind is <c>driver_override</c> = vfio-pci, unbind from the current driver, <c>drivers_probe</c>, then
/// verify that <c>driver</c> links to vfio-pci (a probe reports success even when nothing bound)
/// and that <c>/dev/vfio/N</c> exists. Restore is the reverse with the recorded driver and
/// override, falling back to an explicit <c>drivers/&lt;name&gt;/bind</c> when the probe picks another
/// driver or none. Every operation is first a plan (what a dry run shows), then that plan run step
/// by step, each step journaled before it is written.
/// </summary>
/// <remarks>
/// This class holds no locks and writes no records: <see cref="DeviceManager"/> serializes
/// operations per IOMMU group, checks preconditions and keeps the records.
/// </remarks>
public sealed partial class SysfsVfioBinder(
    ISysfs sysfs,
    IPciDiscovery discovery,
    BoundedKernelWriter writer,
    IOptions<VfioOptions> options,
    TimeProvider time,
    ILogger<SysfsVfioBinder> logger)
{
    public const string VfioPci = SysfsPaths.VfioPciDriver;

    /// <summary>The last step of a restore: the original override, once the original driver is back.</summary>
    public const string RestoreOverrideAction = "restore_override";

    /// <summary>The seed's IsVFIOAvailable, with what is missing.</summary>
    public VfioAvailability CheckVfioAvailable() => new(
        sysfs.Exists(SysfsPaths.Driver(VfioPci)),
        sysfs.Exists(SysfsPaths.VfioContainer),
        sysfs.ListDirectory(SysfsPaths.IommuGroups).Count > 0);

    public bool IsVfioAvailable() => CheckVfioAvailable().Available;

    public bool IsDeviceBoundToVfio(PciAddress address) => discovery.GetCurrentDriver(address) == VfioPci;

    /// <summary>Whether a write about the function is still stuck in the kernel (see <see cref="BoundedKernelWriter.IsStuck"/>).</summary>
    public bool IsStuck(PciAddress address) => writer.IsStuck(address);

    /// <summary><c>/dev/vfio/N</c> of the device's group when it exists (the device is usable by a VMM), else null.</summary>
    public string? GetVfioGroupPath(PciAddress address) =>
        discovery.GetIommuGroup(address) is >= 0 and var group && sysfs.Exists(SysfsPaths.VfioGroup(group))
            ? SysfsPaths.VfioGroup(group)
            : null;

    /// <summary>
    /// The functions of the device's IOMMU group that keep it from being passed through: any
    /// endpoint bound to a host driver other than vfio-pci that is not in <paramref name="allowed"/>.
    /// Bridges do not count (the kernel lets a group with bridges be used).
    /// </summary>
    public IReadOnlyList<BlockingDevice> FindGroupBlockers(PciAddress address, IReadOnlyCollection<PciAddress> allowed)
    {
        var group = discovery.GetIommuGroup(address) ?? -1;
        var blockers = new List<BlockingDevice>();
        if (group < 0)
        {
            return blockers;
        }

        foreach (var member in discovery.GetIommuGroupDevices(group))
        {
            if (member == address || discovery.GetDeviceInfo(member) is not { } info || info.IsBridge)
            {
                continue;
            }

            // The display the host booted on is its console: never taken along with a group
            // (binding it explicitly, as the device asked for, stays possible).
            if (info.CurrentDriver is { } consoleDriver && consoleDriver != VfioPci &&
                sysfs.ReadText(SysfsPaths.DeviceAttribute(member, DeviceAttribute.BootVga))?.Trim() == "1")
            {
                blockers.Add(new BlockingDevice(member.ToString(), consoleDriver, info.ClassCode.ToString(),
                    $"the host's boot display (boot_vga) on {consoleDriver}: giving it up would take the host console"));
                continue;
            }

            if (allowed.Contains(member))
            {
                continue;
            }

            if (info.CurrentDriver is { } driver && driver != VfioPci)
            {
                blockers.Add(new BlockingDevice(member.ToString(), driver, info.ClassCode.ToString(),
                    $"bound to host driver {driver}; the whole IOMMU group must be given up (bind with ?group=true, or unbind it first)"));
            }
        }

        return blockers;
    }

    /// <summary>The seed's CheckIOMMUGroupSafe: throws <c>iommu_group_conflict</c> naming the blockers.</summary>
    public void CheckIommuGroupSafe(PciAddress address, IReadOnlyCollection<PciAddress> allowed)
    {
        var blockers = FindGroupBlockers(address, allowed);
        if (blockers.Count > 0)
        {
            throw VfioErrors.GroupConflict(address, blockers);
        }
    }

    /// <summary>
    /// Processes holding the functions: their <c>/dev/vfio/N</c> while on vfio-pci, their driver's
    /// nodes (/dev/nvidia*, /dev/dri/*, /dev/nvme*) otherwise. Read from /proc/PID/fd.
    /// </summary>
    public IReadOnlyList<DeviceHolder> FindHolders(IEnumerable<PciAddress> functions)
    {
        var nodes = new HashSet<string>(StringComparer.Ordinal);
        foreach (var function in functions)
        {
            // The group's node whenever it exists, whatever the driver link says: while vfio-pci's
            // remove waits for the VMM, Linux has already dropped the link but keeps /dev/vfio/N,
            // and the VMM holding it is exactly who the caller needs to hear about.
            if (discovery.GetIommuGroup(function) is >= 0 and var group && sysfs.Exists(SysfsPaths.VfioGroup(group)))
            {
                nodes.Add(SysfsPaths.VfioGroup(group));
            }

            if (!IsDeviceBoundToVfio(function))
            {
                nodes.UnionWith(DeviceNodes.For(sysfs, function));
            }
        }

        return nodes.Count == 0 ? [] : ProcessScanner.FindHolders(sysfs, nodes);
    }

    /// <summary>The steps that move <paramref name="functions"/> to vfio-pci (functions already there have none).</summary>
    public IReadOnlyList<KernelStep> PlanBind(IReadOnlyList<PciAddress> functions)
    {
        var steps = new List<KernelStep>();
        foreach (var function in functions)
        {
            var driver = discovery.GetCurrentDriver(function);
            if (driver == VfioPci)
            {
                continue;
            }

            var a = function.ToString();
            Add(steps, a, "set_override", SysfsPaths.DeviceAttribute(function, DeviceAttribute.DriverOverride), VfioPci,
                $"set driver_override of {a} to {VfioPci}");
            if (driver is not null)
            {
                Add(steps, a, "unbind", SysfsPaths.DriverUnbind(driver), a, $"unbind {a} from {driver}");
            }

            Add(steps, a, "probe", SysfsPaths.DriversProbe, a, $"probe {a} (binds {VfioPci} through the override)");
        }

        return steps;
    }

    /// <summary>
    /// The steps that return <paramref name="functions"/> to what they had before the daemon bound
    /// them: clear the override, unbind, probe (expecting the original driver), and only then put
    /// back an original override — written first, an override naming another driver would make
    /// the probe bind that driver instead.
    /// </summary>
    public IReadOnlyList<KernelStep> PlanRestore(IReadOnlyList<BoundFunction> functions)
    {
        var steps = new List<KernelStep>();
        foreach (var function in functions)
        {
            var driver = discovery.GetCurrentDriver(function.PciAddress);
            var a = function.PciAddress.ToString();
            if (IsRestored(function, driver))
            {
                continue;
            }

            var overridePath = SysfsPaths.DeviceAttribute(function.PciAddress, DeviceAttribute.DriverOverride);
            var driverBack = function.OriginalUnknown ? driver != VfioPci : driver == function.OriginalDriver;
            if (!driverBack)
            {
                if (ReadOverride(function.PciAddress) is not null)
                {
                    Add(steps, a, "set_override", overridePath, "\n", $"clear driver_override of {a}");
                }

                if (driver is not null)
                {
                    Add(steps, a, "unbind", SysfsPaths.DriverUnbind(driver), a, $"unbind {a} from {driver}");
                }

                if (function.OriginalDriver is { } original)
                {
                    Add(steps, a, "probe", SysfsPaths.DriversProbe, a, $"probe {a} (expects {original})");
                }
                else if (function.OriginalUnknown)
                {
                    Add(steps, a, "probe", SysfsPaths.DriversProbe, a, $"probe {a} (the kernel picks its driver)");
                }
            }

            if (function.OriginalDriverOverride is { } o)
            {
                Add(steps, a, RestoreOverrideAction, overridePath, o, $"restore driver_override of {a} to {o}");
            }
            else if (driverBack)
            {
                Add(steps, a, "set_override", overridePath, "\n", $"clear driver_override of {a}");
            }
        }

        return steps;
    }

    /// <summary>
    /// Runs a bind plan and verifies each function ends on vfio-pci and the group's
    /// <c>/dev/vfio/N</c> exists. Throws <see cref="VfioStepException"/> at the first failure
    /// (the caller rolls back), <see cref="KernelWriteTimeoutException"/> when a write hangs.
    /// </summary>
    public async Task BindAsync(IReadOnlyList<PciAddress> functions, IStepJournal journal, CancellationToken cancellationToken)
    {
        foreach (var step in PlanBind(functions))
        {
            await RunAsync(step, journal, cancellationToken);
            if (step.Action == "probe")
            {
                await EnsureDriverAsync(PciAddress.Parse(step.PciAddress), VfioPci, journal, cancellationToken);
            }
        }

        foreach (var function in functions)
        {
            if (discovery.GetCurrentDriver(function) != VfioPci)
            {
                throw new VfioStepException(function, "verify", $"{function} is not bound to {VfioPci}");
            }
        }

        if (functions.Count > 0 && discovery.GetIommuGroup(functions[0]) is >= 0 and var group &&
            !await PollAsync(() => sysfs.Exists(SysfsPaths.VfioGroup(group)), cancellationToken))
        {
            throw new VfioStepException(functions[0], "verify", $"{SysfsPaths.VfioGroup(group)} did not appear");
        }
    }

    /// <summary>
    /// Returns each function to its recorded driver and override, and reports per function whether
    /// that worked. Kernel refusals do not stop the others; a hanging write does.
    /// </summary>
    public async Task<IReadOnlyList<RestoreOutcome>> RestoreAsync(IReadOnlyList<BoundFunction> functions, IStepJournal journal,
        CancellationToken cancellationToken)
    {
        var outcomes = new List<RestoreOutcome>();
        foreach (var function in functions)
        {
            string? problem = null;
            try
            {
                var driverEnsured = false;
                foreach (var step in PlanRestore([function]))
                {
                    if (step.Action == RestoreOverrideAction && function.OriginalDriver is { } original)
                    {
                        await EnsureDriverAsync(function.PciAddress, original, journal, cancellationToken);
                        driverEnsured = true;
                    }

                    await RunAsync(step, journal, cancellationToken);
                }

                if (!driverEnsured && function.OriginalDriver is { } expected)
                {
                    await EnsureDriverAsync(function.PciAddress, expected, journal, cancellationToken);
                }
            }
            catch (VfioStepException e)
            {
                problem = e.Message;
            }

            var actual = discovery.GetCurrentDriver(function.PciAddress);
            var restored = IsRestored(function, actual);
            if (!restored)
            {
                problem ??= $"{function.PciAddress} is on {actual ?? "no driver"}, expected {function.OriginalDriver ?? "no driver"}";
                LogNotRestored(logger, function.PciAddress, function.OriginalDriver, actual, problem);
            }

            outcomes.Add(new RestoreOutcome(function.PciAddress, function.OriginalDriver, actual, restored, restored ? null : problem));
        }

        return outcomes;
    }

    /// <summary>
    /// Checks that the function can be reset (with <paramref name="method"/> when given) and
    /// returns its <c>reset_method</c> now, to restore after a reset with a chosen method.
    /// </summary>
    public string? CheckResetMethod(PciAddress address, string? method)
    {
        if (!sysfs.Exists(SysfsPaths.DeviceAttribute(address, DeviceAttribute.Reset)))
        {
            throw new PassthroughException(ErrorCodes.ResetUnsupported,
                $"{address} has no reset method the kernel can use (no reset attribute); nothing was done");
        }

        var current = sysfs.ReadText(SysfsPaths.DeviceAttribute(address, DeviceAttribute.ResetMethod))?.Trim();
        if (method is not null)
        {
            var supported = (current ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (!supported.Contains(method))
            {
                throw new PassthroughException(ErrorCodes.ValidationFailed,
                    $"Reset method '{method}' is not available for {address} (available: {string.Join(", ", supported)})",
                    new Dictionary<string, object?> { ["errors"] = new Dictionary<string, string[]> { ["method"] = ["not available for this device"] } });
            }
        }

        return current;
    }

    /// <summary>Resets a function through the kernel's <c>reset</c>, with <paramref name="method"/> selected for this reset only.</summary>
    public async Task ResetAsync(PciAddress address, string? method, IStepJournal journal, CancellationToken cancellationToken)
    {
        var a = address.ToString();
        var previous = CheckResetMethod(address, method);
        var methodPath = SysfsPaths.DeviceAttribute(address, DeviceAttribute.ResetMethod);
        if (method is not null)
        {
            await RunAsync(new KernelStep(0, a, "set_reset_method", methodPath, method, $"select reset method {method} for {a}"), journal, cancellationToken);
        }

        try
        {
            await RunAsync(new KernelStep(0, a, "reset", SysfsPaths.DeviceAttribute(address, DeviceAttribute.Reset), "1", $"reset {a}"),
                journal, cancellationToken);
        }
        finally
        {
            if (method is not null && !string.IsNullOrEmpty(previous))
            {
                await RestoreResetMethodAsync(address, previous, journal, cancellationToken);
            }
        }
    }

    /// <summary>Puts back the reset methods a reset with a chosen method replaced.</summary>
    public Task RestoreResetMethodAsync(PciAddress address, string methods, IStepJournal journal, CancellationToken cancellationToken) =>
        RunAsync(new KernelStep(0, address.ToString(), "set_reset_method", SysfsPaths.DeviceAttribute(address, DeviceAttribute.ResetMethod),
            methods, $"restore reset methods of {address}"), journal, cancellationToken);

    /// <summary>Whether the function is back where it was (an unknown original counts as anything but vfio-pci).</summary>
    private bool IsRestored(BoundFunction function, string? driver) =>
        (function.OriginalUnknown ? driver != VfioPci : driver == function.OriginalDriver) &&
        ReadOverride(function.PciAddress) == function.OriginalDriverOverride;

    /// <summary>The function's <c>driver_override</c>, or null when unset.</summary>
    public string? ReadOverride(PciAddress address)
    {
        var text = sysfs.ReadText(SysfsPaths.DeviceAttribute(address, DeviceAttribute.DriverOverride))?.Trim();
        return string.IsNullOrEmpty(text) || text == "(null)" ? null : text;
    }

    /// <summary>
    /// Waits for the function to show <paramref name="expected"/>; when the probe bound another
    /// driver or none, binds it explicitly through <c>drivers/&lt;expected&gt;/bind</c>.
    /// </summary>
    private async Task EnsureDriverAsync(PciAddress function, string expected, IStepJournal journal, CancellationToken cancellationToken)
    {
        if (await PollAsync(() => discovery.GetCurrentDriver(function) == expected, cancellationToken))
        {
            return;
        }

        var a = function.ToString();
        var other = discovery.GetCurrentDriver(function);
        if (other is not null)
        {
            await RunAsync(new KernelStep(0, a, "unbind", SysfsPaths.DriverUnbind(other), a, $"unbind {a} from {other} (the probe chose it)"),
                journal, cancellationToken);
        }

        LogExplicitBind(logger, function, expected, other);
        await RunAsync(new KernelStep(0, a, "bind", SysfsPaths.DriverBind(expected), a, $"bind {a} to {expected} explicitly"),
            journal, cancellationToken);
        if (!await PollAsync(() => discovery.GetCurrentDriver(function) == expected, cancellationToken))
        {
            throw new VfioStepException(function, "verify",
                $"{a} did not bind to {expected} (driver now {discovery.GetCurrentDriver(function) ?? "none"})");
        }
    }

    private async Task RunAsync(KernelStep step, IStepJournal journal, CancellationToken cancellationToken)
    {
        await journal.StepAsync(step.Description, cancellationToken);
        try
        {
            await writer.WriteAsync(step.Path, step.Value, cancellationToken);
        }
        catch (IOException e)
        {
            var errno = KernelErrno.Of(e);
            throw new VfioStepException(PciAddress.Parse(step.PciAddress), step.Action,
                $"the kernel refused to {step.Description}" + (errno is { } n ? $" ({KernelErrno.Name(n)})" : ""), e);
        }
    }

    private async Task<bool> PollAsync(Func<bool> condition, CancellationToken cancellationToken)
    {
        var deadline = time.GetUtcNow() + options.Value.OperationTimeout;
        while (true)
        {
            if (condition())
            {
                return true;
            }

            if (time.GetUtcNow() >= deadline)
            {
                return false;
            }

            await Task.Delay(options.Value.VerifyPollInterval, time, cancellationToken);
        }
    }

    private static void Add(List<KernelStep> steps, string address, string action, string path, string value, string description) =>
        steps.Add(new KernelStep(steps.Count + 1, address, action, path, value, description));

    [LoggerMessage(EventId = 6001, Level = LogLevel.Warning,
        Message = "Probe left {PciAddress} on {ActualDriver}; binding {ExpectedDriver} explicitly")]
    private static partial void LogExplicitBind(ILogger logger, PciAddress pciAddress, string expectedDriver, string? actualDriver);

    [LoggerMessage(EventId = 6002, Level = LogLevel.Error,
        Message = "Could not return {PciAddress} to {ExpectedDriver}: it is on {ActualDriver} ({Problem})")]
    private static partial void LogNotRestored(ILogger logger, PciAddress pciAddress, string? expectedDriver, string? actualDriver, string problem);
}

/// <summary>A step of a VFIO operation that failed; the message says which and why.</summary>
public sealed class VfioStepException : Exception
{
    public VfioStepException(PciAddress function, string action, string message, Exception? inner = null)
        : base(message, inner)
    {
        Function = function;
        Action = action;
    }

    public VfioStepException()
    {
        Action = "";
    }

    public VfioStepException(string message)
        : base(message)
    {
        Action = "";
    }

    public VfioStepException(string message, Exception innerException)
        : base(message, innerException)
    {
        Action = "";
    }

    public PciAddress Function { get; }

    public string Action { get; }

    public int? Errno => InnerException is { } e ? KernelErrno.Of(e) : null;
}

/// <summary>Where an operation journals each step's intent before the step runs.</summary>
public interface IStepJournal
{
    Task StepAsync(string description, CancellationToken cancellationToken);
}

/// <summary>For runs that need no journal (nothing to recover: the plan of a dry run, tests).</summary>
public sealed class NoStepJournal : IStepJournal
{
    public static NoStepJournal Instance { get; } = new();

    public Task StepAsync(string description, CancellationToken cancellationToken) => Task.CompletedTask;
}

internal static class ProcessScanner
{
    /// <summary>Processes with an open file descriptor on one of <paramref name="nodes"/>.</summary>
    public static IReadOnlyList<DeviceHolder> FindHolders(ISysfs sysfs, IReadOnlySet<string> nodes)
    {
        var holders = new List<DeviceHolder>();
        foreach (var entry in sysfs.ListDirectory(SysfsPaths.Proc))
        {
            if (!int.TryParse(entry, NumberStyles.None, CultureInfo.InvariantCulture, out var pid) || pid <= 0)
            {
                continue;
            }

            IReadOnlyList<string> fds;
            try
            {
                fds = sysfs.ListDirectory(SysfsPaths.ProcessFds(pid));
            }
            catch (UnauthorizedAccessException)
            {
                continue; // another user's process, without root
            }
            catch (IOException)
            {
                continue; // the process exited while we looked
            }

            foreach (var fd in fds)
            {
                if (!int.TryParse(fd, NumberStyles.None, CultureInfo.InvariantCulture, out var n))
                {
                    continue;
                }

                string? target;
                try
                {
                    target = sysfs.ReadLink(SysfsPaths.ProcessFd(pid, n));
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    continue;
                }

                if (target is not null && nodes.Contains(target))
                {
                    var command = TryRead(sysfs, SysfsPaths.ProcessComm(pid))?.Trim() ?? "?";
                    holders.Add(new DeviceHolder(pid, command, target));
                }
            }
        }

        return holders.DistinctBy(h => (h.Pid, h.Path)).OrderBy(h => h.Pid).ToList();
    }

    private static string? TryRead(ISysfs sysfs, string path)
    {
        try
        {
            return sysfs.ReadText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
