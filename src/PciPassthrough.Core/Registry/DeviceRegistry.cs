using System.Collections.Concurrent;
using PciPassthrough.Devices;
using PciPassthrough.Errors;

namespace PciPassthrough.Registry;

/// <summary>
/// Every device record, held in memory (loaded once at start-up) and written through to the
/// <see cref="IDeviceStore"/>. Lookups by id, name and address are dictionary reads. A change
/// reaches memory only after it is on disk, so a failed write changes nothing.
/// </summary>
/// <remarks>
/// Uniqueness of names and addresses is enforced by reserving them atomically before the record
/// is written: of two concurrent creates with the same name or address exactly one wins. Updates
/// of one record are serialized by the caller (the per-device lock in <see cref="DeviceManager"/>).
/// </remarks>
public sealed class DeviceRegistry(IDeviceStore store)
{
    private readonly ConcurrentDictionary<string, DeviceRecord> _byId = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, string> _idByName = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<PciAddress, string> _idByAddress = new();
    private volatile bool _loaded;

    public bool IsLoaded => _loaded;

    public IReadOnlyList<QuarantinedFile> Quarantined { get; private set; } = [];

    public int Count => _byId.Count;

    public void Load()
    {
        var result = store.LoadAll();
        foreach (var record in result.Records)
        {
            _byId[record.Id] = record;
            _idByName[record.Name] = record.Id;
            _idByAddress[record.PciAddress] = record.Id;
        }

        Quarantined = result.Quarantined;
        _loaded = true;
    }

    /// <summary>Every record, ordered by creation time then id.</summary>
    public IReadOnlyList<DeviceRecord> All() =>
        _byId.Values.OrderBy(r => r.CreatedAt).ThenBy(r => r.Id, StringComparer.Ordinal).ToList();

    /// <summary>A record by id, or else by name. Never touches the disk.</summary>
    public DeviceRecord? Find(string idOrName)
    {
        if (string.IsNullOrEmpty(idOrName) || idOrName.Length > DeviceNames.MaxLength)
        {
            return null;
        }

        if (_byId.TryGetValue(idOrName, out var record))
        {
            return record;
        }

        return _idByName.TryGetValue(idOrName, out var id) && _byId.TryGetValue(id, out record) ? record : null;
    }

    public DeviceRecord? FindByAddress(PciAddress address) =>
        _idByAddress.TryGetValue(address, out var id) && _byId.TryGetValue(id, out var record) ? record : null;

    /// <summary>Registers a new record.</summary>
    /// <exception cref="PassthroughException"><c>already_exists</c>, <c>name_exists</c> or <c>storage_unavailable</c>.</exception>
    public void Add(DeviceRecord record)
    {
        if (!_idByAddress.TryAdd(record.PciAddress, record.Id))
        {
            throw DeviceErrors.AlreadyExists(record.PciAddress.ToString(), _idByAddress.GetValueOrDefault(record.PciAddress) ?? "");
        }

        // A name equal to another device's id would make lookups by that string ambiguous.
        if (_byId.ContainsKey(record.Name) || !_idByName.TryAdd(record.Name, record.Id))
        {
            _idByAddress.TryRemove(new KeyValuePair<PciAddress, string>(record.PciAddress, record.Id));
            throw DeviceErrors.NameExists(record.Name);
        }

        try
        {
            store.Save(record);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _idByName.TryRemove(new KeyValuePair<string, string>(record.Name, record.Id));
            _idByAddress.TryRemove(new KeyValuePair<PciAddress, string>(record.PciAddress, record.Id));
            throw DeviceErrors.StorageUnavailable("write device record", e);
        }

        _byId[record.Id] = record;
    }

    /// <summary>Replaces a record (same id, name and address). The caller holds the device's lock.</summary>
    public DeviceRecord Update(DeviceRecord record)
    {
        var current = _byId.GetValueOrDefault(record.Id) ?? throw DeviceErrors.NotFound();
        if (current.Name != record.Name || current.PciAddress != record.PciAddress)
        {
            throw new InvalidOperationException("A record's name and address never change");
        }

        var next = record with { Revision = current.Revision + 1 };
        try
        {
            store.Save(next);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw DeviceErrors.StorageUnavailable("write device record", e);
        }

        _byId[next.Id] = next;
        return next;
    }

    /// <summary>Removes a record. The caller holds the device's lock.</summary>
    public void Remove(DeviceRecord record)
    {
        try
        {
            store.Delete(record.Id);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw DeviceErrors.StorageUnavailable("delete device record", e);
        }

        _byId.TryRemove(record.Id, out _);
        _idByName.TryRemove(new KeyValuePair<string, string>(record.Name, record.Id));
        _idByAddress.TryRemove(new KeyValuePair<PciAddress, string>(record.PciAddress, record.Id));
    }
}
