using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace PciPassthrough.Tests.TestDoubles;

/// <summary>Assertions on the daemon's HTTP answers.</summary>
public static class HttpAssert
{
    public static StringContent Json(string json, string mediaType = "application/json") =>
        new(json, Encoding.UTF8, mediaType);

    public static async Task<JsonElement> JsonBodyAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        using var document = JsonDocument.Parse(text);
        return document.RootElement.Clone();
    }

    /// <summary>
    /// An RFC 9457 problem body of the contract: application/problem+json with type, title, status,
    /// detail, code and message (= detail). Returns the body for further checks.
    /// </summary>
    public static async Task<JsonElement> ProblemAsync(HttpResponseMessage response, HttpStatusCode status, string code)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {(int)status}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        using var document = JsonDocument.Parse(text);
        var problem = document.RootElement.Clone();
        Assert.Equal(JsonValueKind.Object, problem.ValueKind);
        Assert.True(code == problem.GetProperty("code").GetString(), $"expected code {code}: {text}");
        Assert.Equal((int)status, problem.GetProperty("status").GetInt32());
        Assert.Equal(JsonValueKind.String, problem.GetProperty("type").ValueKind);
        Assert.False(string.IsNullOrWhiteSpace(problem.GetProperty("title").GetString()));
        var detail = problem.GetProperty("detail").GetString();
        Assert.False(string.IsNullOrWhiteSpace(detail));
        Assert.Equal(detail, problem.GetProperty("message").GetString());
        return problem;
    }

    public static void MediaType(HttpResponseMessage response, string mediaType) =>
        Assert.Equal(mediaType, response.Content.Headers.ContentType?.MediaType);

    public static MediaTypeHeaderValue ContentType(string value) => MediaTypeHeaderValue.Parse(value);
}
