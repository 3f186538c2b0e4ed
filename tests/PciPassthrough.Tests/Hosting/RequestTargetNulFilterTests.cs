using System.Buffers;
using System.Text;

namespace PciPassthrough.Daemon.Hosting.Tests;

public class RequestTargetNulFilterTests
{
    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(byte[] bytes, Segment? previous)
        {
            Memory = bytes;
            if (previous is not null)
            {
                RunningIndex = previous.RunningIndex + previous.Memory.Length;
                previous.Next = this;
            }
        }
    }

    /// <summary>A sequence over separate arrays, split at the given offsets; returns it and the arrays.</summary>
    private static (ReadOnlySequence<byte> Sequence, List<byte[]> Parts) Split(string text, params int[] cuts)
    {
        var bytes = Encoding.ASCII.GetBytes(text);
        var bounds = cuts.Where(c => c > 0 && c < bytes.Length).Distinct().Order().Prepend(0).Append(bytes.Length).ToArray();
        var parts = new List<byte[]>();
        for (var i = 0; i < bounds.Length - 1; i++)
        {
            parts.Add(bytes[bounds[i]..bounds[i + 1]]);
        }

        Segment? first = null;
        Segment? last = null;
        foreach (var part in parts)
        {
            last = new Segment(part, last);
            first ??= last;
        }

        return (new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length), parts);
    }

    private static string Rewritten(string text, params int[] cuts)
    {
        var (sequence, parts) = Split(text, cuts);
        RequestTargetNulFilter.Rewrite(sequence);
        return Encoding.ASCII.GetString(parts.SelectMany(p => p).ToArray());
    }

    [Theory]
    [InlineData("GET /devices/%00 HTTP/1.1\r\nHost: x\r\n\r\n", "GET /devices/%01 HTTP/1.1\r\nHost: x\r\n\r\n")]
    [InlineData("DELETE /devices/abc%00def HTTP/1.1\r\n\r\n", "DELETE /devices/abc%01def HTTP/1.1\r\n\r\n")]
    [InlineData("GET /devices/%00%00 HTTP/1.1\r\n", "GET /devices/%01%01 HTTP/1.1\r\n")]
    [InlineData("GET /devices/%%00 HTTP/1.1\r\n", "GET /devices/%%01 HTTP/1.1\r\n")]
    [InlineData("GET /devices/%000 HTTP/1.1\r\n", "GET /devices/%010 HTTP/1.1\r\n")]
    [InlineData("GET /%00", "GET /%01")]
    public void Rewrite_OneSegment_NulInTargetBecomesPercent01(string input, string expected)
    {
        Assert.Equal(expected, Rewritten(input));
    }

    [Fact]
    public void Rewrite_PercentZeroZeroStraddlingSegments_RewrittenAtEverySplit()
    {
        const string Input = "GET /devices/%00 HTTP/1.1\r\nHost: x\r\n\r\n";
        const string Expected = "GET /devices/%01 HTTP/1.1\r\nHost: x\r\n\r\n";
        var percent = Input.IndexOf('%', StringComparison.Ordinal);
        for (var a = 1; a < Input.Length; a++)
        {
            Assert.Equal(Expected, Rewritten(Input, a));
        }

        Assert.Equal(Expected, Rewritten(Input, percent + 1, percent + 2));
        Assert.Equal(Expected, Rewritten(Input, percent, percent + 1, percent + 2, percent + 3));
    }

    [Fact]
    public void Rewrite_OneByteSegments_Rewritten()
    {
        const string Input = "DELETE /devices/a%00b%00 HTTP/1.1\r\n\r\n";

        Assert.Equal("DELETE /devices/a%01b%01 HTTP/1.1\r\n\r\n", Rewritten(Input, Enumerable.Range(1, Input.Length).ToArray()));
    }

    [Fact]
    public void Rewrite_SecondRequestLineAfterLineFeed_Rewritten()
    {
        const string Input = "GET /devices HTTP/1.1\r\nHost: x\r\n\r\nGET /devices/%00 HTTP/1.1\r\nHost: x\r\n\r\n";

        Assert.Equal(Input.Replace("%00", "%01", StringComparison.Ordinal), Rewritten(Input, 30));
    }

    [Fact]
    public void Rewrite_TwiceOverSameBytes_SameResult()
    {
        var (sequence, parts) = Split("GET /devices/%00 HTTP/1.1\r\n\r\n", 14);
        RequestTargetNulFilter.Rewrite(sequence);
        RequestTargetNulFilter.Rewrite(sequence);

        Assert.Equal("GET /devices/%01 HTTP/1.1\r\n\r\n", Encoding.ASCII.GetString(parts.SelectMany(p => p).ToArray()));
    }

    [Theory]
    [InlineData("{\"pci_address\":\"/%00\"}")]                                      // a JSON body line
    [InlineData("POST /devices HTTP/1.1\r\nContent-Length: 12\r\n\r\n{\"a\":\"%00\"}")]
    [InlineData("GET /devices?x=%00 HTTP/1.1\r\n\r\n")]                               // a query string
    [InlineData("GET /devices/available?type=%00 HTTP/1.1\r\n\r\n")]
    [InlineData("GET /devices HTTP/1.1\r\nX-Probe: /devices/%00\r\n\r\n")]            // a header line
    [InlineData("GET /devices HTTP/1.1\r\nReferer: http://h/%00\r\n\r\n")]
    [InlineData("GET /devices/x HTTP/1.1 %00\r\n\r\n")]                              // after the target
    [InlineData("get /devices/%00 HTTP/1.1\r\n\r\n")]                                 // not a method
    [InlineData("GET devices/%00 HTTP/1.1\r\n\r\n")]                                  // not an origin-form target
    [InlineData("GET  /devices/%00 HTTP/1.1\r\n\r\n")]
    [InlineData("GET /devices/%0 0 HTTP/1.1\r\n\r\n")]
    [InlineData("GET /devices/%0A HTTP/1.1\r\n\r\n")]
    [InlineData("")]
    public void Rewrite_OtherLines_Untouched(string input)
    {
        Assert.Equal(input, Rewritten(input));
        Assert.Equal(input, Rewritten(input, Enumerable.Range(1, input.Length).ToArray()));
    }

    [Fact]
    public void Rewrite_EmptySequence_NoOp()
    {
        RequestTargetNulFilter.Rewrite(ReadOnlySequence<byte>.Empty);
    }
}
