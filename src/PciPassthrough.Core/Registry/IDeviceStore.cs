namespace PciPassthrough.Registry;

/// <summary>Durable storage of device records.</summary>
public interface IDeviceStore
{
    /// <summary>Reads every record; unreadable ones are moved aside and reported, never deleted.</summary>
    RegistryLoadResult LoadAll();

    /// <summary>Writes a record atomically: afterwards the old or the new record is on disk, never a mix.</summary>
    /// <exception cref="IOException">The state directory cannot be written.</exception>
    void Save(DeviceRecord record);

    /// <summary>Removes a record durably.</summary>
    void Delete(string id);
}

/// <summary>The outcome of loading the state directory at start-up.</summary>
public sealed record RegistryLoadResult(IReadOnlyList<DeviceRecord> Records, IReadOnlyList<QuarantinedFile> Quarantined);

/// <summary>A file that could not be loaded, where it was moved and why.</summary>
public sealed record QuarantinedFile(string FileName, string QuarantinePath, string Reason, DateTime At);
