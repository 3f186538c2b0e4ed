using System.Net.Sockets;
using System.Text;

namespace PciPassthrough.Tests.TestDoubles;

/// <summary>A response read off the wire.</summary>
public sealed record RawHttpResponse(int Status, IReadOnlyDictionary<string, string> Headers, string Body);

/// <summary>
/// HTTP/1.1 over a plain TCP connection, for request targets HttpClient refuses to send
/// (<c>%00</c>) and for keep-alive sequences under the test's control.
/// </summary>
public sealed class RawHttpConnection : IDisposable
{
    private readonly TcpClient _client = new();
    private readonly List<byte> _pending = [];
    private NetworkStream? _stream;

    public static async Task<RawHttpConnection> OpenAsync(Uri server)
    {
        var connection = new RawHttpConnection();
        await connection._client.ConnectAsync(server.Host, server.Port);
        connection._stream = connection._client.GetStream();
        return connection;
    }

    public async Task SendAsync(string request) =>
        await _stream!.WriteAsync(Encoding.ASCII.GetBytes(request)).AsTask().WaitAsync(TimeSpan.FromSeconds(30));

    public async Task<RawHttpResponse> ReadResponseAsync()
    {
        var head = Encoding.ASCII.GetString(await ReadUntilAsync("\r\n\r\n"u8.ToArray()));
        var lines = head.Split("\r\n", StringSplitOptions.RemoveEmptyEntries);
        var status = int.Parse(lines[0].Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
        var headers = lines.Skip(1)
            .Select(l => l.Split(':', 2))
            .ToDictionary(p => p[0].Trim(), p => p[1].Trim(), StringComparer.OrdinalIgnoreCase);

        byte[] body;
        if (headers.TryGetValue("Content-Length", out var length))
        {
            body = await ReadExactlyAsync(int.Parse(length, System.Globalization.CultureInfo.InvariantCulture));
        }
        else if (headers.TryGetValue("Transfer-Encoding", out var encoding) && encoding.Contains("chunked", StringComparison.OrdinalIgnoreCase))
        {
            var chunks = new List<byte>();
            while (true)
            {
                var sizeLine = Encoding.ASCII.GetString(await ReadUntilAsync("\r\n"u8.ToArray()));
                var size = Convert.ToInt32(sizeLine.Split(';')[0].Trim(), 16);
                if (size == 0)
                {
                    await ReadUntilAsync("\r\n"u8.ToArray());
                    break;
                }

                chunks.AddRange(await ReadExactlyAsync(size));
                await ReadExactlyAsync(2);
            }

            body = [.. chunks];
        }
        else
        {
            body = [];
        }

        return new RawHttpResponse(status, headers, Encoding.UTF8.GetString(body));
    }

    public async Task<RawHttpResponse> RequestAsync(string request)
    {
        await SendAsync(request);
        return await ReadResponseAsync();
    }

    public void Dispose() => _client.Dispose();

    private async Task<byte[]> ReadUntilAsync(byte[] terminator)
    {
        while (true)
        {
            var index = IndexOf(_pending, terminator);
            if (index >= 0)
            {
                var result = _pending.GetRange(0, index).ToArray();
                _pending.RemoveRange(0, index + terminator.Length);
                return result;
            }

            await FillAsync();
        }
    }

    private async Task<byte[]> ReadExactlyAsync(int count)
    {
        while (_pending.Count < count)
        {
            await FillAsync();
        }

        var result = _pending.GetRange(0, count).ToArray();
        _pending.RemoveRange(0, count);
        return result;
    }

    private async Task FillAsync()
    {
        var buffer = new byte[8192];
        var read = await _stream!.ReadAsync(buffer).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        if (read == 0)
        {
            throw new IOException($"connection closed by the server; received so far: {Encoding.ASCII.GetString([.. _pending])}");
        }

        _pending.AddRange(buffer.AsSpan(0, read).ToArray());
    }

    private static int IndexOf(List<byte> haystack, byte[] needle)
    {
        for (var i = 0; i <= haystack.Count - needle.Length; i++)
        {
            var match = true;
            for (var j = 0; j < needle.Length && match; j++)
            {
                match = haystack[i + j] == needle[j];
            }

            if (match)
            {
                return i;
            }
        }

        return -1;
    }
}
