using System.Globalization;

namespace PciPassthrough.Devices;

/// <summary>The 24-bit PCI class code (base class, subclass, programming interface).</summary>
public readonly record struct PciClassCode(int Value)
{
    public int BaseClass => (Value >> 16) & 0xff;

    public int SubClass => (Value >> 8) & 0xff;

    /// <summary>Bridges (base class 0x06) are plumbing, never passthrough candidates.</summary>
    public bool IsBridge => BaseClass == 0x06;

    /// <summary>Parses the kernel's <c>class</c> attribute, e.g. <c>0x030000</c>.</summary>
    public static bool TryParseSysfs(string? text, out PciClassCode classCode)
    {
        classCode = default;
        var span = text.AsSpan().Trim();
        if (span.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
        {
            span = span[2..];
        }

        if (span.Length is 0 or > 6 ||
            !int.TryParse(span, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var value))
        {
            return false;
        }

        classCode = new PciClassCode(value);
        return true;
    }

    /// <summary>Six lowercase hex digits, e.g. <c>030000</c>.</summary>
    public override string ToString() => Value.ToString("x6", CultureInfo.InvariantCulture);
}
