// Which routed expert occupies which VRAM slot: lookups, admissions into free slots, eviction through the same
// IEvictionPolicy the CPU cache uses, and counters. Host bookkeeping only; the engine does the copies.
using Pregate.Experts;

namespace Pregate.Cuda;

/// <summary>Counters of an expert slot table since it was created.</summary>
public readonly record struct SlotTableStats(long Hits, long Misses, long Prefetches, long PrefetchHits, long Evictions, long BytesCopied);

/// <summary>
/// <see cref="SlotCount"/> slots holding experts; the policy ranks victims among the experts a caller lets go. Not
/// thread-safe.
/// </summary>
public sealed class ExpertSlotTable
{
    private readonly Dictionary<ExpertKey, int> _slotOf = [];
    private readonly ExpertKey?[] _occupant;
    private readonly bool[] _prefetchedUnused;
    private readonly Stack<int> _free = new();
    private readonly IEvictionPolicy _policy;
    private long _hits, _misses, _prefetches, _prefetchHits, _evictions, _bytesCopied;

    /// <summary>A table of <paramref name="slotCount"/> empty slots of <paramref name="slotBytes"/> each.</summary>
    public ExpertSlotTable(int slotCount, long slotBytes, IEvictionPolicy policy)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(slotCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(slotBytes);
        ArgumentNullException.ThrowIfNull(policy);
        SlotBytes = slotBytes;
        _occupant = new ExpertKey?[slotCount];
        _prefetchedUnused = new bool[slotCount];
        _policy = policy;
        for (int s = slotCount - 1; s >= 0; s--) _free.Push(s);
    }

    public int SlotCount => _occupant.Length;
    public long SlotBytes { get; }

    /// <summary>Experts resident now.</summary>
    public int Count => _slotOf.Count;

    public SlotTableStats Stats => new(_hits, _misses, _prefetches, _prefetchHits, _evictions, _bytesCopied);

    /// <summary>The expert in <paramref name="slot"/>, or null when it is free.</summary>
    public ExpertKey? Occupant(int slot) => _occupant[slot];

    /// <summary>True (and the slot) when <paramref name="key"/> is resident; counts nothing.</summary>
    public bool Contains(ExpertKey key, out int slot) => _slotOf.TryGetValue(key, out slot);

    /// <summary>The router probabilities of a layer, for policies that score experts.</summary>
    public void ObserveRouting(int layer, ReadOnlySpan<float> probabilities) => _policy.ObserveRouting(layer, probabilities);

    /// <summary>
    /// The slot of <paramref name="key"/> for a use by its layer: a hit when resident (<paramref name="mustCopy"/> false),
    /// else a miss that takes a slot (<paramref name="mustCopy"/> true: the caller copies the expert in).
    /// </summary>
    /// <exception cref="InvalidOperationException">Every slot holds an expert <paramref name="isPinned"/> keeps.</exception>
    public int Use(ExpertKey key, Func<ExpertKey, bool> isPinned, out bool mustCopy)
    {
        if (_slotOf.TryGetValue(key, out int slot))
        {
            _hits++;
            if (_prefetchedUnused[slot])
            {
                _prefetchHits++;
                _prefetchedUnused[slot] = false;
            }
            _policy.OnUse(key);
            mustCopy = false;
            return slot;
        }
        _misses++;
        slot = Take(key, isPinned) ?? throw new InvalidOperationException(
            $"no expert slot can be freed for {key}: all {SlotCount} slots hold experts in use (the budget must hold at least top-k experts)");
        _policy.OnUse(key);
        mustCopy = true;
        return slot;
    }

    /// <summary>
    /// A slot for a predicted expert that is not resident, or null when it is resident already or no slot can be freed
    /// without evicting a pinned expert. The caller copies the expert in.
    /// </summary>
    public int? Prefetch(ExpertKey key, Func<ExpertKey, bool> isPinned)
    {
        if (_slotOf.ContainsKey(key)) return null;
        int? slot = Take(key, isPinned);
        if (slot is int s)
        {
            _prefetches++;
            _prefetchedUnused[s] = true;
        }
        return slot;
    }

    /// <summary>Counts <paramref name="bytes"/> copied into slots.</summary>
    public void CountCopy(long bytes) => _bytesCopied += bytes;

    private int? Take(ExpertKey key, Func<ExpertKey, bool> isPinned)
    {
        int slot;
        if (_free.Count > 0) slot = _free.Pop();
        else
        {
            if (!_policy.TryChooseVictim(k => !isPinned(k), out var victim)) return null;
            slot = _slotOf[victim];
            _slotOf.Remove(victim);
            _policy.OnRemove(victim);
            _evictions++;
        }
        _occupant[slot] = key;
        _prefetchedUnused[slot] = false;
        _slotOf[key] = slot;
        _policy.OnAdmit(key);
        return slot;
    }
}
