using PciPassthrough.Registry;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>What start-up has finished; <c>/readyz</c> turns 200, and changes are accepted, only when all of it has.</summary>
public sealed class StartupState
{
    private volatile bool _registryLoaded;
    private volatile bool _recovered;
    private volatile IReadOnlyList<RecoveryAction> _recovery = [];
    private volatile string? _failure;

    public bool IsReady => _registryLoaded && _recovered;

    public bool RegistryLoaded => _registryLoaded;

    public bool Recovered => _recovered;

    /// <summary>What start-up recovery did about operations a crash left unfinished.</summary>
    public IReadOnlyList<RecoveryAction> Recovery => _recovery;

    /// <summary>Why start-up could not finish, when it could not.</summary>
    public string? Failure => _failure;

    public void MarkRegistryLoaded() => _registryLoaded = true;

    public void MarkRecovered(IReadOnlyList<RecoveryAction> actions)
    {
        _recovery = actions;
        _recovered = true;
    }

    public void MarkFailed(string reason) => _failure = reason;
}
