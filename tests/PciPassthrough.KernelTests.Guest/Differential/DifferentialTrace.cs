using System.Text.Json;
using System.Text.Json.Serialization;

namespace PciPassthrough.KernelTests.Guest.Differential;

/// <summary>One write as applied to the real kernel, and what the kernel showed right after it.</summary>
public sealed record TraceStep
{
    public required int Index { get; init; }

    public required string Description { get; init; }

    public required string Path { get; init; }

    public required string Value { get; init; }

    /// <summary>The suite's expectation of the real kernel's answer, when it is a known fact; null otherwise.</summary>
    public string? Expected { get; init; }

    public required string Outcome { get; init; }

    public required SysfsState State { get; init; }
}

/// <summary>A segment of the sequence: it starts from the boot state, so a disagreement cannot leak into the next one.</summary>
public sealed record TraceSegment
{
    public required string Name { get; init; }

    public required string Description { get; init; }

    public required SysfsState Initial { get; init; }

    public required IReadOnlyList<TraceStep> Steps { get; init; }
}

/// <summary>differential.json: the fixed write sequence as the real kernel answered it.</summary>
public sealed record DifferentialTrace
{
    public const string FileName = "differential.json";

    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public required IReadOnlyList<TraceSegment> Segments { get; init; }

    public void Write(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, JsonOptions));

    public static DifferentialTrace Read(string path) =>
        JsonSerializer.Deserialize<DifferentialTrace>(File.ReadAllText(path), JsonOptions)
            ?? throw new InvalidDataException($"{path} is empty");
}
