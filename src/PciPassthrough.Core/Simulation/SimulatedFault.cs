using System.Globalization;
using System.Text.Json;
using PciPassthrough.Devices;

namespace PciPassthrough.Simulation;

/// <summary>A misbehaviour the simulated kernel shows for one device (see <c>Simulate:FaultsFile</c>).</summary>
public abstract record SimulatedFault
{
    /// <summary>Longest <c>unbind_delay</c> accepted (an hour); beyond that use <c>unbind_hangs</c>.</summary>
    public const double MaxDelaySeconds = 3600;

    /// <summary>Writes to <c>unbind</c> for the device block until <see cref="SimulatedKernel.ReleaseHangs"/>.</summary>
    public sealed record UnbindHangs : SimulatedFault;

    /// <summary>Writes to <c>unbind</c> for the device take this long.</summary>
    public sealed record UnbindDelay(TimeSpan Delay) : SimulatedFault;

    /// <summary>The driver refuses to probe the device (vfio-pci unless another driver is named).</summary>
    public sealed record BindRefused(string Driver) : SimulatedFault;

    /// <summary><c>drivers_probe</c> reports success and binds nothing.</summary>
    public sealed record ProbeBindsNothing : SimulatedFault;

    /// <summary>Writes to <c>reset</c> fail with EIO.</summary>
    public sealed record ResetFails : SimulatedFault;

    /// <summary>A process holding the device: its /dev/vfio/N while on vfio-pci, else its driver's node.</summary>
    public sealed record Holder(int Pid, string Command) : SimulatedFault;

    /// <summary>An active systemd unit whose process holds the device; stopping the unit lets go.</summary>
    public sealed record Service(string Unit) : SimulatedFault;

    /// <summary>Parses one fault string: <c>unbind_hangs</c>, <c>unbind_delay=2.5</c>, <c>bind_refused</c>,
    /// <c>bind_refused=nvme</c>, <c>probe_binds_nothing</c>, <c>reset_fails</c>, <c>holder=4242:qemu</c>, <c>service=nvidia-persistenced</c>.</summary>
    public static SimulatedFault Parse(string text)
    {
        var (name, value) = text.Split('=', 2) is [var key, var argument] ? (key.Trim(), argument.Trim()) : (text.Trim(), null);
        return (name, value) switch
        {
            ("unbind_hangs", null) => new UnbindHangs(),
            ("unbind_delay", { } v) when double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var s) &&
                s is >= 0 and <= MaxDelaySeconds =>
                new UnbindDelay(TimeSpan.FromSeconds(s)),
            ("bind_refused", null) => new BindRefused(Sysfs.SysfsPaths.VfioPciDriver),
            ("bind_refused", { } driver) when Sysfs.SysfsPaths.IsValidDriverName(driver) => new BindRefused(driver),
            ("probe_binds_nothing", null) => new ProbeBindsNothing(),
            ("reset_fails", null) => new ResetFails(),
            ("holder", { } v) when v.Split(':', 2) is [var pid, var command] &&
                int.TryParse(pid, NumberStyles.None, CultureInfo.InvariantCulture, out var p) && p > 1 && command.Length > 0 =>
                new Holder(p, command),
            ("service", { } unit) when Vfio.SystemdUnits.IsValid(unit.EndsWith(".service", StringComparison.Ordinal) ? unit : unit + ".service") =>
                new Service(unit.EndsWith(".service", StringComparison.Ordinal) ? unit : unit + ".service"),
            _ => throw new FormatException($"Unknown simulated fault '{text}'"),
        };
    }

    /// <summary>Reads a faults file: a JSON object keyed by PCI address, each value a list of fault strings.</summary>
    public static IReadOnlyDictionary<PciAddress, IReadOnlyList<SimulatedFault>> LoadFile(string path)
    {
        using var document = JsonDocument.Parse(File.ReadAllBytes(path));
        var faults = new Dictionary<PciAddress, IReadOnlyList<SimulatedFault>>();
        foreach (var property in document.RootElement.EnumerateObject())
        {
            if (!PciAddress.TryParse(property.Name, out var address))
            {
                throw new FormatException($"Faults file {path}: '{property.Name}' is not a PCI address");
            }

            faults[address] = property.Value.EnumerateArray().Select(e => Parse(e.GetString() ?? "")).ToList();
        }

        return faults;
    }
}
