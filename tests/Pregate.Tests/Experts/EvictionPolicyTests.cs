// Eviction order of each policy on scripted access sequences, through ExpertCache; pinned experts are never evicted.
using Pregate.Experts;
using Xunit.Abstractions;

namespace Pregate.Tests.Experts;

public sealed class EvictionPolicyTests(ITestOutputHelper output)
{
    private static ExpertKey K(int expert) => new(0, expert);

    private static ExpertCache Cache(IEvictionPolicy policy, int slots) => new(new SlotPool(4096, slots), policy);

    private static ExpertKey? Admit(ExpertCache cache, ExpertKey key)
    {
        Assert.True(cache.TryAdmit(key, out _, out ExpertKey? evicted));
        return evicted;
    }

    [Fact]
    public void LruEvictsTheLeastRecentlyUsed()
    {
        using ExpertCache cache = Cache(new LruPolicy(), 3);
        foreach (int e in new[] { 0, 1, 2 }) Assert.Null(Admit(cache, K(e)));
        cache.Touch(K(0));                    // recency: 1, 2, 0
        Assert.Equal(K(1), Admit(cache, K(3))); // → 2, 0, 3
        cache.Touch(K(2));                    // → 0, 3, 2
        Assert.Equal(K(0), Admit(cache, K(4)));
        Assert.Equal(K(3), Admit(cache, K(5)));
        Assert.Equal(3, cache.Evictions);
    }

    [Fact]
    public void LfuKeepsTheFrequentlyUsed()
    {
        using ExpertCache cache = Cache(new LfuPolicy(agingPeriod: 1_000_000), 3);
        foreach (int e in new[] { 0, 1, 2 }) Admit(cache, K(e));
        Use(cache, K(0), 3);
        Use(cache, K(1), 1);
        Use(cache, K(2), 2);
        Assert.Equal(K(1), Admit(cache, K(3)));   // counts 3, 1, 2, (0)
        Use(cache, K(3), 5);
        Assert.Equal(K(2), Admit(cache, K(1)));   // expert 1 comes back with its old count 1; 2 has 2, 0 has 3, 3 has 5
        Assert.Equal(K(1), Admit(cache, K(4)));   // count 1 < 3 < 5, and 4 is new (0)
    }

    [Fact]
    public void LfuAgingLetsOldPopularityDecay()
    {
        // Expert 0 is used 4 times, then expert 1 four times, then expert 2 once. Without aging 0 and 1 tie at 4 and the
        // rarely used 2 goes; with counts halved every 2 uses, 0's early uses have decayed to 0.375 < 1 and 0 goes.
        Assert.Equal(K(2), VictimAfterScript(new LfuPolicy(agingPeriod: 1_000_000)));
        var aged = new LfuPolicy(agingPeriod: 2);
        Assert.Equal(K(0), VictimAfterScript(aged));
        output.WriteLine($"aged counts: {aged.Count(K(0))}, {aged.Count(K(1))}, {aged.Count(K(2))}");
        Assert.Equal(0.375, aged.Count(K(0)));
        Assert.Equal(1.5, aged.Count(K(1)));
    }

    private static ExpertKey? VictimAfterScript(LfuPolicy policy)
    {
        using ExpertCache cache = Cache(policy, 3);
        foreach (int e in new[] { 0, 1, 2 }) Admit(cache, K(e));
        Use(cache, K(0), 4);
        Use(cache, K(1), 4);
        Use(cache, K(2), 1);
        return Admit(cache, K(3));
    }

    [Fact]
    public void ScoreKeepsExpertsWithHighRouterMass()
    {
        var policy = new ScorePolicy(layerCount: 1, expertCount: 5, decay: 0.5);
        using ExpertCache cache = Cache(policy, 3);
        foreach (int e in new[] { 0, 1, 2 }) Admit(cache, K(e));
        cache.ObserveRouting(0, [0.7f, 0.1f, 0.2f, 0f, 0f]);
        cache.Touch(K(1));                          // recency does not matter to this policy
        Assert.Equal(K(1), Admit(cache, K(3)));     // scores 0.7, 0.1, 0.2
        for (int i = 0; i < 3; i++) cache.ObserveRouting(0, [0f, 0f, 0.1f, 0.9f, 0f]);
        output.WriteLine($"scores after decay: {policy.Score(K(0)):0.####}, {policy.Score(K(2)):0.####}, {policy.Score(K(3)):0.####}");
        Assert.Equal(K(0), Admit(cache, K(4)));     // 0: 0.7 → 0.0875 now below 2's 0.2
        Assert.Throws<ArgumentException>(() => cache.ObserveRouting(0, [1f]));
    }

