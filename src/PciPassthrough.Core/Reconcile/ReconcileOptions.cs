using System.ComponentModel.DataAnnotations;

namespace PciPassthrough.Reconcile;

/// <summary>Periodic repair of records and host state (configuration section <c>Reconcile</c>).</summary>
public sealed class ReconcileOptions
{
    public const string Section = "Reconcile";

    /// <summary>Time between reconciles; zero turns the periodic run off (start-up still reconciles).</summary>
    [Range(typeof(TimeSpan), "00:00:00", "7.00:00:00")]
    public TimeSpan Interval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Return devices reported <c>stranded_on_vfio</c> to their original driver.</summary>
    public bool RestoreStranded { get; set; }
}
