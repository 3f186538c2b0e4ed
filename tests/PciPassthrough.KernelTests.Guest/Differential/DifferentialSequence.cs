using PciPassthrough.Sysfs;
using static PciPassthrough.KernelTests.Guest.Kernel.Topology;

namespace PciPassthrough.KernelTests.Guest.Differential;

/// <summary>One raw write: where, what, and (when it is a kernel fact the daemon relies on) the expected answer.</summary>
public sealed record SysfsWrite(string Description, string Path, string Value, string? Expected = null);

/// <summary>Writes that start and end in the boot state; <see cref="Cleanup"/> runs unrecorded, errors ignored.</summary>
public sealed record DifferentialSegment(string Name, string Description, IReadOnlyList<SysfsWrite> Writes, IReadOnlyList<SysfsWrite> Cleanup);

/// <summary>
/// The fixed sequence of raw sysfs writes applied to the real kernel in the guest and replayed on
/// the host by <see cref="Simulation.SimulatedKernel"/> over a snapshot of the guest's sysfs. It
/// covers what the daemon does (bind through driver_override, unbind, drivers_probe, restore,
/// explicit bind, reset) and the refusals it must understand (ENODEV, EINVAL, EBUSY, ENOENT).
/// </summary>
public static class DifferentialSequence
{
    private const string Ok = WriteOutcome.Ok;

