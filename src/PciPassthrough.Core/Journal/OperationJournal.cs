using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.Extensions.Logging;
using PciPassthrough.Storage;

namespace PciPassthrough.Journal;

/// <summary>
/// Durable intents of operations in flight, one file per operation in <c>journal/</c>. An entry is
/// rewritten (atomically) before every kernel write and deleted when the operation ends, so
/// after a crash the files left are exactly the operations to finish or undo.
/// </summary>
public sealed partial class OperationJournal(StateDirectory state, ICrashPoint crashPoint, TimeProvider time,
    ILogger<OperationJournal> logger)
{
    private const string Extension = ".json";

    /// <summary>Starts an operation: its entry is on disk before this returns.</summary>
    public JournalEntry Begin(JournalEntry entry)
    {
        crashPoint.Started(entry.Operation, entry.OperationId);
        var started = entry with { Step = 0, UpdatedAt = time.GetUtcNow().UtcDateTime };
        Write(started);
        return started;
    }

    /// <summary>Records that the next step is about to run; returns the entry to use for the step after.</summary>
    public JournalEntry Step(JournalEntry entry, string description)
    {
        var next = entry with
        {
            Step = entry.Step + 1,
            StepDescription = description,
            UpdatedAt = time.GetUtcNow().UtcDateTime,
        };
        Write(next);
        crashPoint.Reached(next.Operation, next.OperationId, next.Step);
        return next;
    }

    /// <summary>Ends an operation (done, rolled back, or recovered).</summary>
    public void Complete(JournalEntry entry)
    {
        var path = PathOf(entry.OperationId);
        if (File.Exists(path))
        {
            AtomicFile.Delete(path);
        }
    }

    /// <summary>Whether the operation's entry is still on disk (it has not ended).</summary>
    public bool IsPending(string operationId) => File.Exists(PathOf(operationId));

    /// <summary>Every operation that did not end, oldest first; unreadable entries are quarantined.</summary>
    public IReadOnlyList<JournalEntry> Pending()
    {
        var entries = new List<JournalEntry>();
        if (!Directory.Exists(state.Journal))
        {
            return entries;
        }

        foreach (var path in Directory.EnumerateFiles(state.Journal).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(path);
            if (AtomicFile.IsTemporary(name))
            {
                File.Delete(path);
                continue;
            }

            if (!name.EndsWith(Extension, StringComparison.Ordinal))
            {
                continue;
            }

            try
            {
                if (JsonSerializer.Deserialize(File.ReadAllBytes(path), JournalJsonContext.Default.JournalEntry) is { } entry)
                {
                    entries.Add(entry);
                }
            }
            catch (JsonException e)
            {
                var target = Path.Combine(state.Quarantine, $"journal-{name}.{time.GetUtcNow().UtcDateTime:yyyyMMdd'T'HHmmssfff'Z'}");
                AtomicFile.Move(path, target);
                LogUnreadable(logger, e, name, target);
            }
        }

        return entries.OrderBy(e => e.StartedAt).ToList();
    }

    private void Write(JournalEntry entry) =>
        AtomicFile.WriteAllBytes(PathOf(entry.OperationId), JsonSerializer.SerializeToUtf8Bytes(entry, JournalJsonContext.Default.JournalEntry));

    private string PathOf(string operationId)
    {
        if (!Devices.Cuid2Generator.IsCuid2(operationId))
        {
            throw new ArgumentException("Not an operation id", nameof(operationId));
        }

        return Path.Combine(state.Journal, operationId + Extension);
    }

    [LoggerMessage(EventId = 7001, Level = LogLevel.Error,
        Message = "Journal entry {FileName} cannot be read; moved to {QuarantinePath}")]
    private static partial void LogUnreadable(ILogger logger, Exception exception, string fileName, string quarantinePath);
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(JournalEntry))]
internal sealed partial class JournalJsonContext : JsonSerializerContext;
