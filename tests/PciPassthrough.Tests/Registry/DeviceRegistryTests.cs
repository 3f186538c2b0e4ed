using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using Moq;
using PciPassthrough.Devices;
using PciPassthrough.Errors;
using PciPassthrough.Storage;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Registry.Tests;

public sealed class DeviceRegistryTests : IDisposable
{
    private readonly TempDirectory _dir = new("pcipt-registry");
    private readonly StateDirectory _state;

    public DeviceRegistryTests()
    {
        _state = new StateDirectory(_dir.Path);
        _state.EnsureCreated();
    }

    public void Dispose() => _dir.Dispose();

    private JsonFileDeviceStore Store() =>
        new(_state, new FakeTimeProvider(DateTimeOffset.UnixEpoch), NullLogger<JsonFileDeviceStore>.Instance);

    private DeviceRegistry LoadedRegistry()
    {
        var registry = new DeviceRegistry(Store());
        registry.Load();
        return registry;
    }

    private string[] RecordFiles() =>
        Directory.EnumerateFiles(_state.Devices).Select(Path.GetFileName).OfType<string>().ToArray();

    /// <summary>Makes the devices directory unusable: a regular file where it was (works as root too).</summary>
    private void BreakDevicesDirectory()
    {
        Directory.Delete(_state.Devices, recursive: true);
        File.WriteAllText(_state.Devices, "not a directory");
    }

    private static void AssertCode(string code, Action action) =>
        Assert.Equal(code, Assert.Throws<PassthroughException>(action).Code);

    [Fact]
    public void Add_ThenNewRegistryLoads_RecordRoundTrips()
    {
        var record = TestRecords.Create("0000:17:00.0", "gpu0");
        var registry = LoadedRegistry();

        registry.Add(record);
        var reloaded = LoadedRegistry();

        Assert.True(reloaded.IsLoaded);
        Assert.Equal(1, reloaded.Count);
        Assert.Equal(record, reloaded.Find(record.Id));
        Assert.Equal(record, reloaded.Find("gpu0"));
        Assert.Equal(record, reloaded.FindByAddress(PciAddress.Parse("0000:17:00.0")));
    }

    [Fact]
    public void Load_QuarantinedFiles_Reported()
    {
        File.WriteAllText(Path.Combine(_state.Devices, Cuid2Generator.Shared.Next() + ".json"), "{ corrupt");
        var good = TestRecords.Create("0000:17:00.0");
        Store().Save(good);

        var registry = LoadedRegistry();

        Assert.Single(registry.Quarantined);
        Assert.Equal(good, registry.Find(good.Id));
        Assert.Equal(1, registry.Count);
    }

    [Fact]
    public void IsLoaded_BeforeLoad_False()
    {
        Assert.False(new DeviceRegistry(Store()).IsLoaded);
    }

    [Fact]
    public void Add_DuplicateAddress_AlreadyExistsAndNothingWritten()
    {
        var registry = LoadedRegistry();
        var first = TestRecords.Create("0000:17:00.0", "first");
        registry.Add(first);

        var e = Assert.Throws<PassthroughException>(() => registry.Add(TestRecords.Create("17:00.0", "second")));

        Assert.Equal(ErrorCodes.AlreadyExists, e.Code);
        Assert.Equal(first.Id, e.Details["device_id"]);
        Assert.Null(registry.Find("second"));
        Assert.Equal(1, registry.Count);
        Assert.Single(RecordFiles());
    }

    [Fact]
    public void Add_DuplicateName_NameExistsAndAddressStaysFree()
    {
        var registry = LoadedRegistry();
        registry.Add(TestRecords.Create("0000:17:00.0", "gpu"));

        AssertCode(ErrorCodes.NameExists, () => registry.Add(TestRecords.Create("0000:18:00.0", "gpu")));

        Assert.Null(registry.FindByAddress(PciAddress.Parse("0000:18:00.0")));
        var retry = TestRecords.Create("0000:18:00.0", "gpu-2");
        registry.Add(retry);
        Assert.Equal(retry, registry.FindByAddress(PciAddress.Parse("0000:18:00.0")));
        Assert.Equal(2, RecordFiles().Length);
    }

