using PciPassthrough.Errors;

namespace PciPassthrough.Daemon.Api.Problems;

/// <summary>HTTP status of each error code (the contract's table), and codes for bare HTTP statuses.</summary>
public static class ErrorStatus
{
    public const string InvalidJson = "invalid_json";
    public const string UnsupportedMediaType = "unsupported_media_type";
    public const string PayloadTooLarge = "payload_too_large";
    public const string MethodNotAllowed = "method_not_allowed";
    public const string BadRequest = "bad_request";
    public const string Unauthorized = "unauthorized";
    public const string Forbidden = "forbidden";
    public const string RateLimited = "rate_limited";
    public const string ServiceUnavailable = "service_unavailable";
    public const string NotReady = "not_ready";

    private static readonly Dictionary<string, int> StatusByCode = new(StringComparer.Ordinal)
    {
        [ErrorCodes.NotFound] = StatusCodes.Status404NotFound,
        [ErrorCodes.InUse] = StatusCodes.Status409Conflict,
        [ErrorCodes.NotOwner] = StatusCodes.Status409Conflict,
        [ErrorCodes.NotBound] = StatusCodes.Status409Conflict,
        [ErrorCodes.AlreadyBound] = StatusCodes.Status409Conflict,
        [ErrorCodes.AlreadyExists] = StatusCodes.Status409Conflict,
        [ErrorCodes.NameExists] = StatusCodes.Status409Conflict,
        [ErrorCodes.InvalidName] = StatusCodes.Status400BadRequest,
        [ErrorCodes.InvalidPciAddress] = StatusCodes.Status400BadRequest,
        [ErrorCodes.DeviceNotFound] = StatusCodes.Status404NotFound,
        [ErrorCodes.VfioNotAvailable] = StatusCodes.Status503ServiceUnavailable,
        [ErrorCodes.IommuGroupConflict] = StatusCodes.Status409Conflict,
        [ErrorCodes.DeviceChanged] = StatusCodes.Status409Conflict,
        [ErrorCodes.UnbindTimeout] = StatusCodes.Status504GatewayTimeout,
        [ErrorCodes.Quarantined] = StatusCodes.Status409Conflict,
        [ErrorCodes.StorageUnavailable] = StatusCodes.Status503ServiceUnavailable,
        [ErrorCodes.PreconditionFailed] = StatusCodes.Status412PreconditionFailed,
        [ErrorCodes.ValidationFailed] = StatusCodes.Status400BadRequest,
        [ErrorCodes.Internal] = StatusCodes.Status500InternalServerError,
        [InvalidJson] = StatusCodes.Status400BadRequest,
        [UnsupportedMediaType] = StatusCodes.Status415UnsupportedMediaType,
        [PayloadTooLarge] = StatusCodes.Status413PayloadTooLarge,
        [RateLimited] = StatusCodes.Status429TooManyRequests,
        [NotReady] = StatusCodes.Status503ServiceUnavailable,
        [ErrorCodes.OperationFailed] = StatusCodes.Status502BadGateway,
        [ErrorCodes.ResetUnsupported] = StatusCodes.Status409Conflict,
    };

    public static int StatusOf(string code) => StatusByCode.GetValueOrDefault(code, StatusCodes.Status500InternalServerError);

    /// <summary>The code for a response produced by the framework rather than by a domain error.</summary>
    public static string CodeOfStatus(int status) => status switch
    {
        StatusCodes.Status400BadRequest => BadRequest,
        StatusCodes.Status401Unauthorized => Unauthorized,
        StatusCodes.Status403Forbidden => Forbidden,
        StatusCodes.Status404NotFound => ErrorCodes.NotFound,
        StatusCodes.Status405MethodNotAllowed => MethodNotAllowed,
        StatusCodes.Status412PreconditionFailed => ErrorCodes.PreconditionFailed,
        StatusCodes.Status413PayloadTooLarge => PayloadTooLarge,
        StatusCodes.Status415UnsupportedMediaType => UnsupportedMediaType,
        StatusCodes.Status429TooManyRequests => RateLimited,
        StatusCodes.Status503ServiceUnavailable => ServiceUnavailable,
        _ => status >= 500 ? ErrorCodes.Internal : BadRequest,
    };
}
