using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Mvc;
using PciPassthrough.Errors;

namespace PciPassthrough.Daemon.Api.Problems;

/// <summary>
/// The one place where failures become HTTP responses: a domain error becomes a problem body with
/// its stable code and status, a malformed request a 4xx, anything unexpected a 500 whose body
/// says nothing about internals. The middleware does not log handled exceptions, so this does.
/// </summary>
public sealed partial class PassthroughExceptionHandler(
    IProblemDetailsService problemDetails,
    ILogger<PassthroughExceptionHandler> logger) : IExceptionHandler
{
    public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
    {
        var (code, message, details) = Classify(exception);
        var status = ErrorStatus.StatusOf(code);
        if (status >= 500)
        {
            LogServerError(logger, exception, httpContext.Request.Method, httpContext.Request.Path, code);
        }
        else
        {
            LogClientError(logger, httpContext.Request.Method, httpContext.Request.Path, status, code);
        }

        var problem = new ProblemDetails { Status = status, Detail = message };
        problem.Extensions[ProblemShape.CodeMember] = code;
        foreach (var (key, value) in details)
        {
            problem.Extensions[key] = value;
        }

        httpContext.Response.StatusCode = status;
        return await problemDetails.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = httpContext,
            ProblemDetails = problem,
            Exception = exception,
        });
    }

    private static (string Code, string Message, IReadOnlyDictionary<string, object?> Details) Classify(Exception exception) =>
        exception switch
        {
            PassthroughException p => (p.Code, p.Message, p.Details),
            BadHttpRequestException { StatusCode: StatusCodes.Status413PayloadTooLarge } =>
                (ErrorStatus.PayloadTooLarge, $"The request body is larger than {JsonBody.MaxBytes / 1024} KiB", Empty),
            BadHttpRequestException { StatusCode: StatusCodes.Status415UnsupportedMediaType } =>
                (ErrorStatus.UnsupportedMediaType, "Content-Type must be application/json", Empty),
            BadHttpRequestException b =>
                (ErrorCodes.ValidationFailed, "The request could not be read: " + SafeMessage(b), Empty),
            OperationCanceledException => (ErrorStatus.ServiceUnavailable, "The request was cancelled", Empty),
            _ => (ErrorCodes.Internal, "An unexpected error occurred; the daemon log has the details", Empty),
        };

    private static readonly IReadOnlyDictionary<string, object?> Empty = new Dictionary<string, object?>();

    // Framework messages about parameters name the parameter, never a path or a type: safe to show.
    private static string SafeMessage(BadHttpRequestException e) =>
        e.Message.Length <= 300 ? e.Message : e.Message[..300];

    [LoggerMessage(EventId = 5001, Level = LogLevel.Error,
        Message = "{Method} {Path} failed with {Code}")]
    private static partial void LogServerError(ILogger logger, Exception exception, string method, PathString path, string code);

    [LoggerMessage(EventId = 5002, Level = LogLevel.Information,
        Message = "{Method} {Path} refused: {StatusCode} {Code}")]
    private static partial void LogClientError(ILogger logger, string method, PathString path, int statusCode, string code);
}
