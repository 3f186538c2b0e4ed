using System.Globalization;
using System.Numerics;
using System.Security.Cryptography;
using System.Text;

namespace PciPassthrough.Devices;

/// <summary>
/// Collision-resistant ids in the cuid2 design: a random lowercase letter followed by the base-36
/// digest (SHA3-512) of the time, a random salt, a process-wide counter and a host fingerprint.
/// Ids are 24 characters of <c>[a-z0-9]</c> and never start with a digit, so they can never be
/// confused with a PCI address or a generated name.
/// </summary>
public sealed class Cuid2Generator
{
    public const int Length = 24;

    // The counter starts at a random point so that two processes started in the same millisecond
    // on the same host do not walk through the same sequence.
    private const int InitialCountMax = 476_782_367;
    private const int FingerprintLength = 32;

    private readonly TimeProvider _timeProvider;
    private readonly string _fingerprint;
    private long _counter;

    public Cuid2Generator(TimeProvider timeProvider)
    {
        if (!SHA3_512.IsSupported)
        {
            throw new PlatformNotSupportedException("SHA3-512 is not available (OpenSSL 1.1.1 or later is required)");
        }

        _timeProvider = timeProvider;
        _counter = RandomNumberGenerator.GetInt32(InitialCountMax);
        _fingerprint = CreateFingerprint();
    }

    public static Cuid2Generator Shared { get; } = new(TimeProvider.System);

    public string Next()
    {
        var time = ToBase36(new BigInteger(_timeProvider.GetUtcNow().ToUnixTimeMilliseconds()));
        var salt = RandomBase36(Length);
        var count = ToBase36(new BigInteger(Interlocked.Increment(ref _counter)));
        var digest = Hash(time + salt + count + _fingerprint);
        return string.Concat(RandomLetter().ToString(), digest.AsSpan(1, Length - 1));
    }

    /// <summary>True for a string shaped like an id this generator makes.</summary>
    public static bool IsCuid2([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] string? text)
    {
        if (text is not { Length: Length } || !char.IsAsciiLetterLower(text[0]))
        {
            return false;
        }

        foreach (var c in text)
        {
            if (!char.IsAsciiLetterLower(c) && !char.IsAsciiDigit(c))
            {
                return false;
            }
        }

        return true;
    }

    private static string CreateFingerprint()
    {
        var source = string.Create(CultureInfo.InvariantCulture,
            $"{Environment.MachineName}{Environment.ProcessId}{Environment.TickCount64}{RandomBase36(FingerprintLength)}");
        return Hash(source)[..FingerprintLength];
    }

    /// <summary>SHA3-512 of the input as a base-36 string without its first digit (which is biased).</summary>
    private static string Hash(string input)
    {
        var digest = SHA3_512.HashData(Encoding.UTF8.GetBytes(input));
        var value = new BigInteger(digest, isUnsigned: true, isBigEndian: true);
        return ToBase36(value)[1..];
    }

    private static char RandomLetter() => (char)('a' + RandomNumberGenerator.GetInt32(26));

    private static string RandomBase36(int length) =>
        RandomNumberGenerator.GetString("0123456789abcdefghijklmnopqrstuvwxyz", length);

    private static string ToBase36(BigInteger value)
    {
        if (value.IsZero)
        {
            return "0";
        }

        var chars = new StringBuilder();
        var thirtySix = new BigInteger(36);
        while (value > BigInteger.Zero)
        {
            value = BigInteger.DivRem(value, thirtySix, out var remainder);
            var digit = (int)remainder;
            chars.Insert(0, (char)(digit < 10 ? '0' + digit : 'a' + digit - 10));
        }

        return chars.ToString();
    }
}
