using System.Text.Json;
using Microsoft.Extensions.Logging;
using PciPassthrough.Devices;
using PciPassthrough.Storage;

namespace PciPassthrough.Registry;

/// <summary>
/// One JSON file per device, <c>devices/&lt;id&gt;.json</c>, each written with <see cref="AtomicFile"/>.
/// File names come only from ids this daemon generated and validated, never from request input.
/// </summary>
public sealed partial class JsonFileDeviceStore(StateDirectory state, TimeProvider time, ILogger<JsonFileDeviceStore> logger)
    : IDeviceStore
{
    private const string Extension = ".json";

    public RegistryLoadResult LoadAll()
    {
        var records = new List<DeviceRecord>();
        var quarantined = new List<QuarantinedFile>();
        var names = new Dictionary<string, string>(StringComparer.Ordinal);
        var addresses = new Dictionary<PciAddress, string>();

        // Sorted so that, of two files claiming the same name or address, the same one always wins.
        foreach (var path in Directory.EnumerateFiles(state.Devices).Order(StringComparer.Ordinal))
        {
            var fileName = Path.GetFileName(path);
            if (AtomicFile.IsTemporary(fileName))
            {
                // A write that crashed before its rename: it was never acknowledged, the previous
                // version of the record (if any) is intact.
                LogStaleTemporary(logger, fileName);
                File.Delete(path);
                continue;
            }

            var id = fileName.EndsWith(Extension, StringComparison.Ordinal) ? fileName[..^Extension.Length] : null;
            if (!Cuid2Generator.IsCuid2(id))
            {
                LogForeignFile(logger, fileName);
                continue;
            }

            var (record, problem) = Read(path, id);
            if (record is not null)
            {
                if (names.TryGetValue(record.Name, out var nameOwner))
                {
                    problem = $"name '{record.Name}' is already used by record {nameOwner}";
                }
                else if (addresses.TryGetValue(record.PciAddress, out var addressOwner))
                {
                    problem = $"PCI address {record.PciAddress} is already registered by record {addressOwner}";
                }
            }

            if (problem is not null)
            {
                quarantined.Add(MoveToQuarantine(path, fileName, problem));
                continue;
            }

            names[record!.Name] = record.Id;
            addresses[record.PciAddress] = record.Id;
            records.Add(record);
        }

        return new RegistryLoadResult(records, quarantined);
    }

    public void Save(DeviceRecord record)
    {
        var bytes = JsonSerializer.SerializeToUtf8Bytes(record, RegistryJsonContext.Default.DeviceRecord);
        AtomicFile.WriteAllBytes(PathOf(record.Id), bytes);
    }

    public void Delete(string id) =>
        // No existence check: deleting a missing file is a no-op, and the directory fsync that
        // follows fails when devices/ itself is broken, which must surface as storage_unavailable.
        AtomicFile.Delete(PathOf(id));

    private string PathOf(string id)
    {
        if (!Cuid2Generator.IsCuid2(id))
        {
            throw new ArgumentException("Not a device id", nameof(id));
        }

        return Path.Combine(state.Devices, id + Extension);
    }

    private static (DeviceRecord? Record, string? Problem) Read(string path, string id)
    {
        DeviceRecord? record;
        try
        {
            record = JsonSerializer.Deserialize(File.ReadAllBytes(path), RegistryJsonContext.Default.DeviceRecord);
        }
        catch (JsonException e)
        {
            return (null, $"not a valid device record: {e.Message}");
        }

        if (record is null)
        {
            return (null, "empty record");
        }

        if (record.Schema > DeviceRecord.CurrentSchema)
        {
            return (null, $"written by a newer daemon (schema {record.Schema})");
        }

        if (record.Id != id)
        {
            return (null, $"record id {record.Id} does not match its file name");
        }

        if (!DeviceNames.IsWellFormed(record.Name))
        {
            return (null, "invalid device name");
        }

        if (!PciId.TryParse(record.VendorId, out _) || !PciId.TryParse(record.DeviceId, out _))
        {
            return (null, "invalid vendor or device id");
        }

        return (record, null);
    }

    private QuarantinedFile MoveToQuarantine(string path, string fileName, string reason)
    {
        var now = time.GetUtcNow().UtcDateTime;
        var target = Path.Combine(state.Quarantine, $"{fileName}.{now:yyyyMMdd'T'HHmmssfff'Z'}");
        for (var n = 1; File.Exists(target); n++)
        {
            target = Path.Combine(state.Quarantine, $"{fileName}.{now:yyyyMMdd'T'HHmmssfff'Z'}.{n}");
        }

        AtomicFile.Move(path, target);
        LogQuarantined(logger, fileName, target, reason);
        return new QuarantinedFile(fileName, target, reason, now);
    }

    [LoggerMessage(EventId = 2101, Level = LogLevel.Error,
        Message = "Device record {FileName} cannot be loaded ({Reason}); moved to {QuarantinePath}, bytes kept")]
    private static partial void LogQuarantined(ILogger logger, string fileName, string quarantinePath, string reason);

    [LoggerMessage(EventId = 2102, Level = LogLevel.Warning,
        Message = "Removing {FileName}, left by a write that did not complete")]
    private static partial void LogStaleTemporary(ILogger logger, string fileName);

    [LoggerMessage(EventId = 2103, Level = LogLevel.Warning,
        Message = "Ignoring {FileName} in the devices directory: not a device record file name")]
    private static partial void LogForeignFile(ILogger logger, string fileName);
}
