using System.Diagnostics.CodeAnalysis;
using System.Text.RegularExpressions;

namespace PciPassthrough.Devices;

/// <summary>Rules for operator-chosen device names and the name generated when none is given.</summary>
public static partial class DeviceNames
{
    /// <summary>The contract's pattern, as documented to clients.</summary>
    public const string Pattern = "^[a-zA-Z0-9][a-zA-Z0-9_.-]+$";

    public const int MaxLength = 63;

    // \z rather than $: in .NET "$" also matches before a trailing newline, which would let "name\n" through.
    [GeneratedRegex(@"\A[a-zA-Z0-9][a-zA-Z0-9_.-]+\z", RegexOptions.CultureInvariant)]
    private static partial Regex NameRegex();

    /// <summary>Names that are path segments of the API (<c>GET /devices/available</c>), so a device could never be reached by them.</summary>
    public static readonly IReadOnlySet<string> Reserved = new HashSet<string>(StringComparer.Ordinal) { "available" };

    /// <summary>Whether a new device may take this name.</summary>
    public static bool IsValid([NotNullWhen(true)] string? name) => IsWellFormed(name) && !Reserved.Contains(name);

    /// <summary>Pattern and length only: what a stored record's name must satisfy to load.</summary>
    public static bool IsWellFormed([NotNullWhen(true)] string? name) =>
        name is { Length: <= MaxLength } && NameRegex().IsMatch(name);

    /// <summary>The name given to a device registered without one: <c>pci-0000-a2-00-0</c>.</summary>
    public static string FromAddress(PciAddress address) =>
        "pci-" + address.ToString().Replace(':', '-').Replace('.', '-');
}
