using System.Buffers;
using System.IO.Pipelines;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Connections;

namespace PciPassthrough.Daemon.Hosting;

/// <summary>
/// Kestrel answers a request whose target contains <c>%00</c> with a bare 400 before any
/// application code runs, so a probe such as <c>GET /devices/%00</c> would get no problem body
/// and no stable code. This connection filter rewrites <c>%00</c> to <c>%01</c> in the target of
/// HTTP/1.x request lines (same length, in place): the request then reaches routing, matches no
/// device and is answered <c>404 not_found</c> like any other unknown id. Nothing else is changed.
/// </summary>
public static class RequestTargetNulFilter
{
    public static ConnectionDelegate Wrap(ConnectionDelegate next) => context =>
    {
        context.Transport = new FilteredPipe(context.Transport);
        return next(context);
    };

    /// <summary>
    /// Rewrites <c>%00</c> in the target of every line shaped like a request line
    /// (<c>METHOD SP /target</c>, at the start of the buffer or after a line feed). Idempotent, so
    /// a buffer presented again after a partial read is rewritten the same way.
    /// </summary>
    public static void Rewrite(ReadOnlySequence<byte> buffer)
    {
        var state = State.LineStart;
        var percentRun = new Memory<byte>[3];
        var runLength = 0;
        foreach (var segment in buffer)
        {
            var memory = MemoryMarshal.AsMemory(segment);
            var span = memory.Span;
            for (var i = 0; i < span.Length; i++)
            {
                var b = span[i];
                if (b == (byte)'\n')
                {
                    state = State.LineStart;
                    runLength = 0;
                    continue;
                }

                switch (state)
                {
                    case State.LineStart:
                        state = b is >= (byte)'A' and <= (byte)'Z' ? State.Method : State.OtherLine;
                        break;
                    case State.Method:
                        state = b == (byte)' ' ? State.TargetStart : b is >= (byte)'A' and <= (byte)'Z' ? State.Method : State.OtherLine;
                        break;
                    case State.TargetStart:
                        state = b == (byte)'/' ? State.Target : State.OtherLine;
                        break;
                    case State.Target:
                        if (b is (byte)' ' or (byte)'?' or (byte)'\r')
                        {
                            state = State.OtherLine;
                            break;
                        }

                        // Track "%", "0", "0" even when the three bytes straddle segments.
                        if (b == (byte)'%')
                        {
                            percentRun[0] = memory.Slice(i, 1);
                            runLength = 1;
                        }
                        else if (b == (byte)'0' && runLength is 1 or 2)
                        {
                            percentRun[runLength++] = memory.Slice(i, 1);
                            if (runLength == 3)
                            {
                                percentRun[2].Span[0] = (byte)'1';
                                runLength = 0;
                            }
                        }
                        else
                        {
                            runLength = 0;
                        }

                        break;
                    default:
                        break;
                }
            }
        }
    }

    private enum State
    {
        LineStart,
        Method,
        TargetStart,
        Target,
        OtherLine,
    }

    private sealed class FilteredPipe(IDuplexPipe inner) : IDuplexPipe
    {
        public PipeReader Input { get; } = new FilteredReader(inner.Input);

        public PipeWriter Output => inner.Output;
    }

    private sealed class FilteredReader(PipeReader inner) : PipeReader
    {
        public override void AdvanceTo(SequencePosition consumed) => inner.AdvanceTo(consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) => inner.AdvanceTo(consumed, examined);

        public override void CancelPendingRead() => inner.CancelPendingRead();

        public override void Complete(Exception? exception = null) => inner.Complete(exception);

        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);

        public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            var result = await inner.ReadAsync(cancellationToken);
            Rewrite(result.Buffer);
            return result;
        }

        public override bool TryRead(out ReadResult result)
        {
            if (!inner.TryRead(out result))
            {
                return false;
            }

            Rewrite(result.Buffer);
            return true;
        }
    }
}
