using System.Diagnostics.CodeAnalysis;
using System.Text.RegularExpressions;

namespace PciPassthrough.Lifecycle;

/// <summary>Instance ids as orchestrators make them (UUIDs, cuid2, names): printable, no spaces or slashes.</summary>
public static partial class InstanceIds
{
    public const int MaxLength = 128;

    [GeneratedRegex(@"\A[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}\z", RegexOptions.CultureInvariant)]
    private static partial Regex Pattern();

    public static bool IsValid([NotNullWhen(true)] string? instanceId) => instanceId is not null && Pattern().IsMatch(instanceId);
}
