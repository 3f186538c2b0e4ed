using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace PciPassthrough.KernelTests.Guest.Runner;

/// <summary>One case's outcome, as cases.json carries it to the host.</summary>
public sealed record CaseResult
{
    public required string Name { get; init; }

    public required bool Passed { get; init; }

    /// <summary>Why it failed (null when it passed).</summary>
    public string? Message { get; init; }

    public required long DurationMs { get; init; }

    /// <summary>What the case measured and saw (latencies, responses, kernel state), for the test output.</summary>
    public JsonObject Details { get; init; } = [];
}

/// <summary>cases.json: the agent's run and every case that ran, in order.</summary>
public sealed record CasesFile
{
    public const string FileName = "cases.json";

    public required JsonObject Run { get; init; }

    public required IReadOnlyList<CaseResult> Cases { get; init; }

    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public static CasesFile Read(string path) =>
        JsonSerializer.Deserialize<CasesFile>(File.ReadAllText(path), JsonOptions)
            ?? throw new InvalidDataException($"{path} is empty");

    public void Write(string path)
    {
        // Written after every case through a temporary file: a run that dies midway still leaves
        // a readable file with every case finished so far.
        var temporary = path + ".tmp";
        File.WriteAllText(temporary, JsonSerializer.Serialize(this, JsonOptions));
        File.Move(temporary, path, overwrite: true);
    }
}
