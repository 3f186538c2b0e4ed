using System.ComponentModel.DataAnnotations;
using System.Globalization;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>How the daemon's Unix sockets are exposed (configuration section <c>Server</c>).</summary>
public sealed class ServerOptions : IValidatableObject
{
    public const string Section = "Server";

    /// <summary>Permissions of a Unix socket the daemon listens on, in octal.</summary>
    public string UnixSocketMode { get; set; } = "0660";

    /// <summary>Group that owns the socket (so its members may call the API); null keeps the daemon's group.</summary>
    public string? UnixSocketGroup { get; set; }

    public UnixFileMode ParsedMode => (UnixFileMode)Convert.ToInt32(UnixSocketMode, 8);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (UnixSocketMode.Length is < 3 or > 4 || !UnixSocketMode.All(c => c is >= '0' and <= '7') ||
            Convert.ToInt32(UnixSocketMode, 8) > 0x1ff)
        {
            yield return new ValidationResult(
                string.Create(CultureInfo.InvariantCulture, $"Server:UnixSocketMode must be an octal mode such as 0660 (got '{UnixSocketMode}')"),
                [nameof(UnixSocketMode)]);
        }

        if (UnixSocketGroup is { Length: 0 })
        {
            yield return new ValidationResult("Server:UnixSocketGroup must be a group name when set", [nameof(UnixSocketGroup)]);
        }
    }
}
