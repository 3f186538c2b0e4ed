using System.Text;
using System.Text.Json.Nodes;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using PciPassthrough.Devices;
using PciPassthrough.Storage;
using PciPassthrough.Tests.TestDoubles;

namespace PciPassthrough.Registry.Tests;

public sealed class JsonFileDeviceStoreTests : IDisposable
{
    private readonly TempDirectory _dir = new("pcipt-store");
    private readonly StateDirectory _state;
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 3, 4, 5, 6, 7, 890, TimeSpan.Zero));

    public JsonFileDeviceStoreTests()
    {
        _state = new StateDirectory(_dir.Path);
        _state.EnsureCreated();
    }

    public void Dispose() => _dir.Dispose();

    private JsonFileDeviceStore Store() => new(_state, _time, NullLogger<JsonFileDeviceStore>.Instance);

    private string RecordPath(string id) => Path.Combine(_state.Devices, id + ".json");

    private static string[] Files(string directory) =>
        Directory.EnumerateFileSystemEntries(directory).Select(Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToArray();

    /// <summary>Saves a valid record, then rewrites one member of its JSON.</summary>
    private string SaveEdited(DeviceRecord record, Action<JsonObject> edit)
    {
        Store().Save(record);
        var path = RecordPath(record.Id);
        var json = JsonNode.Parse(File.ReadAllBytes(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
        return path;
    }

    private void AssertQuarantinedByteForByte(RegistryLoadResult result, string fileName, byte[] original)
    {
        var entry = Assert.Single(result.Quarantined, q => q.FileName == fileName);
        Assert.False(File.Exists(Path.Combine(_state.Devices, fileName)), $"{fileName} is still in devices/");
        Assert.Equal(_state.Quarantine, Path.GetDirectoryName(entry.QuarantinePath));
        Assert.StartsWith(fileName + ".", Path.GetFileName(entry.QuarantinePath), StringComparison.Ordinal);
        Assert.Equal(original, File.ReadAllBytes(entry.QuarantinePath));
        Assert.False(string.IsNullOrWhiteSpace(entry.Reason));
        Assert.Equal(_time.GetUtcNow().UtcDateTime, entry.At);
    }

    [Fact]
    public void SaveThenLoadAll_Record_RoundTripsEveryField()
    {
        var record = TestRecords.Create("0000:17:00.0", "gpu0") with
        {
            Revision = 7,
            Binding = new BindingRecord
            {
                BoundAt = TestRecords.Epoch.AddMinutes(1),
                Group = true,
                Functions =
                [
                    new BoundFunction { PciAddress = PciAddress.Parse("0000:17:00.0"), OriginalDriver = "nvidia" },
                    new BoundFunction { PciAddress = PciAddress.Parse("0000:17:00.1"), OriginalDriver = "snd_hda_intel", OriginalDriverOverride = "x" },
                ],
            },
            Attachment = new AttachmentRecord { InstanceId = "vm-1", Pid = 1234, PidStartTime = 99, AttachedAt = TestRecords.Epoch.AddMinutes(2) },
            Quarantine = new QuarantineRecord { Reason = "r", Code = "unbind_timeout", Since = TestRecords.Epoch.AddMinutes(3) },
        };
        Store().Save(record);

        var result = Store().LoadAll();

        var loaded = Assert.Single(result.Records);
        Assert.Empty(result.Quarantined);
        Assert.Equal(record with { Binding = null }, loaded with { Binding = null });
        Assert.Equal(record.Binding.Functions, loaded.Binding!.Functions);
        Assert.Equal(record.Binding.BoundAt, loaded.Binding.BoundAt);
        Assert.True(loaded.Binding.Group);
        Assert.Equal([record.Id + ".json"], Files(_state.Devices));
    }

    [Fact]
    public void Save_Record_SnakeCaseJsonNamedById()
    {
        var record = TestRecords.Create("0000:0A:00.0", "nic");

        Store().Save(record);

        var json = JsonNode.Parse(File.ReadAllBytes(RecordPath(record.Id)))!.AsObject();
        Assert.Equal(record.Id, (string?)json["id"]);
        Assert.Equal("0000:0a:00.0", (string?)json["pci_address"]);
        Assert.Equal("nic", (string?)json["name"]);
        Assert.Equal("gpu", (string?)json["type"]);
        Assert.Equal(DeviceRecord.CurrentSchema, (int?)json["schema"]);
        Assert.Equal("nvidia", (string?)json["original_driver"]);
    }

    [Fact]
    public void Save_Twice_ReplacesTheFile()
    {
        var record = TestRecords.Create("0000:17:00.0");
        Store().Save(record);

        Store().Save(record with { Revision = 2, OriginalDriver = null });

        var loaded = Assert.Single(Store().LoadAll().Records);
        Assert.Equal(2, loaded.Revision);
        Assert.Null(loaded.OriginalDriver);
        Assert.Single(Files(_state.Devices));
    }

    [Fact]
    public void Save_IdNotCuid2_RefusedWithoutWriting()
    {
        Assert.Throws<ArgumentException>(() => Store().Save(TestRecords.Create("0000:17:00.0", id: "../../etc/passwd")));
        Assert.Throws<ArgumentException>(() => Store().Save(TestRecords.Create("0000:17:00.0", id: "NOT-AN-ID")));

        Assert.Empty(Files(_state.Devices));
    }

    [Fact]
    public void Delete_SavedRecord_Gone()
    {
        var record = TestRecords.Create("0000:17:00.0");
        Store().Save(record);

        Store().Delete(record.Id);

        Assert.Empty(Files(_state.Devices));
        Assert.Empty(Store().LoadAll().Records);
    }

    [Fact]
    public void Delete_UnknownId_NoError()
    {
        Store().Delete(Cuid2Generator.Shared.Next());

        Assert.Empty(Files(_state.Devices));
    }

    [Fact]
    public void LoadAll_EmptyDirectory_Empty()
    {
        var result = Store().LoadAll();

        Assert.Empty(result.Records);
        Assert.Empty(result.Quarantined);
    }

    [Theory]
    [InlineData("{ not json")]
    [InlineData("")]
    [InlineData("null")]
    [InlineData("[]")]
    [InlineData("{}")]
    [InlineData("\u00ff\u00fe garbage")]
    public void LoadAll_CorruptJson_QuarantinedByteForByteOthersLoad(string content)
    {
        var good = TestRecords.Create("0000:17:00.0");
        Store().Save(good);
        var badId = Cuid2Generator.Shared.Next();
        var bytes = Encoding.Latin1.GetBytes(content);
        File.WriteAllBytes(RecordPath(badId), bytes);

        var result = Store().LoadAll();

        Assert.Equal(good.Id, Assert.Single(result.Records).Id);
        AssertQuarantinedByteForByte(result, badId + ".json", bytes);
        Assert.Equal([good.Id + ".json"], Files(_state.Devices));
    }

    [Fact]
    public void LoadAll_TruncatedRecord_Quarantined()
    {
        var record = TestRecords.Create("0000:17:00.0");
        Store().Save(record);
        var bytes = File.ReadAllBytes(RecordPath(record.Id))[..40];
        File.WriteAllBytes(RecordPath(record.Id), bytes);

        var result = Store().LoadAll();

        Assert.Empty(result.Records);
        AssertQuarantinedByteForByte(result, record.Id + ".json", bytes);
    }

    [Fact]
    public void LoadAll_IdDiffersFromFileName_Quarantined()
    {
        var record = TestRecords.Create("0000:17:00.0");
        Store().Save(record);
        var otherId = Cuid2Generator.Shared.Next();
        File.Move(RecordPath(record.Id), RecordPath(otherId));
        var bytes = File.ReadAllBytes(RecordPath(otherId));

        var result = Store().LoadAll();

        Assert.Empty(result.Records);
        AssertQuarantinedByteForByte(result, otherId + ".json", bytes);
        Assert.Contains("file name", Assert.Single(result.Quarantined).Reason, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("-bad")]
    [InlineData("a")]
    [InlineData("name with space")]
    [InlineData("name\n")]
    [InlineData("../../etc")]
    public void LoadAll_InvalidName_Quarantined(string name)
    {
        var good = TestRecords.Create("0000:17:00.0");
        Store().Save(good);
        var bad = TestRecords.Create("0000:18:00.0");
        var path = SaveEdited(bad, json => json["name"] = name);
        var bytes = File.ReadAllBytes(path);

        var result = Store().LoadAll();

        Assert.Equal(good.Id, Assert.Single(result.Records).Id);
        AssertQuarantinedByteForByte(result, bad.Id + ".json", bytes);
    }

    [Theory]
    [InlineData("pci_address", "0000:00:20.0")]
    [InlineData("vendor_id", "zzzz")]
    [InlineData("device_id", "123456")]
    [InlineData("type", "bogus")]
    public void LoadAll_InvalidField_Quarantined(string member, string value)
    {
        var bad = TestRecords.Create("0000:18:00.0");
        var path = SaveEdited(bad, json => json[member] = value);
        var bytes = File.ReadAllBytes(path);

        var result = Store().LoadAll();

        Assert.Empty(result.Records);
        AssertQuarantinedByteForByte(result, bad.Id + ".json", bytes);
    }

    [Fact]
    public void LoadAll_MissingRequiredMember_Quarantined()
    {
        var bad = TestRecords.Create("0000:18:00.0");
        var path = SaveEdited(bad, json => json.Remove("pci_address"));
        var bytes = File.ReadAllBytes(path);

        var result = Store().LoadAll();

        Assert.Empty(result.Records);
        AssertQuarantinedByteForByte(result, bad.Id + ".json", bytes);
    }

    [Fact]
    public void LoadAll_NewerSchema_QuarantinedNotRewritten()
    {
        var good = TestRecords.Create("0000:17:00.0");
        Store().Save(good);
        var newer = TestRecords.Create("0000:18:00.0");
        var path = SaveEdited(newer, json =>
        {
            json["schema"] = DeviceRecord.CurrentSchema + 1;
            json["some_future_member"] = new JsonObject { ["x"] = 1 };
        });
        var bytes = File.ReadAllBytes(path);

        var result = Store().LoadAll();

        Assert.Equal(good.Id, Assert.Single(result.Records).Id);
        AssertQuarantinedByteForByte(result, newer.Id + ".json", bytes);
        Assert.Contains("newer", Assert.Single(result.Quarantined).Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadAll_TwoFilesClaimSameName_OneLoadsOtherQuarantined()
    {
        var a = TestRecords.Create("0000:17:00.0", "gpu");
        var b = TestRecords.Create("0000:18:00.0", "gpu");
        Store().Save(a);
        Store().Save(b);
        var (first, second) = string.CompareOrdinal(a.Id, b.Id) < 0 ? (a, b) : (b, a);
        var secondBytes = File.ReadAllBytes(RecordPath(second.Id));

        var result = Store().LoadAll();

        Assert.Equal(first.Id, Assert.Single(result.Records).Id);
        AssertQuarantinedByteForByte(result, second.Id + ".json", secondBytes);
        Assert.Contains("gpu", Assert.Single(result.Quarantined).Reason, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadAll_TwoFilesClaimSameAddress_OneLoadsOtherQuarantined()
    {
        var a = TestRecords.Create("0000:17:00.0", "gpu-a");
        var b = TestRecords.Create("0000:17:00.0", "gpu-b");
        Store().Save(a);
        Store().Save(b);
        var (first, second) = string.CompareOrdinal(a.Id, b.Id) < 0 ? (a, b) : (b, a);
        var secondBytes = File.ReadAllBytes(RecordPath(second.Id));

        var result = Store().LoadAll();

        Assert.Equal(first.Id, Assert.Single(result.Records).Id);
        AssertQuarantinedByteForByte(result, second.Id + ".json", secondBytes);
    }

    [Fact]
    public void LoadAll_SameFileNameQuarantinedTwiceAtSameTime_BothKept()
    {
        var id = Cuid2Generator.Shared.Next();
        File.WriteAllText(RecordPath(id), "first");
        var first = Store().LoadAll();
        File.WriteAllText(RecordPath(id), "second");

        var second = Store().LoadAll();

        var a = Assert.Single(first.Quarantined).QuarantinePath;
        var b = Assert.Single(second.Quarantined).QuarantinePath;
        Assert.NotEqual(a, b);
        Assert.Equal("first", File.ReadAllText(a));
        Assert.Equal("second", File.ReadAllText(b));
    }

    [Fact]
    public void LoadAll_StaleTemporaryFiles_Deleted()
    {
        var record = TestRecords.Create("0000:17:00.0");
        Store().Save(record);
        var stale = Path.Combine(_state.Devices, $".{record.Id}.json.{Guid.NewGuid():N}.tmp");
        var orphan = Path.Combine(_state.Devices, $".{Cuid2Generator.Shared.Next()}.json.{Guid.NewGuid():N}.tmp");
        File.WriteAllText(stale, "{ half written");
        File.WriteAllText(orphan, "");

        var result = Store().LoadAll();

        Assert.Equal(record.Id, Assert.Single(result.Records).Id);
        Assert.Empty(result.Quarantined);
        Assert.Equal([record.Id + ".json"], Files(_state.Devices));
        Assert.Empty(Files(_state.Quarantine));
    }

    [Fact]
    public void LoadAll_NonRecordFiles_IgnoredAndLeftAlone()
    {
        var record = TestRecords.Create("0000:17:00.0");
        Store().Save(record);
        string[] foreign =
        [
            "README", "notes.json", "backup.json.bak", record.Id + ".json.bak", record.Id, "ABCDEFGHIJKLMNOPQRSTUVWX.json",
            "0bcdefghijklmnopqrstuvwx.json", ".hidden", "pci-0000-17-00-0.json",
        ];
        foreach (var name in foreign)
        {
            File.WriteAllText(Path.Combine(_state.Devices, name), "{ not a record");
        }

        Directory.CreateDirectory(Path.Combine(_state.Devices, Cuid2Generator.Shared.Next() + ".json"));

        var result = Store().LoadAll();

        Assert.Equal(record.Id, Assert.Single(result.Records).Id);
        Assert.Empty(result.Quarantined);
        Assert.Equal(foreign.Length + 2, Files(_state.Devices).Length);
        Assert.All(foreign, name => Assert.Equal("{ not a record", File.ReadAllText(Path.Combine(_state.Devices, name))));
        Assert.Empty(Files(_state.Quarantine));
    }

    [Fact]
    public void LoadAll_StoredNameNowReservedForNewDevices_StillLoads()
    {
        // "available" is refused for new devices (it is an API path), but a record that has it
        // must never be pushed out of the registry for that.
        var record = TestRecords.Create("0000:17:00.0", name: "available");
        Store().Save(record);

        var result = Store().LoadAll();

        Assert.Equal("available", Assert.Single(result.Records).Name);
        Assert.Empty(result.Quarantined);
    }
}