    public static IReadOnlyList<DifferentialSegment> Segments { get; } =
    [
        new("refusals_on_a_bound_device", $"{Solo} stays on e1000e while every write is refused or changes nothing",
        [
            Unbind("e1000", Solo, "unbind from a driver the device is not bound to", "ENODEV"),
            Probe("0000:00:1e.0", "drivers_probe of an address with no device", "ENODEV"),
            Probe("00:02.0", "drivers_probe of the short form of an existing address", "ENODEV"),
            Bind("e1000e", Solo, "explicit bind of a device already bound to that driver", "EBUSY"),
            Bind("e1000", Solo, "explicit bind to a driver whose id table does not match", "ENODEV"),
            Bind("vfio-pci", Solo, "explicit bind to vfio-pci without driver_override", "ENODEV"),
            new("explicit bind through a driver that is not loaded", "/sys/bus/pci/drivers/nosuchdriver/bind", Solo, "ENOENT"),
            new("new_id with text that is not two hex ids", "/sys/bus/pci/drivers/vfio-pci/new_id", "hello", "EINVAL"),
            new("remove_id of an id never added", "/sys/bus/pci/drivers/vfio-pci/remove_id", "8086 10d3", "ENODEV"),
            Probe(Solo, "drivers_probe of a bound device changes nothing", Ok),
        ], []),
        new("reset_and_reset_method", "reset values, reset of a function without a reset file, reset_method selection",
        [
            Reset(Solo, "2", "reset with a value other than 1", "EINVAL"),
            Reset(Solo, "0x1", "reset with 1 written in hex (the kernel parses with base 0)", Ok),
            Reset(Solo, "1\n", "reset with 1 and a newline, as echo writes it", Ok),
            Reset(Solo, "", "zero-length write to reset (never reaches the attribute)", Ok),
            Reset(Display, "1", "reset of the display, which has no reset method (no reset file)", "ENOENT"),
            ResetMethod(Solo, "bogus", "reset_method naming only an unknown method", "EINVAL"),
            ResetMethod(Solo, "pm bogus", "reset_method naming a supported and an unknown method", "EINVAL"),
            ResetMethod(Solo, "pm pm", "reset_method naming a method twice"),
            ResetMethod(Solo, "", "zero-length write to reset_method (never reaches the attribute)", Ok),
            ResetMethod(Solo, "\n", "reset_method of a lone newline: every method disabled", Ok),
            Reset(Solo, "1", "reset with every method disabled", "ENOTTY"),
            ResetMethod(Solo, "default", "reset_method back to the default list", Ok),
            ResetMethod(RootPortNic, "bus", "reset_method selecting one of two supported methods", Ok),
            ResetMethod(RootPortNic, "bus pm", "reset_method reordering the supported methods", Ok),
            ResetMethod(RootPortNic, "default", "reset_method back to the default list", Ok),
        ], [ResetMethod(Solo, "default", ""), ResetMethod(RootPortNic, "default", "")]),
        new("bind_through_override", $"the daemon's bind and restore of {Solo}, with the refusals on the way",
        [
            Override(Solo, "vfio-pci", "driver_override set while bound to e1000e", Ok),
            Probe(Solo, "drivers_probe while still bound: nothing changes", Ok),
            Bind("e1000e", Solo, "explicit bind to a driver the override excludes (device bound)", "ENODEV"),
            new("unbind through the device's own driver link", $"/sys/bus/pci/devices/{Solo}/driver/unbind", Solo, Ok),
            Unbind("e1000e", Solo, "unbind of a device that has no driver", "ENODEV"),
            Bind("e1000e", Solo, "explicit bind to a driver the override excludes (device unbound)", "ENODEV"),
            Probe(Solo, "drivers_probe binds vfio-pci through the override", Ok),
            Bind("vfio-pci", Solo, "explicit bind of a device already on vfio-pci", "EBUSY"),
            Reset(Solo, "1", "reset of a function bound to vfio-pci", Ok),
            Override(Solo, "\n", "driver_override cleared with a lone newline", Ok),
            Unbind("vfio-pci", Solo + "\n", "unbind from vfio-pci, with a trailing newline", Ok),
            Probe(Solo, "drivers_probe returns the device to e1000e", Ok),
        ], []),
        new("explicit_bind", $"bind and restore of {Solo} through drivers/<name>/bind instead of drivers_probe",
        [
            Override(Solo, "vfio-pci", "driver_override set", Ok),
            Unbind("e1000e", Solo, "unbind from e1000e", Ok),
            Bind("vfio-pci", Solo, "explicit bind to vfio-pci", Ok),
            Override(Solo, "\n", "driver_override cleared", Ok),
            Unbind("vfio-pci", Solo, "unbind from vfio-pci", Ok),
            Bind("e1000e", Solo, "explicit bind back to e1000e", Ok),
        ], []),
        new("override_parsing", "how driver_override parses what is written to it",
        [
            Override(Solo, "e1000e\nvfio-pci", "a value with a newline in the middle keeps the first line", Ok),
            Override(Solo, "vfio-pci\0junk", "a value with a NUL keeps what comes before it", Ok),
            Override(Solo, "", "zero-length write (never reaches the attribute)", Ok),
            Override(Solo, " vfio-pci", "a value with a leading space is kept as written", Ok),
            Unbind("e1000e", Solo, "unbind from e1000e", Ok),
            Probe(Solo, "drivers_probe with an override naming ' vfio-pci' (no such driver: none binds)", Ok),
            Override(Solo, "\n", "driver_override cleared", Ok),
            Probe(Solo, "drivers_probe after clearing the override", Ok),
        ], []),
        new("bridge_refused_by_vfio", $"vfio-pci refuses the DMI-to-PCI bridge {DmiBridge}",
        [
            Override(DmiBridge, "vfio-pci", "driver_override of a bridge", Ok),
            Probe(DmiBridge, "drivers_probe: vfio-pci's probe fails, the write still succeeds", Ok),
            Bind("vfio-pci", DmiBridge, "explicit bind of a bridge to vfio-pci", "EINVAL"),
            Override(DmiBridge, "\n", "driver_override cleared", Ok),
        ], []),
        new("shared_group_with_display", $"{LegacyNic} (e1000) and the display {Display} (bochs-drm) share one group",
        [
            Override(LegacyNic, "vfio-pci", "driver_override of the e1000", Ok),
            Unbind("e1000", LegacyNic, "unbind the e1000", Ok),
            Probe(LegacyNic, "drivers_probe binds vfio-pci while the display stays on bochs-drm", Ok),
            Override(Display, "vfio-pci", "driver_override of the display", Ok),
            Unbind("bochs-drm", Display, "unbind the display from bochs-drm", Ok),
            Probe(Display, "drivers_probe binds the display to vfio-pci", Ok),
            Override(LegacyNic, "\n", "driver_override of the e1000 cleared", Ok),
            Unbind("vfio-pci", LegacyNic, "unbind the e1000 from vfio-pci", Ok),
            Probe(LegacyNic, "drivers_probe returns the e1000 to its driver", Ok),
            Override(Display, "\n", "driver_override of the display cleared", Ok),
            Unbind("vfio-pci", Display, "unbind the display from vfio-pci", Ok),
            Probe(Display, "drivers_probe returns the display to bochs-drm", Ok),
        ], []),
        new("multifunction_pair", $"the two functions {MultiFunction0} and {MultiFunction1} of one group",
        [
            Override(MultiFunction0, "vfio-pci", "driver_override of function 0", Ok),
            Unbind("e1000e", MultiFunction0, "unbind function 0", Ok),
            Probe(MultiFunction0, "drivers_probe binds function 0 to vfio-pci", Ok),
            Override(MultiFunction1, "vfio-pci", "driver_override of function 1", Ok),
            Unbind("e1000e", MultiFunction1, "unbind function 1", Ok),
            Probe(MultiFunction1, "drivers_probe binds function 1 to vfio-pci", Ok),
            Override(MultiFunction0, "\n", "driver_override of function 0 cleared", Ok),
            Unbind("vfio-pci", MultiFunction0, "unbind function 0 from vfio-pci", Ok),
            Probe(MultiFunction0, "drivers_probe returns function 0 to e1000e", Ok),
            Override(MultiFunction1, "\n", "driver_override of function 1 cleared", Ok),
            Unbind("vfio-pci", MultiFunction1, "unbind function 1 from vfio-pci", Ok),
            Probe(MultiFunction1, "drivers_probe returns function 1 to e1000e", Ok),
        ], []),
        new("dynamic_id", $"vfio-pci's new_id with the e1000's id 8086:100e, then a probe of {LegacyNic}",
        [
            new("new_id adds 8086:100e to vfio-pci", "/sys/bus/pci/drivers/vfio-pci/new_id", "8086 100e", Ok),
            new("new_id of an id the driver already matches", "/sys/bus/pci/drivers/vfio-pci/new_id", "8086 100e", "EEXIST"),
            Unbind("e1000", LegacyNic, "unbind the e1000", Ok),
            Probe(LegacyNic, "drivers_probe with two matching drivers (e1000 by its table, vfio-pci by the dynamic id): the first registered wins", Ok),
            new("remove_id of the dynamic id", "/sys/bus/pci/drivers/vfio-pci/remove_id", "8086 100e", Ok),
            new("remove_id of the same id again", "/sys/bus/pci/drivers/vfio-pci/remove_id", "8086 100e", "ENODEV"),
            Unbind("vfio-pci", LegacyNic, "unbind from vfio-pci (refused if the probe chose e1000)"),
            Probe(LegacyNic, "drivers_probe returns the e1000 to its driver", Ok),
        ], [new("remove the dynamic id if still there", "/sys/bus/pci/drivers/vfio-pci/remove_id", "8086 100e")]),
    ];

    private static SysfsWrite Override(string address, string value, string description, string? expected = null) =>
        new(description, $"{SysfsPaths.PciDevices}/{address}/driver_override", value, expected);

    private static SysfsWrite Unbind(string driver, string value, string description, string? expected = null) =>
        new(description, $"{SysfsPaths.PciDrivers}/{driver}/unbind", value, expected);

    private static SysfsWrite Bind(string driver, string value, string description, string? expected = null) =>
        new(description, $"{SysfsPaths.PciDrivers}/{driver}/bind", value, expected);

    private static SysfsWrite Probe(string value, string description, string? expected = null) =>
        new(description, SysfsPaths.DriversProbe, value, expected);

    private static SysfsWrite Reset(string address, string value, string description, string? expected = null) =>
        new(description, $"{SysfsPaths.PciDevices}/{address}/reset", value, expected);

    private static SysfsWrite ResetMethod(string address, string value, string description, string? expected = null) =>
        new(description, $"{SysfsPaths.PciDevices}/{address}/reset_method", value, expected);
}
