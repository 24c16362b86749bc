// The loader's prefetch gates (PrefetchGating): unlikely guesses are neither read nor reserved, a prefetch never evicts an
// expert used more often than it is likely right, prefetches wait for the layer's demand and are dropped when it passes,
// piecewise prefetch reads deliver byte-identical experts, and with gating off every guess is read as before.
using Pregate.Experts;
using Xunit.Abstractions;

namespace Pregate.Tests.Experts;

public sealed class PrefetchGatingTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(60); // generous: a hang fails the test, never the suite
    private readonly DiskFolder _dir = new();

    public void Dispose() => _dir.Dispose();

    private StackedExpertFile Model(int layers = 3, int experts = 8, long[]? partBytes = null) =>
        new(_dir, $"model-{layers}-{experts}.bin", layers, experts, partBytes ?? [3000, 5000, 4100], headerBytes: 1234, seed: 5);

    private static ExpertLoader Loader(ExpertLayout layout, int slots, PrefetchGating gating, EvictionPolicyKind kind = EvictionPolicyKind.Lru, bool paused = false) =>
        new(layout, new ExpertCache(new SlotPool(layout.SlotBytes, slots), EvictionPolicy.Create(kind, layout.LayerCount, layout.ExpertCount)),
            new ExpertLoaderOptions { Prefetch = gating, StartPaused = paused });

    private void Print(string what, ExpertCacheStats s) => output.WriteLine(
        $"{what}: loads {s.Loads}, prefetch loads {s.PrefetchLoads}, prefetch hits {s.PrefetchHits}, wasted {s.PrefetchesWasted} (cancelled {s.PrefetchesCancelled}), " +
        $"skipped unlikely {s.PrefetchesSkippedUnlikely}, valuable {s.PrefetchesSkippedValuable}, busy {s.PrefetchesSkippedBusy}, evictions {s.Evictions}");

    // One pass of `layer` that uses `experts`: enter, request, acquire and release each.
    private static void Use(ExpertLoader loader, int layer, params int[] experts)
    {
        loader.BeginLayer(layer);
        ExpertKey[] keys = experts.Select(e => new ExpertKey(layer, e)).ToArray();
        loader.Request(keys);
        foreach (ExpertKey key in keys) loader.Acquire(key).Dispose();
    }

    [Fact]
    public void AGuessBelowTheThresholdIsNeitherReadNorReserved()
    {
        StackedExpertFile model = Model();
        using ExpertLoader loader = Loader(model.Layout, slots: 2, new PrefetchGating { MinProbability = 0.5 });
        loader.BeginLayer(0);
        loader.Prefetch(new ExpertKey(1, 1), probability: 0.49);
        loader.Prefetch(new ExpertKey(1, 2), probability: 0.5);
        Assert.True(loader.WaitUntilIdle(Guard));
        ExpertCacheStats s = loader.Stats;
        Print("threshold 0.5", s);
        Assert.False(loader.IsResidentOrLoading(new ExpertKey(1, 1)));
        Assert.True(loader.IsResident(new ExpertKey(1, 2)));
        Assert.Equal((1L, 1L, 1L), (s.Loads, s.PrefetchLoads, s.PrefetchesSkippedUnlikely));
        Assert.Equal(1, loader.LayerStats()[1].PrefetchesSkippedUnlikely);

        // A resident expert guessed below the threshold is not reserved: a demand load may evict it at once.
        using (loader.Acquire(new ExpertKey(0, 0))) { }
        loader.Prefetch(new ExpertKey(0, 0), probability: 0.1); // resident: not a skipped read, and no reservation
        using (ExpertLease lease = loader.Acquire(new ExpertKey(0, 3)))
        {
            Assert.Equal(0, model.CountMismatches(lease));
            Assert.False(loader.IsResident(new ExpertKey(0, 0)), "the unlikely guess kept its slot");
        }
        Assert.Equal(1, loader.Stats.PrefetchesSkippedUnlikely);
        Assert.Throws<ArgumentOutOfRangeException>(() => loader.Prefetch(new ExpertKey(1, 1), probability: 1.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => loader.Prefetch(new ExpertKey(1, 1), probability: double.NaN));
    }

    [Fact]
    public void WithGatingOffEveryGuessIsReadWhateverItsProbability()
    {
        StackedExpertFile model = Model();
        using ExpertLoader loader = Loader(model.Layout, slots: 2, PrefetchGating.Off);
        Use(loader, 0, 0, 1); // a full cache of used experts
        Use(loader, 0, 0, 1);
        loader.Prefetch(new ExpertKey(1, 5), probability: 0.01);
        Assert.True(loader.WaitUntilIdle(Guard));
        ExpertCacheStats s = loader.Stats;
        Print("off", s);
        Assert.True(loader.IsResident(new ExpertKey(1, 5)));
        Assert.Equal((1L, 0L), (s.PrefetchLoads, s.PrefetchesSkipped));
        Assert.Equal(1, s.Evictions);
    }

    [Fact]
    public void APrefetchNeverEvictsAnExpertUsedMoreOftenThanTheGuessIsLikelyRight()
    {
        StackedExpertFile model = Model();
        using ExpertLoader loader = Loader(model.Layout, slots: 2, new PrefetchGating { ProtectValuable = true });
        // Expert (0, 0) is used in every pass, (0, 1) only in the last: LRU would evict (0, 0), the more valuable one.
        for (int pass = 0; pass < 8; pass++) Use(loader, 0, 0);
        Use(loader, 0, 0);
        Use(loader, 0, 1);
        loader.BeginLayer(0); // folds the last pass
        double often = loader.UseValue(new ExpertKey(0, 0)), once = loader.UseValue(new ExpertKey(0, 1));
        output.WriteLine($"expected use: (0, 0) {often:0.000}, (0, 1) {once:0.000}");
        Assert.True(often > 0.5 && once is > 0 and < 0.2, $"use values {often}, {once}");

        // A guess less likely than either is skipped and evicts nothing.
        loader.Prefetch(new ExpertKey(1, 4), probability: once / 2);
        Assert.True(loader.WaitUntilIdle(Guard));
        ExpertCacheStats s = loader.Stats;
        Print("unlikely guess", s);
        Assert.Equal(1, s.PrefetchesSkippedValuable);
        Assert.Equal(1, loader.LayerStats()[1].PrefetchesSkippedValuable);
        Assert.False(loader.IsResidentOrLoading(new ExpertKey(1, 4)));
        Assert.True(loader.IsResident(new ExpertKey(0, 0)) && loader.IsResident(new ExpertKey(0, 1)));

        // A guess between the two takes the slot of the less used expert, though LRU's own victim is the other one.
        loader.Prefetch(new ExpertKey(1, 5), probability: (often + once) / 2);
        Assert.True(loader.WaitUntilIdle(Guard));
        ExpertCacheStats d = loader.Stats - s;
        Print("likelier guess", d);
        Assert.Equal((1L, 1L, 0L), (d.PrefetchLoads, d.Evictions, d.PrefetchesSkipped));
        Assert.True(loader.IsResident(new ExpertKey(1, 5)));
        Assert.True(loader.IsResident(new ExpertKey(0, 0)), "the prefetch evicted the expert used in every pass");
        Assert.False(loader.IsResident(new ExpertKey(0, 1)));

        // Demand loads are not gated: they take the policy's victim whatever its use.
        loader.BeginLayer(1);
        loader.Acquire(new ExpertKey(1, 5)).Dispose();
        loader.Acquire(new ExpertKey(1, 6)).Dispose();
        Assert.False(loader.IsResident(new ExpertKey(0, 0)));
    }

    [Fact]
    public void BehindDemandAPrefetchWaitsForTheNextLayersDemandAndIsDroppedWhenItsLayerPasses()
    {
        StackedExpertFile model = Model(layers: 3);
        using ExpertLoader loader = Loader(model.Layout, slots: 4, new PrefetchGating { MaxWrongReads = 1 });
        loader.BeginLayer(0);
        loader.Request([]);
        loader.Prefetch(new ExpertKey(2, 1)); // asked for after layer 0's demand: waits for layer 1's
        Assert.False(loader.WaitUntilIdle(TimeSpan.FromMilliseconds(300)), "the prefetch was read before the next layer asked for its experts");
        Assert.Equal(0, loader.Stats.Loads);
        loader.BeginLayer(1);
        loader.Request([new ExpertKey(1, 0)]);
        Assert.True(loader.WaitUntilIdle(Guard));
        ExpertCacheStats s = loader.Stats;
        Print("declared", s);
        Assert.Equal((2L, 1L), (s.Loads, s.PrefetchLoads));
        Assert.True(loader.IsResident(new ExpertKey(2, 1)));
        loader.Acquire(new ExpertKey(1, 0)).Dispose();

        // A prefetch still queued when its layer asks for other experts is dropped as skipped (the disk stayed busy).
        using ExpertLoader paused = Loader(model.Layout, slots: 4, new PrefetchGating { MaxWrongReads = 1 }, paused: true);
        paused.BeginLayer(0);
        paused.Request([]);
        paused.Prefetch(new ExpertKey(1, 3));
        paused.Prefetch(new ExpertKey(1, 4));
        paused.BeginLayer(1);
        paused.Request([new ExpertKey(1, 4)]); // the right guess becomes a demand load, the wrong one is dropped
        paused.Resume();
        Assert.True(paused.WaitUntilIdle(Guard));
        ExpertCacheStats p = paused.Stats;
        Print("stale", p);
        Assert.Equal((1L, 0L, 1L), (p.Loads, p.PrefetchLoads, p.PrefetchesSkippedBusy));
        Assert.Equal((0L, 0L), (p.PrefetchesCancelled, p.PrefetchesWasted));
        Assert.False(paused.IsResidentOrLoading(new ExpertKey(1, 3)));
        Assert.True(paused.IsResident(new ExpertKey(1, 4)));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void PiecewisePrefetchReadsDeliverByteIdenticalExperts(int maxReads)
    {
        // Parts of 1.1 and 4.3 MB: the 4.3 MB part is read in two 4 MiB pieces, unaligned at both ends.
        StackedExpertFile model = Model(layers: 3, experts: 3, partBytes: [1_100_003, 4_300_001, 1_100_007]);
        using ExpertLoader loader = Loader(model.Layout, slots: 6, new PrefetchGating { MaxWrongReads = maxReads });
        loader.BeginLayer(0);
        loader.Request([]);
        for (int e = 0; e < 3; e++) loader.Prefetch(new ExpertKey(2, e)); // two layers ahead
        loader.BeginLayer(1);
        loader.Request([new ExpertKey(1, 0)]);
        loader.Acquire(new ExpertKey(1, 0)).Dispose();
        Assert.True(loader.WaitUntilIdle(Guard));
        loader.BeginLayer(2);
        loader.Request([new ExpertKey(2, 0), new ExpertKey(2, 1), new ExpertKey(2, 2)]);
        long mismatches = 0;
        for (int e = 0; e < 3; e++)
            using (ExpertLease lease = loader.Acquire(new ExpertKey(2, e)))
                mismatches += model.CountMismatches(lease);
        ExpertCacheStats s = loader.Stats;
        Print($"behind demand ≤ {maxReads} wrong reads", s);
        output.WriteLine($"{mismatches} bytes differ from the file (tolerance 0)");
        Assert.Equal(0, mismatches);
        Assert.Equal((4L, 3L, 3L), (s.Loads, s.PrefetchLoads, s.PrefetchHits));
        Assert.True(s.BytesRead >= s.Loads * (1_100_003 + 4_300_001 + 1_100_007));
    }

    [Fact]
    public void GatingSettingsAreValidatedAndDescribed()
    {
        StackedExpertFile model = Model();
        Assert.Throws<ArgumentOutOfRangeException>(() => Loader(model.Layout, 2, new PrefetchGating { MinProbability = 1.2 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Loader(model.Layout, 2, new PrefetchGating { MaxWrongReads = -1 }));
        Assert.True(PrefetchGating.Off.IsOff);
        Assert.False(PrefetchGating.Default.IsOff);
        Assert.Equal("off", PrefetchGating.Off.ToString());
        Assert.Equal("p ≥ 0.25, cache value, behind demand ≤ 2 wrong reads", new PrefetchGating { MinProbability = 0.25, ProtectValuable = true, MaxWrongReads = 2 }.ToString());
        using ExpertLoader loader = Loader(model.Layout, 2, PrefetchGating.Default);
        Assert.Throws<ArgumentOutOfRangeException>(() => loader.UseValue(new ExpertKey(3, 0)));
        Assert.Equal(0, loader.UseValue(new ExpertKey(2, 7)));
    }
}
