using System.Globalization;

namespace PciPassthrough.PciIds;

/// <summary>
/// The pci.ids database (the file <c>lspci</c> reads): vendor, device and subsystem names, and
/// class names. Lookups return null for ids the file does not list; names are never invented.
/// </summary>
/// <remarks>
/// Format: <c>vvvv  name</c> at column 0; <c>\tdddd  name</c> for a device of the vendor above;
/// <c>\t\tsvsv sdsd  name</c> for a subsystem of the device above; <c>C cc  name</c> starts a class,
/// followed by <c>\tss  name</c> subclasses and <c>\t\tpp  name</c> programming interfaces.
/// Lines starting with <c>#</c> and blank lines are ignored.
/// </remarks>
public sealed class PciIdsDatabase
{
    private readonly Dictionary<int, string> _vendors = [];
    private readonly Dictionary<int, string> _devices = [];          // key: vendor << 16 | device
    private readonly Dictionary<long, string> _subsystems = [];      // key: vendor, device, subvendor, subdevice
    private readonly Dictionary<int, string> _classes = [];          // key: base class << 8 | subclass, 0xff.. for base only

    public static PciIdsDatabase Empty { get; } = new();

    public int VendorCount => _vendors.Count;

    public int DeviceCount => _devices.Count;

    public int SubsystemCount => _subsystems.Count;

    public static PciIdsDatabase Load(string path)
    {
        using var reader = new StreamReader(path, System.Text.Encoding.UTF8, detectEncodingFromByteOrderMarks: true);
        return Parse(reader);
    }

    public static PciIdsDatabase Parse(TextReader reader)
    {
        var db = new PciIdsDatabase();
        int? vendor = null, device = null, baseClass = null;
        var inClasses = false;
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            if (line.Length == 0 || line[0] == '#')
            {
                continue;
            }

            var depth = 0;
            while (depth < line.Length && line[depth] == '\t')
            {
                depth++;
            }

            var body = line.AsSpan(depth);
            if (depth == 0)
            {
                device = null;
                if (body.StartsWith("C ", StringComparison.Ordinal))
                {
                    inClasses = true;
                    vendor = null;
                    baseClass = TryEntry(body[2..], 2, out var id, out var name) ? id : null;
                    if (baseClass is { } bc)
                    {
                        db._classes[(bc << 8) | 0xff] = name;
                    }

                    continue;
                }

                // Any other top-level record type (e.g. a future section) ends the vendor list.
                inClasses = false;
                baseClass = null;
                vendor = TryEntry(body, 4, out var vid, out var vname) ? vid : null;
                if (vendor is not null)
                {
                    db._vendors[vid] = vname;
                }
            }
            else if (inClasses)
            {
                if (depth == 1 && baseClass is { } bc && TryEntry(body, 2, out var sub, out var sname))
                {
                    db._classes[(bc << 8) | sub] = sname;
                }
            }
            else if (depth == 1)
            {
                device = vendor is { } v && TryEntry(body, 4, out var did, out var dname)
                    ? Store(db._devices, (v << 16) | did, dname, did)
                    : null;
            }
            else if (depth == 2 && vendor is { } v && device is { } d)
            {
                // "svsv sdsd  name": the two ids are separated by a single space.
                if (body.Length > 10 && body[4] == ' ' && TryHex(body[..4], out var sv) && TryHex(body[5..9], out var sd) &&
                    char.IsWhiteSpace(body[9]))
                {
                    db._subsystems[SubsystemKey(v, d, sv, sd)] = body[10..].Trim().ToString();
                }
            }
        }

        return db;
    }

    public string? VendorName(int vendor) => _vendors.GetValueOrDefault(vendor);

    public string? DeviceName(int vendor, int device) => _devices.GetValueOrDefault((vendor << 16) | device);

    /// <summary>The name of a board, as lspci shows on its "Subsystem:" line; null when not listed.</summary>
    /// <remarks>
    /// Like libpci: a subsystem id equal to the device id itself names the device; otherwise the
    /// subsystem entry listed under the device.
    /// </remarks>
    public string? SubsystemName(int vendor, int device, int subVendor, int subDevice) =>
        subVendor == vendor && subDevice == device
            ? DeviceName(vendor, device)
            : _subsystems.GetValueOrDefault(SubsystemKey(vendor, device, subVendor, subDevice));

    /// <summary>Subclass name (e.g. "Ethernet controller"), else the base class name.</summary>
    public string? ClassName(int baseClass, int subClass) =>
        _classes.GetValueOrDefault((baseClass << 8) | subClass) ?? _classes.GetValueOrDefault((baseClass << 8) | 0xff);

    private static int Store(Dictionary<int, string> map, int key, string value, int id)
    {
        map[key] = value;
        return id;
    }

    private static long SubsystemKey(int vendor, int device, int subVendor, int subDevice) =>
        ((long)vendor << 48) | ((long)device << 32) | ((long)subVendor << 16) | (long)subDevice;

    /// <summary>Parses "hhhh  name": an id of <paramref name="digits"/> hex digits, whitespace, the name.</summary>
    private static bool TryEntry(ReadOnlySpan<char> body, int digits, out int id, out string name)
    {
        name = string.Empty;
        id = 0;
        if (body.Length <= digits || !char.IsWhiteSpace(body[digits]) || !TryHex(body[..digits], out id))
        {
            return false;
        }

        name = body[digits..].Trim().ToString();
        return name.Length > 0;
    }

    private static bool TryHex(ReadOnlySpan<char> text, out int value)
    {
        value = 0;
        foreach (var c in text)
        {
            if (!char.IsAsciiHexDigit(c))
            {
                return false;
            }
        }

        return int.TryParse(text, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
    }
}
