using PciPassthrough.Errors;

namespace PciPassthrough.Daemon.Api.Problems;

/// <summary>A request-level failure (body, media type, query) reported with the given code.</summary>
public sealed class ApiProblemException : PassthroughException
{
    public ApiProblemException(string code, string message, IReadOnlyDictionary<string, object?>? details = null)
        : base(code, message, details)
    {
    }

    public ApiProblemException()
        : base(ErrorStatus.BadRequest, "Bad request")
    {
    }

    public ApiProblemException(string message)
        : base(ErrorStatus.BadRequest, message)
    {
    }

    public ApiProblemException(string message, Exception innerException)
        : base(ErrorStatus.BadRequest, message, null, innerException)
    {
    }

    public static ApiProblemException Validation(string field, string error) =>
        Validation(new Dictionary<string, string[]> { [field] = [error] });

    public static ApiProblemException Validation(IReadOnlyDictionary<string, string[]> errors) =>
        new(ErrorCodes.ValidationFailed, "One or more request fields are invalid: " + string.Join("; ",
                errors.Select(e => $"{e.Key}: {string.Join(", ", e.Value)}")),
            new Dictionary<string, object?> { ["errors"] = errors });
}
