// Which resident expert to replace when the slot pool is full: LRU, LFU with aging, or a router-score policy (HybriMoE,
// arXiv 2504.05897, score-aware caching). Policies see only admissions, uses, removals and router probabilities.
namespace Pregate.Experts;

/// <summary>The eviction policies offered on the command line (<c>--cache lru|lfu|score</c>).</summary>
public enum EvictionPolicyKind { Lru, Lfu, Score }

/// <summary>
/// Ranks resident experts for eviction. Not thread-safe: <see cref="ExpertCache"/> calls it under its owner's lock.
/// </summary>
public interface IEvictionPolicy
{
    /// <summary>The expert became resident.</summary>
    void OnAdmit(ExpertKey key);

    /// <summary>The expert was used by a layer (a cache hit or the first use after its load).</summary>
    void OnUse(ExpertKey key);

    /// <summary>The expert left the cache.</summary>
    void OnRemove(ExpertKey key);

    /// <summary>The router of <paramref name="layer"/> produced <paramref name="probabilities"/> (one per expert).</summary>
    void ObserveRouting(int layer, ReadOnlySpan<float> probabilities);

    /// <summary>Chooses the resident expert to evict among those <paramref name="isEvictable"/> accepts; false when none is.</summary>
    bool TryChooseVictim(Func<ExpertKey, bool> isEvictable, out ExpertKey victim);
}

public static class EvictionPolicy
{
    /// <summary>A policy of <paramref name="kind"/> with its default parameters for a model of this size.</summary>
    public static IEvictionPolicy Create(EvictionPolicyKind kind, int layerCount, int expertCount) => kind switch
    {
        EvictionPolicyKind.Lru => new LruPolicy(),
        EvictionPolicyKind.Lfu => new LfuPolicy(agingPeriod: checked(layerCount * expertCount)),
        EvictionPolicyKind.Score => new ScorePolicy(layerCount, expertCount),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, null),
    };

    /// <summary>Parses <c>lru</c>, <c>lfu</c> or <c>score</c> (case-insensitive).</summary>
    public static bool TryParse(string? name, out EvictionPolicyKind kind)
    {
        (bool ok, kind) = name?.ToLowerInvariant() switch
        {
            "lru" => (true, EvictionPolicyKind.Lru),
            "lfu" => (true, EvictionPolicyKind.Lfu),
            "score" => (true, EvictionPolicyKind.Score),
            _ => (false, default(EvictionPolicyKind)),
        };
        return ok;
    }
}

/// <summary>Least recently used: the victim is the evictable expert whose last use (or admission) is oldest.</summary>
public sealed class LruPolicy : IEvictionPolicy
{
    private readonly LinkedList<ExpertKey> _order = new(); // first = least recent
    private readonly Dictionary<ExpertKey, LinkedListNode<ExpertKey>> _nodes = new();

    public void OnAdmit(ExpertKey key) => MoveToBack(key);

    public void OnUse(ExpertKey key)
    {
        if (_nodes.ContainsKey(key)) MoveToBack(key);
    }

    public void OnRemove(ExpertKey key)
    {
        if (_nodes.Remove(key, out LinkedListNode<ExpertKey>? node)) _order.Remove(node);
    }

    public void ObserveRouting(int layer, ReadOnlySpan<float> probabilities) { }

    public bool TryChooseVictim(Func<ExpertKey, bool> isEvictable, out ExpertKey victim)
    {
        for (LinkedListNode<ExpertKey>? n = _order.First; n != null; n = n.Next)
        {
            if (!isEvictable(n.Value)) continue;
            victim = n.Value;
            return true;
        }
        victim = default;
        return false;
    }

    private void MoveToBack(ExpertKey key)
    {
        if (_nodes.TryGetValue(key, out LinkedListNode<ExpertKey>? node)) _order.Remove(node);
        else _nodes[key] = node = new LinkedListNode<ExpertKey>(key);
        _order.AddLast(node);
    }
}

/// <summary>
/// Least frequently used with aging: each use adds 1 to the expert's count (kept across evictions); every
/// <c>agingPeriod</c> uses all counts are halved, so old popularity decays. Victim: smallest count, ties to the least recent.
/// </summary>
public sealed class LfuPolicy : IEvictionPolicy
{
    private readonly Dictionary<ExpertKey, double> _counts = new();
    private readonly Dictionary<ExpertKey, long> _resident = new(); // key → tick of last use or admission
    private readonly long _agingPeriod;
    private long _tick;
    private long _uses;

