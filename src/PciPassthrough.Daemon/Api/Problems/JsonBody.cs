using System.ComponentModel.DataAnnotations;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace PciPassthrough.Daemon.Api.Problems;

/// <summary>
/// Reads a JSON request body strictly: <c>application/json</c> only (415), at most
/// <see cref="MaxBytes"/> (413), well-formed (400 <c>invalid_json</c>), fields of the right JSON type
/// and DataAnnotations satisfied (400 <c>validation_failed</c> with an <c>errors</c> map).
/// </summary>
public static class JsonBody
{
    public const int MaxBytes = 64 * 1024;

    public static async ValueTask<T?> ReadAsync<T>(HttpContext context, JsonTypeInfo<T> typeInfo)
        where T : class
    {
        var request = context.Request;
        if (!request.HasJsonContentType())
        {
            throw new ApiProblemException(ErrorStatus.UnsupportedMediaType,
                $"Content-Type must be application/json (got '{request.ContentType ?? "none"}')");
        }

        if (request.ContentLength > MaxBytes)
        {
            throw TooLarge();
        }

        var body = await ReadBoundedAsync(request.Body, context.RequestAborted);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(body);
        }
        catch (JsonException e)
        {
            throw new ApiProblemException(ErrorStatus.InvalidJson,
                $"The request body is not valid JSON (line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1})");
        }

        T? value;
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw ApiProblemException.Validation("$", "The request body must be a JSON object");
            }

            try
            {
                value = document.RootElement.Deserialize(typeInfo);
            }
            catch (JsonException e)
            {
                throw ApiProblemException.Validation(FieldOf(e.Path), "has the wrong JSON type");
            }
        }

        if (value is null)
        {
            throw ApiProblemException.Validation("$", "The request body must be a JSON object");
        }

        Validate(value);
        return value;
    }

    private static void Validate(object value)
    {
        var results = new List<ValidationResult>();
        if (Validator.TryValidateObject(value, new ValidationContext(value), results, validateAllProperties: true))
        {
            return;
        }

        var errors = results
            .SelectMany(r => r.MemberNames.DefaultIfEmpty("$").Select(m => (Member: JsonNamingPolicy.SnakeCaseLower.ConvertName(m), r.ErrorMessage)))
            .GroupBy(e => e.Member)
            .ToDictionary(g => g.Key, g => g.Select(e => e.ErrorMessage switch
            {
                null => "is invalid",
                var m when m.Contains("is required", StringComparison.Ordinal) => "is required",
                var m => m,
            }).ToArray());
        throw ApiProblemException.Validation(errors);
    }

    private static string FieldOf(string? jsonPath) =>
        string.IsNullOrEmpty(jsonPath) || jsonPath == "$" ? "$" : jsonPath.TrimStart('$', '.');

    private static async Task<byte[]> ReadBoundedAsync(Stream body, CancellationToken cancellationToken)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[8192];
        int read;
        while ((read = await body.ReadAsync(chunk, cancellationToken)) > 0)
        {
            if (buffer.Length + read > MaxBytes)
            {
                throw TooLarge();
            }

            buffer.Write(chunk, 0, read);
        }

        return buffer.ToArray();
    }

    private static ApiProblemException TooLarge() =>
        new(ErrorStatus.PayloadTooLarge, $"The request body is larger than {MaxBytes / 1024} KiB");
}
