using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using PciPassthrough.Discovery;
using PciPassthrough.Journal;
using PciPassthrough.PciIds;
using PciPassthrough.Registry;
using PciPassthrough.Simulation;
using PciPassthrough.Storage;
using PciPassthrough.Vfio;

namespace PciPassthrough.Tests.TestDoubles;

/// <summary>
/// The daemon's object graph (simulated kernel, discovery, registry, journal, binder, manager)
/// over a host tree and a state directory, without HTTP. <see cref="Restart"/> builds a fresh
/// graph on the same directories, as a restarted daemon would see them after a crash.
/// </summary>
public sealed class SimulatedHost : IDisposable
{
    private readonly TempDirectory? _ownedHost;
    private readonly TempDirectory? _ownedState;
    private readonly ICrashPoint _crashPoint;

    /// <param name="hostRoot">A tree; null writes the built-in GPU server fixture into a temp directory.</param>
    /// <param name="stateDirectory">null: a fresh temp directory.</param>
    /// <param name="timeout">Vfio:OperationTimeout.</param>
    /// <param name="crashPoint">Where operations stop, for crash tests.</param>
    /// <param name="faults">Faults of the simulated kernel.</param>
    public SimulatedHost(string? hostRoot = null, string? stateDirectory = null, TimeSpan? timeout = null,
        ICrashPoint? crashPoint = null, IReadOnlyDictionary<Devices.PciAddress, IReadOnlyList<SimulatedFault>>? faults = null)
    {
        if (hostRoot is null)
        {
            _ownedHost = new TempDirectory("pcipt-host");
            GpuServerFixture.WriteTo(_ownedHost.Path);
            hostRoot = _ownedHost.Path;
        }

        if (stateDirectory is null)
        {
            _ownedState = new TempDirectory("pcipt-state");
            stateDirectory = _ownedState.Path;
        }

        HostRoot = hostRoot;
        StateRoot = stateDirectory;
        Timeout = timeout ?? TimeSpan.FromSeconds(5);
        _crashPoint = crashPoint ?? new NoCrashPoint();

        Kernel = new SimulatedKernel(hostRoot, faults);
        State = new StateDirectory(stateDirectory);
        State.EnsureCreated();
        var time = TimeProvider.System;
        var vfioOptions = Options.Create(new VfioOptions { OperationTimeout = Timeout, VerifyPollInterval = TimeSpan.FromMilliseconds(2) });
        PciIds = new PciIdsProvider(PciIdsDatabase.Empty);
        Discovery = new PciDiscovery(Kernel, PciIds);
        Registry = new DeviceRegistry(new JsonFileDeviceStore(State, time, NullLogger<JsonFileDeviceStore>.Instance));
        Registry.Load();
        Journal = new OperationJournal(State, _crashPoint, time, NullLogger<OperationJournal>.Instance);
        Writer = new BoundedKernelWriter(Kernel, vfioOptions, time, NullLogger<BoundedKernelWriter>.Instance);
        Binder = new SysfsVfioBinder(Kernel, Discovery, Writer, vfioOptions, time, NullLogger<SysfsVfioBinder>.Instance);
        Manager = new DeviceManager(Registry, Discovery, Kernel, Binder, Journal, vfioOptions, time, NullLogger<DeviceManager>.Instance,
            new SimulatedServiceControl(Kernel));
    }

    public string HostRoot { get; }

    public string StateRoot { get; }

    public TimeSpan Timeout { get; }

    public SimulatedKernel Kernel { get; }

    public StateDirectory State { get; }

    public PciIdsProvider PciIds { get; }

    public PciDiscovery Discovery { get; }

    public DeviceRegistry Registry { get; }

    public OperationJournal Journal { get; }

    public BoundedKernelWriter Writer { get; }

    public SysfsVfioBinder Binder { get; }

    public DeviceManager Manager { get; }

    /// <summary>A fresh graph on the same tree and state directory (this one stays usable for reading).</summary>
    public SimulatedHost Restart(ICrashPoint? crashPoint = null) =>
        new(HostRoot, StateRoot, Timeout, crashPoint);

    /// <summary>The driver a function is bound to now, straight from the tree.</summary>
    public string? DriverOf(string address) => Discovery.GetCurrentDriver(Devices.PciAddress.Parse(address));

    public void Dispose()
    {
        Kernel.Dispose();
        _ownedHost?.Dispose();
        _ownedState?.Dispose();
    }
}

/// <summary>Stops an operation right before step n, as a crash would, by throwing past every handler.</summary>
public sealed class ThrowingCrashPoint(string operation, int step) : CrashAtStep(operation, step)
{
    protected override void Crash() => throw new SimulatedCrashException(Operation, Step);
}

public sealed class SimulatedCrashException(string operation, int step)
    : Exception($"simulated crash before step {step} of {operation}")
{
    public SimulatedCrashException()
        : this("", 0)
    {
    }

    public SimulatedCrashException(string message, Exception innerException)
        : this(message, 0)
    {
        _ = innerException;
    }
}
