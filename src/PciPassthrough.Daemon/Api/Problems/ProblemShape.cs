using Microsoft.AspNetCore.Mvc;

namespace PciPassthrough.Daemon.Api.Problems;

/// <summary>
/// Completes every problem body, including the ones the framework writes itself (404 for an
/// unknown route, 405, 415...): a stable <c>code</c>, <c>message</c> equal to <c>detail</c>, a
/// <c>type</c> naming the code, and snake_case member names like the rest of the API.
/// </summary>
public static class ProblemShape
{
    public const string CodeMember = "code";
    public const string MessageMember = "message";
    public const string TypePrefix = "urn:pci-passthrough:problem:";

    public static void Complete(ProblemDetails problem, HttpContext httpContext)
    {
        var status = problem.Status ?? httpContext.Response.StatusCode;
        problem.Status = status;
        if (problem.Extensions.TryGetValue(CodeMember, out var value) is false || value is not string code)
        {
            code = ErrorStatus.CodeOfStatus(status);
            problem.Extensions[CodeMember] = code;
        }

        problem.Type = TypePrefix + code;
        problem.Title = TitleOf(code);
        problem.Detail ??= DefaultDetail(status, httpContext);
        problem.Instance ??= httpContext.Request.Path.Value;
        problem.Extensions[MessageMember] = problem.Detail;
        if (problem.Extensions.Remove("traceId", out var traceId))
        {
            problem.Extensions["trace_id"] = traceId;
        }
    }

    private static string TitleOf(string code) =>
        char.ToUpperInvariant(code[0]) + code[1..].Replace('_', ' ');

    private static string DefaultDetail(int status, HttpContext httpContext) => status switch
    {
        StatusCodes.Status404NotFound when httpContext.Request.Path.StartsWithSegments("/devices") =>
            "No registered device has that id or name",
        StatusCodes.Status404NotFound => "No such resource",
        StatusCodes.Status405MethodNotAllowed => $"{httpContext.Request.Method} is not allowed on this resource",
        StatusCodes.Status415UnsupportedMediaType => "Content-Type must be application/json",
        StatusCodes.Status413PayloadTooLarge => "The request body is too large",
        _ => ReasonPhrase(status),
    };

    private static string ReasonPhrase(int status) =>
        Microsoft.AspNetCore.WebUtilities.ReasonPhrases.GetReasonPhrase(status) is { Length: > 0 } phrase ? phrase : "Error";
}
