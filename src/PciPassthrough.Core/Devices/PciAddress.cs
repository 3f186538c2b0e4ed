using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace PciPassthrough.Devices;

/// <summary>
/// A PCI function address (domain:bus:device.function). Every sysfs path the daemon builds for a
/// device goes through this type, so a value that reached a path has been validated here first.
/// </summary>
/// <remarks>
/// Accepted text forms: <c>DDDD:BB:DD.F</c> and the short <c>BB:DD.F</c> (domain 0000), hex digits in
/// either case, exactly 4/2/2/1 digits. Device is at most 0x1f and function at most 7, as the PCI
/// specification allows; the canonical form is lowercase and zero-padded.
/// </remarks>
[JsonConverter(typeof(PciAddressJsonConverter))]
public readonly record struct PciAddress : IComparable<PciAddress>, ISpanParsable<PciAddress>
{
    public const int MaxDevice = 0x1f;
    public const int MaxFunction = 7;

    public PciAddress(int domain, int bus, int device, int function)
    {
        if (domain is < 0 or > 0xffff || bus is < 0 or > 0xff || device is < 0 or > MaxDevice ||
            function is < 0 or > MaxFunction)
        {
            throw new ArgumentOutOfRangeException(nameof(domain), "PCI address component out of range");
        }

        Domain = (ushort)domain;
        Bus = (byte)bus;
        Device = (byte)device;
        Function = (byte)function;
    }

    public ushort Domain { get; }

    public byte Bus { get; }

    public byte Device { get; }

    public byte Function { get; }

    /// <summary>The address of function 0 of the same device (the slot).</summary>
    public PciAddress Slot => new(Domain, Bus, Device, 0);

    public static bool IsValid([NotNullWhen(true)] string? text) => TryParse(text, out _);

    public static PciAddress Parse(string s) => Parse(s, null);

    public static PciAddress Parse(string s, IFormatProvider? provider) => Parse(s.AsSpan(), provider);

    public static PciAddress Parse(ReadOnlySpan<char> s, IFormatProvider? provider)
    {
        if (!TryParse(s, provider, out var address))
        {
            throw new FormatException("Invalid PCI address; expected DDDD:BB:DD.F or BB:DD.F in hexadecimal");
        }

        return address;
    }

    public static bool TryParse([NotNullWhen(true)] string? s, out PciAddress result) =>
        TryParse(s.AsSpan(), null, out result);

    public static bool TryParse([NotNullWhen(true)] string? s, IFormatProvider? provider, out PciAddress result) =>
        TryParse(s.AsSpan(), provider, out result);

    public static bool TryParse(ReadOnlySpan<char> s, IFormatProvider? provider, out PciAddress result)
    {
        result = default;
        int domain = 0;
        // Long form is 12 characters ("0000:00:00.0"), short form 7 ("00:00.0"); nothing else.
        if (s.Length == 12)
        {
            if (s[4] != ':' || !TryHex(s[..4], out domain))
            {
                return false;
            }

            s = s[5..];
        }
        else if (s.Length != 7)
        {
            return false;
        }

        if (s[2] != ':' || s[5] != '.' ||
            !TryHex(s[..2], out var bus) || !TryHex(s[3..5], out var device) || !TryHex(s[6..], out var function) ||
            device > MaxDevice || function > MaxFunction)
        {
            return false;
        }

        result = new PciAddress(domain, bus, device, function);
        return true;
    }

    private static bool TryHex(ReadOnlySpan<char> digits, out int value)
    {
        value = 0;
        foreach (var c in digits)
        {
            // int.TryParse with HexNumber would also take whitespace or a sign; only bare hex digits count.
            if (!char.IsAsciiHexDigit(c))
            {
                return false;
            }
        }

        return int.TryParse(digits, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out value);
    }

    public int CompareTo(PciAddress other)
    {
        var c = Domain.CompareTo(other.Domain);
        if (c == 0)
        {
            c = Bus.CompareTo(other.Bus);
        }

        if (c == 0)
        {
            c = Device.CompareTo(other.Device);
        }

        return c != 0 ? c : Function.CompareTo(other.Function);
    }

    public static bool operator <(PciAddress left, PciAddress right) => left.CompareTo(right) < 0;

    public static bool operator >(PciAddress left, PciAddress right) => left.CompareTo(right) > 0;

    public static bool operator <=(PciAddress left, PciAddress right) => left.CompareTo(right) <= 0;

    public static bool operator >=(PciAddress left, PciAddress right) => left.CompareTo(right) >= 0;

    /// <summary>Canonical form, e.g. <c>0000:0a:00.0</c>.</summary>
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"{Domain:x4}:{Bus:x2}:{Device:x2}.{Function:x1}");
}

/// <summary>Reads and writes a <see cref="PciAddress"/> as its canonical string.</summary>
public sealed class PciAddressJsonConverter : JsonConverter<PciAddress>
{
    public override PciAddress Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        var text = reader.TokenType == JsonTokenType.String ? reader.GetString() : null;
        if (!PciAddress.TryParse(text, out var address))
        {
            throw new JsonException("Invalid PCI address");
        }

        return address;
    }

    public override void Write(Utf8JsonWriter writer, PciAddress value, JsonSerializerOptions options) =>
        writer.WriteStringValue(value.ToString());
}
