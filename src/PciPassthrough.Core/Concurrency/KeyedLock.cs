using System.Collections.Concurrent;

namespace PciPassthrough.Concurrency;

/// <summary>
/// Async mutual exclusion per key (a PCI address): operations on one device queue up, operations
/// on different devices never wait for each other. Several keys are taken in sorted order, so
/// group operations cannot deadlock with each other.
/// </summary>
public sealed class KeyedLock<TKey>
    where TKey : notnull
{
    private readonly ConcurrentDictionary<TKey, Entry> _entries = new();
    private readonly IComparer<TKey> _order;

    public KeyedLock(IComparer<TKey>? order = null)
    {
        _order = order ?? Comparer<TKey>.Default;
    }

    /// <summary>Number of keys currently held or waited for (for diagnostics and tests).</summary>
    public int ActiveKeys => _entries.Count;

    public Task<IDisposable> AcquireAsync(TKey key, CancellationToken cancellationToken = default) =>
        AcquireAsync([key], cancellationToken);

    public async Task<IDisposable> AcquireAsync(IEnumerable<TKey> keys, CancellationToken cancellationToken = default)
    {
        var ordered = keys.Distinct().Order(_order).ToArray();
        var held = new List<TKey>(ordered.Length);
        try
        {
            foreach (var key in ordered)
            {
                var entry = Retain(key);
                try
                {
                    await entry.Semaphore.WaitAsync(cancellationToken);
                }
                catch
                {
                    Release(key, entry, signal: false);
                    throw;
                }

                held.Add(key);
            }
        }
        catch
        {
            ReleaseAll(held);
            throw;
        }

        return new Releaser(this, held);
    }

    private Entry Retain(TKey key)
    {
        while (true)
        {
            var entry = _entries.GetOrAdd(key, static _ => new Entry());
            lock (entry)
            {
                // An entry whose last user just left may have been removed from the map; retry
                // with a fresh one rather than wait on an orphan.
                if (entry.Users >= 0)
                {
                    entry.Users++;
                    return entry;
                }
            }
        }
    }

    private void Release(TKey key, Entry entry, bool signal)
    {
        if (signal)
        {
            entry.Semaphore.Release();
        }

        lock (entry)
        {
            if (--entry.Users == 0)
            {
                entry.Users = -1;
                _entries.TryRemove(new KeyValuePair<TKey, Entry>(key, entry));
            }
        }
    }

    private void ReleaseAll(List<TKey> keys)
    {
        for (var i = keys.Count - 1; i >= 0; i--)
        {
            Release(keys[i], _entries[keys[i]], signal: true);
        }
    }

    private sealed class Entry
    {
        public SemaphoreSlim Semaphore { get; } = new(1, 1);

        public int Users { get; set; }
    }

    private sealed class Releaser(KeyedLock<TKey> owner, List<TKey> keys) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
            {
                owner.ReleaseAll(keys);
            }
        }
    }
}
