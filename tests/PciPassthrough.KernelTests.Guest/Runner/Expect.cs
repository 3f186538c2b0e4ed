using System.Globalization;

namespace PciPassthrough.KernelTests.Guest.Runner;

/// <summary>Checks for kernel cases: each throws <see cref="CaseFailedException"/> with a precise message.</summary>
public static class Expect
{
    public static void True(bool condition, string message)
    {
        if (!condition)
        {
            throw new CaseFailedException(message);
        }
    }

    public static void Equal<T>(T expected, T actual, string what)
    {
        if (!EqualityComparer<T>.Default.Equals(expected, actual))
        {
            throw new CaseFailedException($"{what}: expected {Show(expected)}, got {Show(actual)}");
        }
    }

    public static void Sequence(IEnumerable<string> expected, IEnumerable<string> actual, string what)
    {
        var e = expected.ToList();
        var a = actual.ToList();
        if (!e.SequenceEqual(a, StringComparer.Ordinal))
        {
            throw new CaseFailedException($"{what}: expected [{string.Join(", ", e)}], got [{string.Join(", ", a)}]");
        }
    }

    public static void Empty(IEnumerable<string> items, string what)
    {
        var list = items.ToList();
        if (list.Count > 0)
        {
            throw new CaseFailedException($"{what}: expected none, got {string.Join("; ", list)}");
        }
    }

    public static string Show<T>(T value) => value switch
    {
        null => "null",
        string s => $"\"{s.Replace("\n", "\\n", StringComparison.Ordinal)}\"",
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "null",
    };
}

/// <summary>Collects every mismatch of a comparison, then fails once listing them all.</summary>
public sealed class Mismatches
{
    private readonly List<string> _items = [];

    public IReadOnlyList<string> Items => _items;

    public void Check(bool condition, string message)
    {
        if (!condition)
        {
            _items.Add(message);
        }
    }

    public void Equal<T>(T expected, T actual, string what)
    {
        if (!EqualityComparer<T>.Default.Equals(expected, actual))
        {
            _items.Add($"{what}: expected {Expect.Show(expected)}, got {Expect.Show(actual)}");
        }
    }

    public void ThrowIfAny(string title)
    {
        if (_items.Count > 0)
        {
            throw new CaseFailedException($"{title} ({_items.Count} mismatches): {string.Join("; ", _items)}");
        }
    }
}
