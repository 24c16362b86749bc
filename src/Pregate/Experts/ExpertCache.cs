// The expert cache's bookkeeping: which expert occupies which slot of the pool, pin counts that forbid eviction, and the
// eviction policy that picks a victim when a new expert needs a slot (after dvmazur/mixtral-offloading expert_cache.py).
namespace Pregate.Experts;

/// <summary>
/// Maps resident <see cref="ExpertKey"/>s to slots of a <see cref="SlotPool"/>. An expert with a pin count above zero is
/// never evicted. Not thread-safe: <see cref="ExpertLoader"/> serialises every call; use it directly only from one thread.
/// Disposing the cache disposes its pool.
/// </summary>
public sealed class ExpertCache : IDisposable
{
    private readonly Dictionary<ExpertKey, int> _slotOf = new();
    private readonly int[] _pins;         // [slot]
    private readonly Stack<int> _free;    // pops the lowest free slot first
    private readonly Func<ExpertKey, bool> _isEvictable;

    public ExpertCache(SlotPool pool, IEvictionPolicy policy)
    {
        Pool = pool ?? throw new ArgumentNullException(nameof(pool));
        Policy = policy ?? throw new ArgumentNullException(nameof(policy));
        _pins = new int[pool.SlotCount];
        _free = new Stack<int>(Enumerable.Range(0, pool.SlotCount).Reverse());
        _isEvictable = key => _pins[_slotOf[key]] == 0;
    }

    public SlotPool Pool { get; }
    public IEvictionPolicy Policy { get; }

    /// <summary>Resident experts.</summary>
    public int Count => _slotOf.Count;

    /// <summary>Resident experts replaced to make room so far.</summary>
    public long Evictions { get; private set; }

    /// <summary>The resident experts, in no particular order.</summary>
    public IReadOnlyCollection<ExpertKey> ResidentKeys => _slotOf.Keys;

    public bool TryGetSlot(ExpertKey key, out int slot) => _slotOf.TryGetValue(key, out slot);

    /// <summary>
    /// Gives <paramref name="key"/> a slot: a free one, else the one of the victim the policy picks among unpinned experts
    /// (reported in <paramref name="evicted"/>). The slot's bytes are whatever was there; the caller fills them.
    /// </summary>
    /// <returns>False when no slot is free and every resident expert is pinned.</returns>
    /// <exception cref="InvalidOperationException">The expert is already resident.</exception>
    public bool TryAdmit(ExpertKey key, out int slot, out ExpertKey? evicted) => TryAdmit(key, _isEvictable, out slot, out evicted);

    /// <summary>
    /// As <see cref="TryAdmit(ExpertKey, out int, out ExpertKey?)"/>, but the victim is chosen only among unpinned experts that
    /// <paramref name="mayEvict"/> accepts (a free slot is always taken first).
    /// </summary>
    /// <returns>False when no slot is free and no unpinned expert is accepted.</returns>
    /// <exception cref="InvalidOperationException">The expert is already resident.</exception>
    public bool TryAdmit(ExpertKey key, Func<ExpertKey, bool> mayEvict, out int slot, out ExpertKey? evicted)
    {
        ArgumentNullException.ThrowIfNull(mayEvict);
        if (_slotOf.ContainsKey(key)) throw new InvalidOperationException($"Expert {key} is already resident.");
        evicted = null;
        if (!_free.TryPop(out slot))
        {
            bool chosen = mayEvict == _isEvictable
                ? Policy.TryChooseVictim(_isEvictable, out ExpertKey victim)
                : Policy.TryChooseVictim(k => _isEvictable(k) && mayEvict(k), out victim);
            if (!chosen) return false;
            slot = _slotOf[victim];
            if (_pins[slot] != 0) throw new InvalidOperationException($"The eviction policy chose pinned expert {victim}.");
            _slotOf.Remove(victim);
            Policy.OnRemove(victim);
            Evictions++;
            evicted = victim;
        }
        _slotOf[key] = slot;
        Policy.OnAdmit(key);
        return true;
    }

    /// <summary>
    /// What <see cref="TryAdmit"/> would do now without doing it: true with a null <paramref name="victim"/> when a slot is
    /// free, true with the policy's victim when one must be evicted, false when every resident expert is pinned.
    /// </summary>
    public bool TryPeekVictim(out ExpertKey? victim)
    {
        victim = null;
        if (_free.Count > 0) return true;
        if (!Policy.TryChooseVictim(_isEvictable, out ExpertKey chosen)) return false;
        victim = chosen;
        return true;
    }

    /// <summary>Forbids evicting <paramref name="key"/> until a matching <see cref="Unpin"/>. Pins nest.</summary>
    /// <exception cref="InvalidOperationException">The expert is not resident.</exception>
    public void Pin(ExpertKey key) => _pins[SlotOf(key)]++;

    /// <exception cref="InvalidOperationException">The expert is not resident or not pinned.</exception>
    public void Unpin(ExpertKey key)
    {
        int slot = SlotOf(key);
        if (_pins[slot] == 0) throw new InvalidOperationException($"Expert {key} is not pinned.");
        _pins[slot]--;
    }

    /// <summary>The pin count of a resident expert; 0 when it is not resident.</summary>
    public int PinCount(ExpertKey key) => _slotOf.TryGetValue(key, out int slot) ? _pins[slot] : 0;

    /// <summary>Records a use of <paramref name="key"/> for the eviction policy.</summary>
    public void Touch(ExpertKey key) => Policy.OnUse(key);

    /// <summary>Feeds one router's probabilities to the eviction policy (used by the score policy).</summary>
    public void ObserveRouting(int layer, ReadOnlySpan<float> probabilities) => Policy.ObserveRouting(layer, probabilities);

    /// <summary>Drops a resident, unpinned expert (e.g. after its load failed) and frees its slot.</summary>
    /// <returns>False when the expert was not resident.</returns>
    /// <exception cref="InvalidOperationException">The expert is pinned.</exception>
    public bool Remove(ExpertKey key)
    {
        if (!_slotOf.TryGetValue(key, out int slot)) return false;
        if (_pins[slot] != 0) throw new InvalidOperationException($"Expert {key} is pinned and cannot be removed.");
        _slotOf.Remove(key);
        Policy.OnRemove(key);
        _free.Push(slot);
        return true;
    }

    public void Dispose() => Pool.Dispose();

    private int SlotOf(ExpertKey key) =>
        _slotOf.TryGetValue(key, out int slot) ? slot : throw new InvalidOperationException($"Expert {key} is not resident.");
}
