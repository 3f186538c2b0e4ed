namespace PciPassthrough.KernelTests.Guest.Runner;

/// <summary>A check of a kernel case failed; the message says what was expected and what was seen.</summary>
public sealed class CaseFailedException : Exception
{
    public CaseFailedException()
    {
    }

    public CaseFailedException(string message)
        : base(message)
    {
    }

    public CaseFailedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