    /// <param name="agingPeriod">Uses between two halvings of every count.</param>
    public LfuPolicy(long agingPeriod)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(agingPeriod);
        _agingPeriod = agingPeriod;
    }

    /// <summary>The current (aged) use count of <paramref name="key"/>.</summary>
    public double Count(ExpertKey key) => _counts.GetValueOrDefault(key);

    public void OnAdmit(ExpertKey key) => _resident[key] = ++_tick;

    public void OnUse(ExpertKey key)
    {
        _counts[key] = _counts.GetValueOrDefault(key) + 1;
        if (_resident.ContainsKey(key)) _resident[key] = ++_tick;
        if (++_uses % _agingPeriod != 0) return;
        foreach (ExpertKey k in _counts.Keys) _counts[k] *= 0.5;
    }

    public void OnRemove(ExpertKey key) => _resident.Remove(key);

    public void ObserveRouting(int layer, ReadOnlySpan<float> probabilities) { }

    public bool TryChooseVictim(Func<ExpertKey, bool> isEvictable, out ExpertKey victim)
    {
        bool found = false;
        double bestCount = 0;
        long bestTick = 0;
        victim = default;
        foreach ((ExpertKey key, long tick) in _resident)
        {
            if (!isEvictable(key)) continue;
            double count = _counts.GetValueOrDefault(key);
            if (found && (count > bestCount || (count == bestCount && tick > bestTick))) continue;
            (victim, bestCount, bestTick, found) = (key, count, tick, true);
        }
        return found;
    }
}

/// <summary>
/// Router-score policy (HybriMoE's score-aware caching): each expert keeps a decayed sum of the router probability it got,
/// <c>s ← decay · s + p</c> each time its layer's router runs. Victim: lowest score, ties to the least recent use.
/// </summary>
public sealed class ScorePolicy : IEvictionPolicy
{
    private readonly double[] _scores; // [layer * expertCount + expert]
    private readonly Dictionary<ExpertKey, long> _resident = new();
    private readonly int _layerCount, _expertCount;
    private readonly double _decay;
    private long _tick;

    /// <param name="decay">Weight of the old score at each observation, in [0, 1).</param>
    public ScorePolicy(int layerCount, int expertCount, double decay = 0.9)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layerCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(expertCount);
        if (!(decay >= 0 && decay < 1)) throw new ArgumentOutOfRangeException(nameof(decay), decay, "The decay must lie in [0, 1).");
        _layerCount = layerCount;
        _expertCount = expertCount;
        _decay = decay;
        _scores = new double[checked(layerCount * expertCount)];
    }

    /// <summary>The current score of <paramref name="key"/>.</summary>
    public double Score(ExpertKey key) => _scores[Index(key)];

    public void OnAdmit(ExpertKey key) => _resident[key] = ++_tick;

    public void OnUse(ExpertKey key)
    {
        if (_resident.ContainsKey(key)) _resident[key] = ++_tick;
    }

    public void OnRemove(ExpertKey key) => _resident.Remove(key);

    /// <exception cref="ArgumentException">The span does not hold one probability per expert.</exception>
    public void ObserveRouting(int layer, ReadOnlySpan<float> probabilities)
    {
        if (probabilities.Length != _expertCount)
            throw new ArgumentException($"Expected {_expertCount} router probabilities, got {probabilities.Length}.", nameof(probabilities));
        Span<double> scores = _scores.AsSpan(Index(new ExpertKey(layer, 0)), _expertCount);
        for (int e = 0; e < scores.Length; e++) scores[e] = _decay * scores[e] + probabilities[e];
    }

    public bool TryChooseVictim(Func<ExpertKey, bool> isEvictable, out ExpertKey victim)
    {
        bool found = false;
        double bestScore = 0;
        long bestTick = 0;
        victim = default;
        foreach ((ExpertKey key, long tick) in _resident)
        {
            if (!isEvictable(key)) continue;
            double score = _scores[Index(key)];
            if (found && (score > bestScore || (score == bestScore && tick > bestTick))) continue;
            (victim, bestScore, bestTick, found) = (key, score, tick, true);
        }
        return found;
    }

    private int Index(ExpertKey key)
    {
        if ((uint)key.Layer >= (uint)_layerCount || (uint)key.Expert >= (uint)_expertCount)
            throw new ArgumentOutOfRangeException(nameof(key), $"Expert {key} is outside {_layerCount} layers × {_expertCount} experts.");
        return key.Layer * _expertCount + key.Expert;
    }
}
