namespace PciPassthrough.Errors;

/// <summary>
/// A domain error with a stable <see cref="Code"/> (see <see cref="ErrorCodes"/>). Callers branch
/// on the code, never on the message; <see cref="Details"/> carries facts a caller needs to act
/// (blocking devices, holders, the owner of an attachment), which the API returns as extra members.
/// </summary>
public class PassthroughException : Exception
{
    public PassthroughException(string code, string message, IReadOnlyDictionary<string, object?>? details = null,
        Exception? innerException = null)
        : base(message, innerException)
    {
        Code = code;
        Details = details ?? new Dictionary<string, object?>();
    }

    public PassthroughException()
        : this(ErrorCodes.Internal, "Internal error")
    {
    }

    public PassthroughException(string message)
        : this(ErrorCodes.Internal, message)
    {
    }

    public PassthroughException(string message, Exception innerException)
        : this(ErrorCodes.Internal, message, null, innerException)
    {
    }

    public string Code { get; }

    public IReadOnlyDictionary<string, object?> Details { get; }
}
