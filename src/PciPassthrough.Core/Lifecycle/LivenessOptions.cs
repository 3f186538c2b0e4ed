using System.ComponentModel.DataAnnotations;

namespace PciPassthrough.Lifecycle;

/// <summary>How the daemon tells whether an instance still exists (configuration section <c>Liveness</c>).</summary>
public sealed class LivenessOptions : IValidatableObject
{
    public const string Section = "Liveness";

    /// <summary><c>process</c> (attach pid + its start time), <c>http</c> (ask <see cref="Url"/>), <c>none</c>.</summary>
    public LivenessMode Mode { get; set; } = LivenessMode.Process;

    /// <summary>Base URL of the orchestrator for <c>http</c> mode: <c>GET {Url}/instances/{instance_id}</c>.</summary>
    public Uri? Url { get; set; }

    /// <summary>Bound on one liveness question in <c>http</c> mode (retries included).</summary>
    [Range(typeof(TimeSpan), "00:00:00.100", "00:05:00")]
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(5);

    public IEnumerable<ValidationResult> Validate(ValidationContext validationContext)
    {
        if (Mode == LivenessMode.Http && (Url is null || !Url.IsAbsoluteUri || Url.Scheme is not ("http" or "https")))
        {
            yield return new ValidationResult("Liveness:Url must be an absolute http(s) URL when Liveness:Mode is http", [nameof(Url)]);
        }
    }
}

public enum LivenessMode
{
    Process,
    Http,
    None,
}

/// <summary>What liveness says about an instance. Only <see cref="Gone"/> ever clears an attachment.</summary>
public enum InstanceState
{
    Running,
    Gone,
    Unknown,
}
