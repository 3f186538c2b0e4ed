using System.Globalization;

namespace PciPassthrough.Devices;

/// <summary>Parsing of the kernel's 16-bit id attributes (<c>vendor</c>, <c>device</c>, ...).</summary>
public static class PciId
{
    /// <summary>Parses <c>0x10de</c> (with or without the prefix) into 0..0xffff.</summary>
    public static bool TryParse(string? text, out int id)
    {
        id = 0;
        var span = text.AsSpan().Trim();
        if (span.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            span = span[2..];
        }

        return span.Length is > 0 and <= 4 &&
            int.TryParse(span, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out id);
    }

    /// <summary>Four lowercase hex digits, e.g. <c>10de</c>.</summary>
    public static string Format(int id) => id.ToString("x4", CultureInfo.InvariantCulture);
}
