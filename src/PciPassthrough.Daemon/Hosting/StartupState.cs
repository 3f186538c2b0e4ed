namespace PciPassthrough.Daemon.Hosting;

/// <summary>What start-up has finished; <c>/readyz</c> turns 200 only when all of it has.</summary>
public sealed class StartupState
{
    private volatile bool _registryLoaded;

    public bool IsReady => _registryLoaded;

    public void MarkRegistryLoaded() => _registryLoaded = true;
}