    [Fact]
    public void Add_NameDiffersOnlyInCase_Accepted()
    {
        var registry = LoadedRegistry();
        registry.Add(TestRecords.Create("0000:17:00.0", "gpu"));

        registry.Add(TestRecords.Create("0000:18:00.0", "GPU"));

        Assert.Equal(PciAddress.Parse("0000:18:00.0"), registry.Find("GPU")!.PciAddress);
        Assert.Equal(PciAddress.Parse("0000:17:00.0"), registry.Find("gpu")!.PciAddress);
    }

    [Fact]
    public void Add_NameEqualToAnotherDevicesId_NameExists()
    {
        var registry = LoadedRegistry();
        var existing = TestRecords.Create("0000:17:00.0", "gpu");
        registry.Add(existing);

        AssertCode(ErrorCodes.NameExists, () => registry.Add(TestRecords.Create("0000:18:00.0", existing.Id)));

        Assert.Null(registry.FindByAddress(PciAddress.Parse("0000:18:00.0")));
        Assert.Equal(existing, registry.Find(existing.Id));
    }

    [Fact]
    public void Find_ByIdAndByName_SameRecord()
    {
        var registry = LoadedRegistry();
        var record = TestRecords.Create("0000:17:00.0", "gpu0");
        registry.Add(record);

        Assert.Same(registry.Find(record.Id), registry.Find("gpu0"));
        Assert.Equal(record, registry.Find(record.Id));
    }

    [Theory]
    [InlineData("")]
    [InlineData("gpu1")]
    [InlineData("GPU0")]
    [InlineData("gpu0\n")]
    [InlineData("gpu0\0")]
    [InlineData("\0")]
    [InlineData("../devices/gpu0")]
    [InlineData("../../../../etc/passwd")]
    [InlineData("..")]
    [InlineData("/")]
    [InlineData("0000:17:00.0")]
    [InlineData("pci-0000-17-00-0")]
    public void Find_UnknownOrHostileText_Null(string text)
    {
        var registry = LoadedRegistry();
        registry.Add(TestRecords.Create("0000:17:00.0", "gpu0"));

        Assert.Null(registry.Find(text));
    }

    [Fact]
    public void Find_TenKilobyteString_Null()
    {
        var registry = LoadedRegistry();
        var record = TestRecords.Create("0000:17:00.0", "gpu0");
        registry.Add(record);

        Assert.Null(registry.Find(new string('a', 10 * 1024)));
        Assert.Null(registry.Find(record.Id + new string('x', 10 * 1024)));
        Assert.Null(registry.Find(string.Concat(Enumerable.Repeat("../", 3500))));
    }

    [Fact]
    public void All_OrderedByCreatedAtThenId()
    {
        var registry = LoadedRegistry();
        var t0 = TestRecords.Epoch;
        var records = new[]
        {
            TestRecords.Create("0000:01:00.0", createdAt: t0.AddSeconds(2)),
            TestRecords.Create("0000:02:00.0", createdAt: t0),
            TestRecords.Create("0000:03:00.0", createdAt: t0.AddSeconds(1)),
            TestRecords.Create("0000:04:00.0", createdAt: t0),
            TestRecords.Create("0000:05:00.0", createdAt: t0),
            TestRecords.Create("0000:06:00.0", createdAt: t0.AddSeconds(1)),
        };
        foreach (var record in records)
        {
            registry.Add(record);
        }

        var expected = records.OrderBy(r => r.CreatedAt).ThenBy(r => r.Id, StringComparer.Ordinal).Select(r => r.Id);
        Assert.Equal(expected, registry.All().Select(r => r.Id));
        Assert.Equal(expected, LoadedRegistry().All().Select(r => r.Id));
    }

