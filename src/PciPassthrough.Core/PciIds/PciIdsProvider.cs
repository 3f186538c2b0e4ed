using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using PciPassthrough.Sysfs;

namespace PciPassthrough.PciIds;

/// <summary>Loads the pci.ids database once, on first use, from <c>Host:PciIds</c> or the usual locations.</summary>
public sealed partial class PciIdsProvider
{
    /// <summary>Where distributions install pci.ids (Debian: misc; Fedora and friends: hwdata).</summary>
    public static readonly IReadOnlyList<string> DefaultLocations = ["/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"];

    private readonly Lazy<PciIdsDatabase> _database;

    public PciIdsProvider(IOptions<HostSystemOptions> options, ILogger<PciIdsProvider> logger)
    {
        _database = new Lazy<PciIdsDatabase>(() => Load(options.Value.PciIds, logger));
    }

    public PciIdsProvider(PciIdsDatabase database)
    {
        _database = new Lazy<PciIdsDatabase>(database);
    }

    public PciIdsDatabase Database => _database.Value;

    /// <summary>The configured path, else the first default location that exists; null when none.</summary>
    public static string? ResolvePath(string? configured) =>
        !string.IsNullOrEmpty(configured) ? configured : DefaultLocations.FirstOrDefault(File.Exists);

    private static PciIdsDatabase Load(string? configured, ILogger logger)
    {
        var path = ResolvePath(configured);
        if (path is null)
        {
            LogNoDatabase(logger, string.Join(", ", DefaultLocations));
            return PciIdsDatabase.Empty;
        }

        try
        {
            var db = PciIdsDatabase.Load(path);
            LogLoaded(logger, path, db.VendorCount, db.DeviceCount);
            return db;
        }
        catch (IOException e)
        {
            LogLoadFailed(logger, e, path);
            return PciIdsDatabase.Empty;
        }
        catch (UnauthorizedAccessException e)
        {
            LogLoadFailed(logger, e, path);
            return PciIdsDatabase.Empty;
        }
    }

    [LoggerMessage(EventId = 1001, Level = LogLevel.Warning,
        Message = "No pci.ids database found (looked at {Locations}); vendor and device names will be null")]
    private static partial void LogNoDatabase(ILogger logger, string locations);

    [LoggerMessage(EventId = 1002, Level = LogLevel.Information,
        Message = "Loaded pci.ids from {Path}: {VendorCount} vendors, {DeviceCount} devices")]
    private static partial void LogLoaded(ILogger logger, string path, int vendorCount, int deviceCount);

    [LoggerMessage(EventId = 1003, Level = LogLevel.Error,
        Message = "Cannot read pci.ids at {Path}; vendor and device names will be null")]
    private static partial void LogLoadFailed(ILogger logger, Exception exception, string path);
}
