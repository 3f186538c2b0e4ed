using System.Collections.Concurrent;
using Microsoft.Extensions.Time.Testing;

namespace PciPassthrough.Devices.Tests;

public class Cuid2GeneratorTests
{
    private static void AssertWellFormed(string id)
    {
        Assert.Equal(Cuid2Generator.Length, id.Length);
        Assert.Equal(24, id.Length);
        Assert.InRange(id[0], 'a', 'z');
        Assert.All(id, c => Assert.True(c is >= 'a' and <= 'z' or >= '0' and <= '9', $"unexpected character '{c}' in {id}"));
        Assert.True(Cuid2Generator.IsCuid2(id));
    }

    [Fact]
    public void Next_Always_TwentyFourLowercaseBase36StartingWithLetter()
    {
        var generator = new Cuid2Generator(TimeProvider.System);
        for (var i = 0; i < 2000; i++)
        {
            AssertWellFormed(generator.Next());
        }
    }

    [Fact]
    public void Next_Shared_WellFormed()
    {
        AssertWellFormed(Cuid2Generator.Shared.Next());
    }

    [Fact]
    public void Next_FirstCharacter_CoversTheAlphabet()
    {
        // The first letter is random: over many ids every letter shows up, and no digit ever does.
        var generator = new Cuid2Generator(TimeProvider.System);
        var firsts = Enumerable.Range(0, 5000).Select(_ => generator.Next()[0]).ToHashSet();

        Assert.Equal(26, firsts.Count);
    }

    [Theory]
    [InlineData("abcdefghijklmnopqrstuvwx")]
    [InlineData("a00000000000000000000000")]
    [InlineData("z9z9z9z9z9z9z9z9z9z9z9z9")]
    public void IsCuid2_WellFormed_True(string text)
    {
        Assert.True(Cuid2Generator.IsCuid2(text));
    }

    [Theory]
    [InlineData("")]
    [InlineData("abc")]
    [InlineData("0bcdefghijklmnopqrstuvwx")]  // starts with a digit
    [InlineData("Abcdefghijklmnopqrstuvwx")]  // uppercase
    [InlineData("abcdefghijklmnopqrstuvwX")]
    [InlineData("abcdefghijklmnopqrstuvw")]   // 23
    [InlineData("abcdefghijklmnopqrstuvwxy")] // 25
    [InlineData("abcdefghijklmnopqrstuvw-")]
    [InlineData("abcdefghijklmnopqrstuvw.")]
    [InlineData("abcdefghijklmnopqrstuvw\n")]
    [InlineData("abcdefghijklmnopqrstuvw\0")]
    [InlineData("abcdefghijklmnopqrstuvwé")]
    [InlineData("abcdefghijklmnopqrstuv../")]
    [InlineData("../../../../../../../../")]
    [InlineData("0000:00:00.0000000000000")]
    public void IsCuid2_Malformed_False(string text)
    {
        Assert.False(Cuid2Generator.IsCuid2(text));
    }

    [Fact]
    public void IsCuid2_Null_False()
    {
        Assert.False(Cuid2Generator.IsCuid2(null));
    }

    [Fact]
    public void Next_HundredThousandIds_NoCollision()
    {
        var generator = new Cuid2Generator(TimeProvider.System);
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < 100_000; i++)
        {
            Assert.True(ids.Add(generator.Next()), $"collision after {i} ids");
        }
    }

    [Fact]
    public void Next_ConcurrentFromSeveralThreads_NoCollisionAndWellFormed()
    {
        var generator = new Cuid2Generator(TimeProvider.System);
        var ids = new ConcurrentBag<string>();
        const int Threads = 4;
        const int PerThread = 10_000;
        using var start = new Barrier(Threads);
        var threads = Enumerable.Range(0, Threads).Select(_ => new Thread(() =>
        {
            start.SignalAndWait();
            for (var i = 0; i < PerThread; i++)
            {
                ids.Add(generator.Next());
            }
        })).ToList();

        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());

        Assert.Equal(Threads * PerThread, ids.Count);
        Assert.Equal(ids.Count, ids.Distinct(StringComparer.Ordinal).Count());
        Assert.All(ids.Take(1000), AssertWellFormed);
    }

    [Fact]
    public void Next_GeneratorsWithSameFrozenTime_ProduceDifferentIds()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 1, 2, 3, 4, 5, TimeSpan.Zero));
        var generators = Enumerable.Range(0, 50).Select(_ => new Cuid2Generator(time)).ToList();

        var ids = generators.SelectMany(g => new[] { g.Next(), g.Next() }).ToList();

        Assert.Equal(ids.Count, ids.Distinct(StringComparer.Ordinal).Count());
        Assert.All(ids, AssertWellFormed);
    }

    [Fact]
    public void Next_FrozenTime_StillUniqueWithinOneGenerator()
    {
        var generator = new Cuid2Generator(new FakeTimeProvider(DateTimeOffset.UnixEpoch));

        var ids = Enumerable.Range(0, 10_000).Select(_ => generator.Next()).ToList();

        Assert.Equal(ids.Count, ids.Distinct(StringComparer.Ordinal).Count());
    }
}
