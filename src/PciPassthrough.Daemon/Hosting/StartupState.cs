using PciPassthrough.Reconcile;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>
/// What start-up has finished; <c>/readyz</c> turns 200, and changes are accepted, only once the
/// registry is loaded and the start-up reconcile (which finishes or undoes interrupted operations) is done.
/// </summary>
public sealed class StartupState : IStartupGate
{
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _registryLoaded;
    private volatile ReconcileReport? _reconcile;
    private volatile string? _failure;

    public bool IsReady => _ready.Task.IsCompletedSuccessfully;

    public bool RegistryLoaded => _registryLoaded;

    /// <summary>The start-up reconcile's report, once done.</summary>
    public ReconcileReport? StartupReconcile => _reconcile;

    /// <summary>Why start-up could not finish, when it could not.</summary>
    public string? Failure => _failure;

    public void MarkRegistryLoaded() => _registryLoaded = true;

    public void MarkReconciled(ReconcileReport report)
    {
        _reconcile = report;
        _ready.TrySetResult();
    }

    public void MarkFailed(string reason) => _failure = reason;

    public Task WaitReadyAsync(CancellationToken cancellationToken) => _ready.Task.WaitAsync(cancellationToken);
}
