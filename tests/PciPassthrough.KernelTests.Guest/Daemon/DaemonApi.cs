using System.Diagnostics;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PciPassthrough.KernelTests.Guest.Runner;

namespace PciPassthrough.KernelTests.Guest.Daemon;

/// <summary>One HTTP exchange with the daemon, with what a case needs to check it.</summary>
public sealed record ApiResponse(string Method, string Path, int Status, JsonNode? Body, string Raw, string? ETag, double ElapsedMs)
{
    /// <summary>The problem's <c>code</c>, or null for a success or a body without one.</summary>
    public string? Code => Body is JsonObject o && o["code"] is JsonValue v ? v.GetValue<string>() : null;

    public JsonNode Json => Body ?? throw new CaseFailedException($"{Method} {Path}: no JSON body (status {Status}): {Raw}");

    /// <summary>Fails the case unless the status is <paramref name="status"/> (and, when given, the problem code).</summary>
    public ApiResponse Expect(int status, string? code = null)
    {
        if (Status != status || (code is not null && Code != code))
        {
            throw new CaseFailedException(
                $"{Method} {Path}: expected {status}{(code is null ? "" : " " + code)}, got {Status}: {Truncate(Raw)}");
        }

        return this;
    }

    public string Text(string property) =>
        Json[property] is JsonValue v && v.TryGetValue<string>(out var s)
            ? s
            : throw new CaseFailedException($"{Method} {Path}: no string '{property}' in {Truncate(Raw)}");

    public string? TextOrNull(string property) => Json[property] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    public bool Bool(string property) =>
        Json[property] is JsonValue v && v.TryGetValue<bool>(out var b)
            ? b
            : throw new CaseFailedException($"{Method} {Path}: no boolean '{property}' in {Truncate(Raw)}");

    public static string Truncate(string text) => text.Length <= 2000 ? text : text[..2000] + "…";
}

/// <summary>The daemon's HTTP API as cases use it: JSON in, status + JSON + ETag out, nothing thrown for error statuses.</summary>
public sealed class DaemonApi(HttpClient http)
{
    public Task<ApiResponse> GetAsync(string path) => SendAsync(HttpMethod.Get, path, null);

    public Task<ApiResponse> PostAsync(string path, JsonNode? body = null) => SendAsync(HttpMethod.Post, path, body);

    public Task<ApiResponse> DeleteAsync(string path) => SendAsync(HttpMethod.Delete, path, null);

    /// <summary>POST /devices for the address; returns the new device's id.</summary>
    public async Task<string> RegisterAsync(string address)
    {
        var created = (await PostAsync("/devices", new JsonObject { ["pci_address"] = address })).Expect(201);
        return created.Text("id");
    }

    public Task<ApiResponse> AttachAsync(string id, string instance, int? pid) =>
        PostAsync($"/devices/{id}/attach", new JsonObject { ["instance_id"] = instance, ["pid"] = pid });

    public Task<ApiResponse> DetachAsync(string id, string instance, bool release) =>
        PostAsync($"/devices/{id}/detach", new JsonObject { ["instance_id"] = instance, ["release"] = release });

    private async Task<ApiResponse> SendAsync(HttpMethod method, string path, JsonNode? body)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null)
        {
            request.Content = new StringContent(body.ToJsonString(), Encoding.UTF8);
            request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        }
        else if (method == HttpMethod.Post)
        {
            request.Content = new StringContent("", Encoding.UTF8);
        }

        var clock = Stopwatch.StartNew();
        using var response = await http.SendAsync(request);
        var raw = await response.Content.ReadAsStringAsync();
        var elapsed = clock.Elapsed.TotalMilliseconds;
        JsonNode? json = null;
        if (raw.Length > 0)
        {
            try
            {
                json = JsonNode.Parse(raw);
            }
            catch (JsonException)
            {
                json = null;
            }
        }

        var etag = response.Headers.ETag?.ToString();
        return new ApiResponse(method.Method, path, (int)response.StatusCode, json, raw, etag, elapsed);
    }
}