    [Theory]
    [InlineData(EvictionPolicyKind.Lru)]
    [InlineData(EvictionPolicyKind.Lfu)]
    [InlineData(EvictionPolicyKind.Score)]
    public void PinnedExpertsAreNeverEvicted(EvictionPolicyKind kind)
    {
        const int experts = 12, slots = 4;
        using ExpertCache cache = Cache(EvictionPolicy.Create(kind, 1, experts), slots);
        var random = new Random(7);
        var pins = new Dictionary<ExpertKey, int>();
        var probabilities = new float[experts];
        int admits = 0, refused = 0;
        for (int step = 0; step < 3000; step++)
        {
            var key = K(random.Next(experts));
            switch (random.Next(5))
            {
                case 0 when !cache.TryGetSlot(key, out _):
                    if (cache.TryAdmit(key, out _, out ExpertKey? evicted))
                    {
                        admits++;
                        Assert.False(evicted is { } v && pins.GetValueOrDefault(v) > 0, $"pinned {evicted} was evicted");
                    }
                    else
                    {
                        refused++;
                        Assert.Equal(slots, pins.Count(p => p.Value > 0)); // refused only when every slot is pinned
                    }
                    break;
                case 1 when cache.TryGetSlot(key, out _) && pins.Count(p => p.Value > 0) < slots || pins.GetValueOrDefault(key) > 0:
                    cache.Pin(key);
                    pins[key] = pins.GetValueOrDefault(key) + 1;
                    break;
                case 2 when pins.GetValueOrDefault(key) > 0:
                    cache.Unpin(key);
                    pins[key]--;
                    break;
                case 3 when cache.TryGetSlot(key, out _):
                    cache.Touch(key);
                    break;
                case 4:
                    for (int e = 0; e < experts; e++) probabilities[e] = (float)random.NextDouble();
                    cache.ObserveRouting(0, probabilities);
                    break;
            }
            foreach ((ExpertKey k, int n) in pins)
                if (n > 0) Assert.True(cache.TryGetSlot(k, out _), $"pinned {k} left the cache at step {step}");
        }
        output.WriteLine($"{kind}: {admits} admissions, {cache.Evictions} evictions, {refused} refused while all pinned");
        Assert.True(cache.Evictions > 100);
    }

    [Fact]
    public void AllPinnedRefusesAdmission()
    {
        using ExpertCache cache = Cache(new LruPolicy(), 2);
        Admit(cache, K(0));
        Admit(cache, K(1));
        cache.Pin(K(0));
        cache.Pin(K(1));
        Assert.False(cache.TryAdmit(K(2), out _, out _));
        cache.Unpin(K(1));
        Assert.Equal(K(1), Admit(cache, K(2)));
        Assert.Throws<InvalidOperationException>(() => cache.Remove(K(0)));
        Assert.Throws<InvalidOperationException>(() => cache.Unpin(K(2)));
    }

    [Fact]
    public void ParsesCommandLineNames()
    {
        Assert.True(EvictionPolicy.TryParse("LRU", out EvictionPolicyKind k) && k == EvictionPolicyKind.Lru);
        Assert.True(EvictionPolicy.TryParse("lfu", out k) && k == EvictionPolicyKind.Lfu);
        Assert.True(EvictionPolicy.TryParse("score", out k) && k == EvictionPolicyKind.Score);
        Assert.False(EvictionPolicy.TryParse("0", out _));
        Assert.False(EvictionPolicy.TryParse("", out _));
    }

    private static void Use(ExpertCache cache, ExpertKey key, int times)
    {
        for (int i = 0; i < times; i++) cache.Touch(key);
    }
}