    [Fact]
    public void Update_Record_BumpsRevisionAndPersists()
    {
        var registry = LoadedRegistry();
        var record = TestRecords.Create("0000:17:00.0", "gpu0");
        registry.Add(record);

        var updated = registry.Update(record with { OriginalDriver = "nouveau" });

        Assert.Equal(record.Revision + 1, updated.Revision);
        Assert.Equal("nouveau", registry.Find("gpu0")!.OriginalDriver);
        Assert.Equal(updated, LoadedRegistry().Find(record.Id));
    }

    [Fact]
    public void Update_NameOrAddressChanged_Refused()
    {
        var registry = LoadedRegistry();
        var record = TestRecords.Create("0000:17:00.0", "gpu0");
        registry.Add(record);

        Assert.Throws<InvalidOperationException>(() => registry.Update(record with { Name = "other" }));
        Assert.Throws<InvalidOperationException>(() => registry.Update(record with { PciAddress = PciAddress.Parse("0000:18:00.0") }));
        Assert.Equal(record, registry.Find(record.Id));
    }

    [Fact]
    public void Update_UnknownRecord_NotFound()
    {
        AssertCode(ErrorCodes.NotFound, () => LoadedRegistry().Update(TestRecords.Create("0000:17:00.0")));
    }

    [Fact]
    public void Remove_Record_GoneFromMemoryAndDisk()
    {
        var registry = LoadedRegistry();
        var record = TestRecords.Create("0000:17:00.0", "gpu0");
        registry.Add(record);

        registry.Remove(record);

        Assert.Null(registry.Find(record.Id));
        Assert.Null(registry.Find("gpu0"));
        Assert.Null(registry.FindByAddress(record.PciAddress));
        Assert.Empty(RecordFiles());
        Assert.Equal(0, LoadedRegistry().Count);
        registry.Add(TestRecords.Create("0000:17:00.0", "gpu0"));
    }

    [Fact]
    public void Add_StoreBroken_StorageUnavailableAndNothingReserved()
    {
        var registry = LoadedRegistry();
        var existing = TestRecords.Create("0000:17:00.0", "gpu0");
        registry.Add(existing);
        BreakDevicesDirectory();

        var record = TestRecords.Create("0000:18:00.0", "gpu1");
        var e = Assert.Throws<PassthroughException>(() => registry.Add(record));

        Assert.Equal(ErrorCodes.StorageUnavailable, e.Code);
        Assert.IsAssignableFrom<IOException>(e.InnerException);
        Assert.Null(registry.Find(record.Id));
        Assert.Null(registry.Find("gpu1"));
        Assert.Null(registry.FindByAddress(record.PciAddress));
        Assert.Equal(1, registry.Count);
        Assert.Equal(existing, registry.Find("gpu0"));

        // Nothing was reserved: once the directory is back, the same name and address can be added.
        File.Delete(_state.Devices);
        Directory.CreateDirectory(_state.Devices);
        registry.Add(record);
        Assert.Equal(record, registry.Find("gpu1"));
    }

    [Fact]
    public void Update_StoreBroken_StorageUnavailableAndMemoryUnchanged()
    {
        var registry = LoadedRegistry();
        var record = TestRecords.Create("0000:17:00.0", "gpu0");
        registry.Add(record);
        BreakDevicesDirectory();

        AssertCode(ErrorCodes.StorageUnavailable, () => registry.Update(record with { OriginalDriver = "nouveau" }));

        Assert.Equal(record, registry.Find("gpu0"));
        Assert.Equal(record.Revision, registry.Find(record.Id)!.Revision);
    }

    [Fact]
    public void Remove_StoreBroken_StorageUnavailableAndMemoryUnchanged()
    {
        var registry = LoadedRegistry();
        var record = TestRecords.Create("0000:17:00.0", "gpu0");
        registry.Add(record);
        BreakDevicesDirectory();

        AssertCode(ErrorCodes.StorageUnavailable, () => registry.Remove(record));

        Assert.Equal(record, registry.Find(record.Id));
        Assert.Equal(record, registry.Find("gpu0"));
        Assert.Equal(record, registry.FindByAddress(record.PciAddress));
        Assert.Equal(1, registry.Count);
    }

