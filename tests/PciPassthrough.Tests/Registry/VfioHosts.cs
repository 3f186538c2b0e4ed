using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using PciPassthrough.Devices;
using PciPassthrough.Discovery;
using PciPassthrough.Journal;
using PciPassthrough.PciIds;
using PciPassthrough.Simulation;
using PciPassthrough.Simulation.Tests;
using PciPassthrough.Storage;
using PciPassthrough.Tests.TestDoubles;
using PciPassthrough.Vfio;
using PciPassthrough.Vfio.Tests;

namespace PciPassthrough.Registry.Tests;

/// <summary>Builds simulated GPU servers for manager-level tests, on scratch directories.</summary>
internal static class VfioHosts
{
    public const string Gpu = "0000:17:00.0";
    public const string GpuAudio = "0000:17:00.1";
    public const string Gpu2 = "0000:af:00.0";
    public const string Gpu2Audio = "0000:af:00.1";
    public const string Nvme = "0000:3b:00.0";
    public const string Nvme2 = "0000:d8:00.0";
    public const string Vga = "0000:03:00.0";
    public const string I210 = "0000:04:00.0";
    public const string RootPort = "0000:00:1c.0";
    public const string AspeedBridge = "0000:02:00.0";

    public static PciAddress A(string address) => PciAddress.Parse(address);

    /// <summary>The fixture tree in <c>dir/host</c> (written once) and the state in <c>dir/state</c>.</summary>
    public static string HostRoot(TempDirectory dir)
    {
        var root = dir.Combine("host");
        if (!Directory.Exists(root))
        {
            GpuServerFixture.WriteTo(root);
        }

        return root;
    }

    public static SimulatedHost Create(TempDirectory dir, TimeSpan? timeout = null, ICrashPoint? crashPoint = null,
        IReadOnlyDictionary<PciAddress, IReadOnlyList<SimulatedFault>>? faults = null) =>
        new(HostRoot(dir), dir.Combine("state"), timeout ?? TimeSpan.FromSeconds(5), crashPoint, faults);

    public static async Task<Device> RegisterAsync(this SimulatedHost host, string address) =>
        await host.Manager.CreateDeviceAsync(new CreateDeviceCommand(address));

    public static async Task<Device> RegisterAsync(this InterceptedHost host, string address) =>
        await host.Manager.CreateDeviceAsync(new CreateDeviceCommand(address));

    public static DeviceRecord Record(this SimulatedHost host, string id) => host.Registry.Find(id)!;
}

/// <summary>
/// The daemon's object graph like <see cref="SimulatedHost"/>, except that kernel writes go through
/// an <see cref="InterceptingSysfs"/>, so a test can see every write and make chosen ones fail.
/// </summary>
internal sealed class InterceptedHost : IDisposable
{
    public InterceptedHost(string hostRoot, string stateRoot, TimeSpan timeout, ICrashPoint? crashPoint = null)
    {
        HostRoot = hostRoot;
        Kernel = new SimulatedKernel(hostRoot);
        Sysfs = new InterceptingSysfs(Kernel);
        var state = new StateDirectory(stateRoot);
        state.EnsureCreated();
        var time = TimeProvider.System;
        var options = Options.Create(new VfioOptions { OperationTimeout = timeout, VerifyPollInterval = TimeSpan.FromMilliseconds(2) });
        Discovery = new PciDiscovery(Kernel, new PciIdsProvider(PciIdsDatabase.Empty));
        Registry = new DeviceRegistry(new JsonFileDeviceStore(state, time, NullLogger<JsonFileDeviceStore>.Instance));
        Registry.Load();
        Journal = new OperationJournal(state, crashPoint ?? new NoCrashPoint(), time, NullLogger<OperationJournal>.Instance);
        Writer = new BoundedKernelWriter(Sysfs, options, time, NullLogger<BoundedKernelWriter>.Instance);
        Binder = new SysfsVfioBinder(Kernel, Discovery, Writer, options, time, NullLogger<SysfsVfioBinder>.Instance);
        Manager = new DeviceManager(Registry, Discovery, Kernel, Binder, Journal, options, time, NullLogger<DeviceManager>.Instance);
    }

    public string HostRoot { get; }

    public SimulatedKernel Kernel { get; }

    public InterceptingSysfs Sysfs { get; }

    public PciDiscovery Discovery { get; }

    public DeviceRegistry Registry { get; }

    public OperationJournal Journal { get; }

    public BoundedKernelWriter Writer { get; }

    public SysfsVfioBinder Binder { get; }

    public DeviceManager Manager { get; }

    public void Dispose()
    {
        Kernel.ReleaseHangs();
        Kernel.Dispose();
    }
}

/// <summary>What must hold after any operation, failure or recovery has settled.</summary>
internal static class Consistency
{
    /// <summary>
    /// Journal empty; every function of the fixture on its boot driver or on vfio-pci because a
    /// record says the daemon bound it (never driverless unless it booted so); driver_override set
    /// only while on vfio-pci; each record agreeing with sysfs; /dev/vfio/N only for groups in use.
    /// </summary>
    public static void AssertSettled(SimulatedHost host) =>
        AssertSettled(host.HostRoot, host.Journal, host.Registry, host.Manager);

    public static void AssertSettled(string hostRoot, OperationJournal journal, DeviceRegistry registry, DeviceManager manager)
    {
        var tree = new HostTree(hostRoot);
        Assert.Empty(journal.Pending());
        var records = registry.All();
        var boundByDaemon = records.SelectMany(r => r.Binding?.Functions ?? []).Select(f => f.PciAddress.ToString()).ToHashSet();
        var vfioGroups = new HashSet<int>();
        foreach (var spec in GpuServerFixture.Devices)
        {
            var address = spec.Address.ToString();
            var driver = tree.DriverOf(address);
            if (driver == "vfio-pci")
            {
                Assert.True(boundByDaemon.Contains(address), $"{address} is on vfio-pci but no record says the daemon bound it");
                Assert.Equal("vfio-pci\n", tree.OverrideOf(address));
                vfioGroups.Add(spec.IommuGroup!.Value);
            }
            else
            {
                Assert.True(spec.Driver == driver, $"{address} is on {driver ?? "no driver"}, booted on {spec.Driver ?? "no driver"}");
                Assert.True(tree.OverrideOf(address) == "(null)\n", $"{address} keeps driver_override {tree.OverrideOf(address).Trim()}");
                Assert.False(boundByDaemon.Contains(address), $"a record says the daemon bound {address}, which is on {driver}");
            }
        }

        foreach (var group in GpuServerFixture.Devices.Select(d => d.IommuGroup!.Value).Distinct())
        {
            Assert.True(vfioGroups.Contains(group) == tree.Exists($"/dev/vfio/{group}"), $"/dev/vfio/{group} disagrees with the drivers");
        }

        foreach (var record in records)
        {
            var device = manager.GetDevice(record.Id);
            var onVfio = tree.DriverOf(record.PciAddress.ToString()) == "vfio-pci";
            Assert.Equal(onVfio, device.BoundToVfio);
            Assert.True(onVfio == (record.Binding is not null),
                $"{record.PciAddress}: on vfio-pci {onVfio}, binding recorded {record.Binding is not null}");
            Assert.Null(record.Quarantine);
        }
    }
}
