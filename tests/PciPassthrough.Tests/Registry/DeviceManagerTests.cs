using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using PciPassthrough.Devices;
using PciPassthrough.Discovery;
using PciPassthrough.Journal;
using PciPassthrough.Errors;
using PciPassthrough.PciIds;
using PciPassthrough.Simulation;
using PciPassthrough.Storage;
using PciPassthrough.Sysfs;
using PciPassthrough.Tests.TestDoubles;
using PciPassthrough.Vfio;

namespace PciPassthrough.Registry.Tests;

public sealed class DeviceManagerTests : IDisposable
{
    private const string Ids =
        "10de  NVIDIA Corporation\n" +
        "\t2230  GA102GL [RTX A6000]\n" +
        "\t1aef  GA102 High Definition Audio Controller\n" +
        "8086  Intel Corporation\n" +
        "\t1572  Ethernet Controller X710 for 10GbE SFP+\n";

    private readonly TempDirectory _host = new("pcipt-host");
    private readonly TempDirectory _stateDir = new("pcipt-state");
    private readonly StateDirectory _state;
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 5, 6, 7, 8, 9, TimeSpan.Zero));

    public DeviceManagerTests()
    {
        GpuServerFixture.WriteTo(_host.Path);
        _state = new StateDirectory(_stateDir.Path);
        _state.EnsureCreated();
    }

    public void Dispose()
    {
        _host.Dispose();
        _stateDir.Dispose();
    }

    private DeviceManager Manager()
    {
        var registry = new DeviceRegistry(new JsonFileDeviceStore(_state, _time, NullLogger<JsonFileDeviceStore>.Instance));
        registry.Load();
        var sysfs = new LinuxSysfs(_host.Path);
        var discovery = new PciDiscovery(sysfs, new PciIdsProvider(PciIdsDatabase.Parse(new StringReader(Ids))));
        var options = Options.Create(new VfioOptions());
        var writer = new BoundedKernelWriter(sysfs, options, _time, NullLogger<BoundedKernelWriter>.Instance);
        var binder = new SysfsVfioBinder(sysfs, discovery, writer, options, _time, NullLogger<SysfsVfioBinder>.Instance);
        var journal = new OperationJournal(_state, new NoCrashPoint(), _time, NullLogger<OperationJournal>.Instance);
        return new DeviceManager(registry, discovery, sysfs, binder, journal, options, _time, NullLogger<DeviceManager>.Instance);
    }

    private static async Task<string> CodeOf(Func<Task> action) =>
        (await Assert.ThrowsAsync<PassthroughException>(action)).Code;

    [Fact]
    public async Task CreateDeviceAsync_WithName_RegisteredWithLiveFacts()
    {
        var manager = Manager();

        var device = await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));

        Assert.True(Cuid2Generator.IsCuid2(device.Id));
        Assert.Equal("gpu0", device.Name);
        Assert.Equal(PciAddress.Parse("0000:17:00.0"), device.PciAddress);
        Assert.Equal(DeviceType.Gpu, device.Type);
        Assert.Equal("10de", device.VendorId);
        Assert.Equal("2230", device.DeviceId);
        Assert.Equal("030000", device.ClassCode);
        Assert.Equal("NVIDIA Corporation", device.VendorName);
        Assert.Equal("GA102GL [RTX A6000]", device.DeviceName);
        Assert.Equal(11, device.IommuGroup);
        Assert.False(device.BoundToVfio);
        Assert.Null(device.AttachedTo);
        Assert.Equal(_time.GetUtcNow().UtcDateTime, device.CreatedAt);
        Assert.Equal("nvidia", device.CurrentDriver);
        Assert.Equal("nvidia", device.OriginalDriver);
        Assert.Equal(0, device.NumaNode);
        Assert.Equal("/sys/bus/pci/devices/0000:17:00.0", device.SysfsPath);
        Assert.Null(device.VfioGroupPath);
        Assert.Equal(DeviceState.Ready, device.State);
    }

    [Fact]
    public async Task CreateDeviceAsync_WithoutName_NameFromAddress()
    {
        var device = await Manager().CreateDeviceAsync(new CreateDeviceCommand("0000:5e:00.1"));

        Assert.Equal("pci-0000-5e-00-1", device.Name);
        Assert.Equal(DeviceType.Pci, device.Type);
        Assert.Equal("i40e", device.OriginalDriver);
    }

    [Theory]
    [InlineData("0000:AF:00.0")]
    [InlineData("af:00.0")]
    [InlineData("AF:00.0")]
    public async Task CreateDeviceAsync_AddressSpellings_NormalizedInRecordAndName(string address)
    {
        var manager = Manager();

        var device = await manager.CreateDeviceAsync(new CreateDeviceCommand(address));

        Assert.Equal("0000:af:00.0", device.PciAddress.ToString());
        Assert.Equal("pci-0000-af-00-0", device.Name);
        Assert.Equal(ErrorCodes.AlreadyExists, await CodeOf(() => manager.CreateDeviceAsync(new CreateDeviceCommand("0000:af:00.0", "other"))));
    }

    [Theory]
    [InlineData("0000:00:20.0")]
    [InlineData("0000:17:00.0\n")]
    [InlineData("")]
    [InlineData("../../../etc")]
    [InlineData("0000:17:00.0\0")]
    public async Task CreateDeviceAsync_InvalidAddress_InvalidPciAddressBeforeAnythingElse(string address)
    {
        var manager = Manager();
        await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "taken"));

        // An invalid name and a taken name would also be errors: the address is checked first.
        Assert.Equal(ErrorCodes.InvalidPciAddress, await CodeOf(() => manager.CreateDeviceAsync(new CreateDeviceCommand(address, "-bad name"))));
        Assert.Equal(ErrorCodes.InvalidPciAddress, await CodeOf(() => manager.CreateDeviceAsync(new CreateDeviceCommand(address, "taken"))));
        Assert.Single(manager.ListDevices());
    }

    [Theory]
    [InlineData("a")]
    [InlineData("-gpu")]
    [InlineData("gpu 0")]
    [InlineData("gpu\n")]
    [InlineData("")]
    [InlineData("gpü")]
    public async Task CreateDeviceAsync_InvalidName_InvalidNameEvenForMissingDevice(string name)
    {
        var manager = Manager();

        Assert.Equal(ErrorCodes.InvalidName, await CodeOf(() => manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", name))));
        Assert.Equal(ErrorCodes.InvalidName, await CodeOf(() => manager.CreateDeviceAsync(new CreateDeviceCommand("0000:99:00.0", name))));
        Assert.Empty(manager.ListDevices());
    }

    [Fact]
    public async Task CreateDeviceAsync_NameTooLong_InvalidName()
    {
        Assert.Equal(ErrorCodes.InvalidName,
            await CodeOf(() => Manager().CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", new string('a', 64)))));
    }

    [Fact]
    public async Task CreateDeviceAsync_NoSuchDeviceOnHost_DeviceNotFound()
    {
        var manager = Manager();

        Assert.Equal(ErrorCodes.DeviceNotFound, await CodeOf(() => manager.CreateDeviceAsync(new CreateDeviceCommand("0000:99:00.0"))));
        Assert.Empty(manager.ListDevices());
        Assert.Empty(Directory.EnumerateFiles(_state.Devices));
    }

    [Theory]
    [InlineData("0000:00:00.0")]
    [InlineData("0000:00:1c.0")]
    [InlineData("0000:02:00.0")]
    public async Task CreateDeviceAsync_Bridge_ValidationFailed(string address)
    {
        var manager = Manager();

        var e = await Assert.ThrowsAsync<PassthroughException>(() => manager.CreateDeviceAsync(new CreateDeviceCommand(address)));

        Assert.Equal(ErrorCodes.ValidationFailed, e.Code);
        var errors = Assert.IsType<Dictionary<string, string[]>>(e.Details["errors"]);
        Assert.Contains("pci_address", errors.Keys);
        Assert.Empty(manager.ListDevices());
    }

    [Fact]
    public async Task CreateDeviceAsync_DuplicateNameOrAddress_Conflicts()
    {
        var manager = Manager();
        await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));

        Assert.Equal(ErrorCodes.NameExists, await CodeOf(() => manager.CreateDeviceAsync(new CreateDeviceCommand("0000:af:00.0", "gpu0"))));
        Assert.Equal(ErrorCodes.AlreadyExists, await CodeOf(() => manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu1"))));
        Assert.Equal(ErrorCodes.AlreadyExists, await CodeOf(() => manager.CreateDeviceAsync(new CreateDeviceCommand("17:00.0"))));
        Assert.Single(manager.ListDevices());
    }

    [Fact]
    public async Task CreateDeviceAsync_DeviceWithoutDriver_OriginalDriverNull()
    {
        new SysfsTreeBuilder(_host.Path).AddDevice(SysfsTrees.Function("0000:60:00.0", driver: null, group: 60));

        var device = await Manager().CreateDeviceAsync(new CreateDeviceCommand("0000:60:00.0"));

        Assert.Null(device.CurrentDriver);
        Assert.Null(device.OriginalDriver);
        Assert.Null(device.NumaNode);
    }

    [Fact]
    public async Task CreateDeviceAsync_DeviceAlreadyOnVfioPci_NoOriginalDriverToRestore()
    {
        SysfsTrees.Link(SysfsTrees.Attribute(_host.Path, "0000:17:00.0", "driver"), Path.Combine(_host.Path, "sys/bus/pci/drivers/vfio-pci"));

        var device = await Manager().CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0"));

        Assert.Equal("vfio-pci", device.CurrentDriver);
        Assert.Null(device.OriginalDriver);
        Assert.True(device.BoundToVfio);
    }

    [Fact]
    public async Task CreateDeviceAsync_Persisted_NewManagerSeesIt()
    {
        var created = await Manager().CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));

        var again = Manager().GetDevice("gpu0");

        Assert.Equal(created, again);
    }

    [Fact]
    public async Task GetDevice_ByIdAndByName_SameDevice()
    {
        var manager = Manager();
        var created = await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));

        Assert.Equal(created, manager.GetDevice(created.Id));
        Assert.Equal(created, manager.GetDevice("gpu0"));
    }

    [Theory]
    [InlineData("nope")]
    [InlineData("0000:17:00.0")]
    [InlineData("../../etc/passwd")]
    [InlineData("\0")]
    [InlineData("")]
    public async Task GetDevice_Unknown_NotFound(string idOrName)
    {
        var manager = Manager();
        await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));

        Assert.Equal(ErrorCodes.NotFound, Assert.Throws<PassthroughException>(() => manager.GetDevice(idOrName)).Code);
        Assert.Equal(ErrorCodes.NotFound, Assert.Throws<PassthroughException>(() => manager.GetDevice(new string('x', 10_000))).Code);
    }

    [Fact]
    public async Task DeleteDeviceAsync_ByName_GoneEverywhere()
    {
        var manager = Manager();
        var created = await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));

        await manager.DeleteDeviceAsync("gpu0");

        Assert.Empty(manager.ListDevices());
        Assert.Equal(ErrorCodes.NotFound, Assert.Throws<PassthroughException>(() => manager.GetDevice(created.Id)).Code);
        Assert.Empty(Directory.EnumerateFiles(_state.Devices));
        Assert.Equal(ErrorCodes.NotFound, await CodeOf(() => manager.DeleteDeviceAsync(created.Id)));
        Assert.False(manager.ListAvailableDevices().Single(a => a.Device.PciAddress == created.PciAddress).Registered);
        Assert.Equal(0, manager.Locks.ActiveKeys);
    }

    [Fact]
    public async Task DeleteDeviceAsync_Attached_InUseWithAttachedTo()
    {
        var manager = Manager();
        await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));
        var registry = new DeviceRegistry(new JsonFileDeviceStore(_state, _time, NullLogger<JsonFileDeviceStore>.Instance));
        registry.Load();
        var record = registry.Find("gpu0")!;
        registry.Update(record with { Attachment = new AttachmentRecord { InstanceId = "vm-7", AttachedAt = TestRecords.Epoch } });
        var reloaded = Manager();

        var e = await Assert.ThrowsAsync<PassthroughException>(() => reloaded.DeleteDeviceAsync("gpu0"));

        Assert.Equal(ErrorCodes.InUse, e.Code);
        Assert.Equal("vm-7", e.Details["attached_to"]);
        Assert.Equal(DeviceState.Attached, reloaded.GetDevice("gpu0").State);
        Assert.Equal("vm-7", reloaded.GetDevice("gpu0").AttachedTo);
    }

    [Fact]
    public async Task ListDevices_OrderedByCreatedAtThenId()
    {
        var manager = Manager();
        var a = await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0"));
        _time.Advance(TimeSpan.FromSeconds(1));
        var b = await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:af:00.0"));
        var c = await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:3b:00.0"));
        _time.Advance(TimeSpan.FromSeconds(1));
        var d = await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:00:14.0"));

        var sameSecond = new[] { b, c }.OrderBy(x => x.Id, StringComparer.Ordinal).Select(x => x.Id);
        Assert.Equal([a.Id, .. sameSecond, d.Id], manager.ListDevices().Select(x => x.Id));
    }

    [Fact]
    public async Task ListAvailableDevices_RegisteredFlagAndId()
    {
        var manager = Manager();
        var created = await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0"));

        var available = manager.ListAvailableDevices();

        var gpu = available.Single(a => a.Device.PciAddress == created.PciAddress);
        Assert.True(gpu.Registered);
        Assert.Equal(created.Id, gpu.RegisteredId);
        Assert.All(available.Where(a => a != gpu), a =>
        {
            Assert.False(a.Registered);
            Assert.Null(a.RegisteredId);
        });
        Assert.DoesNotContain(available, a => a.Device.IsBridge);
    }

    [Fact]
    public async Task GetDevice_DeviceUnpluggedAfterRegistration_MissingAndRecordKept()
    {
        var manager = Manager();
        var created = await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));

        SysfsTrees.Unplug(_host.Path, "0000:17:00.0");
        var device = manager.GetDevice("gpu0");

        Assert.Equal(DeviceState.Missing, device.State);
        Assert.Null(device.VendorName);
        Assert.Null(device.DeviceName);
        Assert.Null(device.CurrentDriver);
        Assert.Null(device.NumaNode);
        Assert.False(device.BoundToVfio);
        Assert.Equal(11, device.IommuGroup);
        Assert.Equal("10de", device.VendorId);
        Assert.Equal("2230", device.DeviceId);
        Assert.Equal("nvidia", device.OriginalDriver);
        Assert.Equal(created.Id, Assert.Single(manager.ListDevices()).Id);
        Assert.Equal(DeviceState.Missing, Manager().GetDevice(created.Id).State);
        Assert.Single(Directory.EnumerateFiles(_state.Devices));
    }

    [Fact]
    public async Task GetDevice_VendorChangedAtAddress_ChangedWithoutNames()
    {
        var manager = Manager();
        await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));

        SysfsTrees.WriteAttribute(_host.Path, "0000:17:00.0", "vendor", "0x8086\n");
        var device = manager.GetDevice("gpu0");

        Assert.Equal(DeviceState.Changed, device.State);
        Assert.Null(device.VendorName);
        Assert.Null(device.DeviceName);
        Assert.False(device.BoundToVfio);
        Assert.Equal("10de", device.VendorId);
        Assert.Equal("2230", device.DeviceId);
    }

    [Fact]
    public async Task GetDevice_DeviceIdChangedAtAddress_Changed()
    {
        var manager = Manager();
        await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));

        SysfsTrees.WriteAttribute(_host.Path, "0000:17:00.0", "device", "0x1aef\n");

        Assert.Equal(DeviceState.Changed, manager.GetDevice("gpu0").State);
        Assert.Null(manager.GetDevice("gpu0").DeviceName);
    }

    [Fact]
    public async Task GetDevice_DeviceBackAfterChange_ReadyAgain()
    {
        var manager = Manager();
        await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));
        SysfsTrees.WriteAttribute(_host.Path, "0000:17:00.0", "vendor", "0x8086\n");
        Assert.Equal(DeviceState.Changed, manager.GetDevice("gpu0").State);

        SysfsTrees.WriteAttribute(_host.Path, "0000:17:00.0", "vendor", "0x10de\n");

        Assert.Equal(DeviceState.Ready, manager.GetDevice("gpu0").State);
        Assert.Equal("NVIDIA Corporation", manager.GetDevice("gpu0").VendorName);
    }

    [Fact]
    public async Task GetDevice_DriverSwitchedToVfioPci_BoundWithGroupPath()
    {
        var manager = Manager();
        await manager.CreateDeviceAsync(new CreateDeviceCommand("0000:17:00.0", "gpu0"));
        SysfsTrees.Link(SysfsTrees.Attribute(_host.Path, "0000:17:00.0", "driver"), Path.Combine(_host.Path, "sys/bus/pci/drivers/vfio-pci"));
        File.WriteAllText(Path.Combine(_host.Path, "dev/vfio/11"), "");

        var device = manager.GetDevice("gpu0");

        Assert.Equal(DeviceState.Bound, device.State);
        Assert.True(device.BoundToVfio);
        Assert.Equal("/dev/vfio/11", device.VfioGroupPath);
        Assert.Equal("vfio-pci", device.CurrentDriver);
        Assert.Equal("nvidia", device.OriginalDriver);
    }
}