    [Fact]
    public void Remove_StoreThrows_StorageUnavailableAndMemoryUnchanged()
    {
        var store = new Mock<IDeviceStore>();
        store.Setup(s => s.LoadAll()).Returns(new RegistryLoadResult([], []));
        store.Setup(s => s.Delete(It.IsAny<string>())).Throws(new IOException("EROFS"));
        var registry = new DeviceRegistry(store.Object);
        registry.Load();
        var record = TestRecords.Create("0000:17:00.0", "gpu0");
        registry.Add(record);

        AssertCode(ErrorCodes.StorageUnavailable, () => registry.Remove(record));

        Assert.Equal(record, registry.Find("gpu0"));
        store.Verify(s => s.Save(record), Times.Once);
        store.Verify(s => s.Delete(record.Id), Times.Once);
    }

    [Fact]
    public void Add_StoreThrowsUnauthorized_StorageUnavailable()
    {
        var store = new Mock<IDeviceStore>();
        store.Setup(s => s.Save(It.IsAny<DeviceRecord>())).Throws(new UnauthorizedAccessException("EACCES"));
        var registry = new DeviceRegistry(store.Object);

        AssertCode(ErrorCodes.StorageUnavailable, () => registry.Add(TestRecords.Create("0000:17:00.0", "gpu0")));

        Assert.Null(registry.Find("gpu0"));
        Assert.Equal(0, registry.Count);
    }

    [Fact]
    public async Task Add_SameNameFromManyTasks_ExactlyOneWins()
    {
        var registry = LoadedRegistry();
        const int Tasks = 32;
        using var gate = new Barrier(Tasks);
        var outcomes = await Task.WhenAll(Enumerable.Range(0, Tasks).Select(i => Task.Factory.StartNew(() =>
        {
            var record = TestRecords.Create(new PciAddress(0, i + 1, 0, 0).ToString(), "contended");
            gate.SignalAndWait();
            try
            {
                registry.Add(record);
                return "ok";
            }
            catch (PassthroughException e)
            {
                return e.Code;
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)));

        Assert.Single(outcomes, o => o == "ok");
        Assert.Equal(Tasks - 1, outcomes.Count(o => o == ErrorCodes.NameExists));
        Assert.Single(RecordFiles());
        Assert.Equal(1, registry.Count);
        var winner = registry.Find("contended")!;
        Assert.Equal(winner, Assert.Single(LoadedRegistry().All()));
        // The losers' addresses were released.
        Assert.Equal(1, Enumerable.Range(1, Tasks).Count(bus => registry.FindByAddress(new PciAddress(0, bus, 0, 0)) is not null));
    }

    [Fact]
    public async Task Add_SameAddressFromManyTasks_ExactlyOneWins()
    {
        var registry = LoadedRegistry();
        const int Tasks = 32;
        using var gate = new Barrier(Tasks);
        var outcomes = await Task.WhenAll(Enumerable.Range(0, Tasks).Select(i => Task.Factory.StartNew(() =>
        {
            var record = TestRecords.Create("0000:17:00.0", $"gpu-{i}");
            gate.SignalAndWait();
            try
            {
                registry.Add(record);
                return "ok";
            }
            catch (PassthroughException e)
            {
                return e.Code;
            }
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)));

        Assert.Single(outcomes, o => o == "ok");
        Assert.Equal(Tasks - 1, outcomes.Count(o => o == ErrorCodes.AlreadyExists));
        Assert.Single(RecordFiles());
        var winner = registry.FindByAddress(PciAddress.Parse("0000:17:00.0"))!;
        Assert.Equal(winner, registry.Find(winner.Name));
        // The losers' names were released.
        Assert.Equal(1, Enumerable.Range(0, Tasks).Count(i => registry.Find($"gpu-{i}") is not null));
        Assert.Equal(winner, Assert.Single(LoadedRegistry().All()));
    }
}
