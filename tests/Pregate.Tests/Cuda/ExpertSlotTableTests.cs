// VRAM slot bookkeeping: hits and misses, eviction through the shared policies without touching pinned experts,
// prefetches that count as hits when used, and a clear error when nothing can be evicted.
using Pregate.Cuda;
using Pregate.Experts;
using Xunit.Abstractions;

namespace Pregate.Tests.Cuda;

public sealed class ExpertSlotTableTests(ITestOutputHelper output)
{
    private static readonly Func<ExpertKey, bool> Nothing = _ => false;

    [Fact]
    public void MissesFillFreeSlotsThenHit()
    {
        var t = new ExpertSlotTable(2, 1024, new LruPolicy());
        int a = t.Use(new ExpertKey(0, 1), Nothing, out bool copyA);
        int b = t.Use(new ExpertKey(0, 2), Nothing, out bool copyB);
        int again = t.Use(new ExpertKey(0, 1), Nothing, out bool copyAgain);
        Assert.True(copyA && copyB && !copyAgain);
        Assert.NotEqual(a, b);
        Assert.Equal(a, again);
        Assert.Equal((1L, 2L), (t.Stats.Hits, t.Stats.Misses));
        Assert.Equal(new ExpertKey(0, 2), t.Occupant(b));
    }

    [Fact]
    public void LruEvictsTheLeastRecentlyUsedUnpinnedExpert()
    {
        var t = new ExpertSlotTable(2, 1024, new LruPolicy());
        var k1 = new ExpertKey(0, 1);
        var k2 = new ExpertKey(0, 2);
        var k3 = new ExpertKey(1, 0);
        int s1 = t.Use(k1, Nothing, out _);
        t.Use(k2, Nothing, out _);
        t.Use(k1, Nothing, out _);
        int s3 = t.Use(k3, Nothing, out bool copy);
        Assert.True(copy);
        Assert.False(t.Contains(k2, out _));
        Assert.True(t.Contains(k1, out int still) && still == s1);
        Assert.NotEqual(s1, s3);
        Assert.Equal(1, t.Stats.Evictions);
    }

    [Fact]
    public void PinnedExpertsAreNeverEvicted()
    {
        var t = new ExpertSlotTable(2, 1024, EvictionPolicy.Create(EvictionPolicyKind.Score, 2, 4));
        var k1 = new ExpertKey(0, 0);
        var k2 = new ExpertKey(0, 1);
        t.Use(k1, Nothing, out _);
        t.Use(k2, Nothing, out _);
        var pinned = new HashSet<ExpertKey> { k1, k2 };
        Assert.Null(t.Prefetch(new ExpertKey(1, 3), pinned.Contains));
        var e = Assert.Throws<InvalidOperationException>(() => t.Use(new ExpertKey(1, 2), pinned.Contains, out _));
        output.WriteLine(e.Message);
        Assert.True(t.Contains(k1, out _) && t.Contains(k2, out _));
    }

    [Fact]
    public void UsedPrefetchesAreCounted()
    {
        var t = new ExpertSlotTable(3, 1024, new LfuPolicy(64));
        var predicted = new ExpertKey(1, 2);
        Assert.NotNull(t.Prefetch(predicted, Nothing));
        Assert.Null(t.Prefetch(predicted, Nothing));
        t.Use(predicted, Nothing, out bool copy);
        t.Use(predicted, Nothing, out _);
        t.CountCopy(1024);
        Assert.False(copy);
        var s = t.Stats;
        output.WriteLine(s.ToString());
        Assert.Equal((1L, 1L, 2L, 0L, 1024L), (s.Prefetches, s.PrefetchHits, s.Hits, s.Misses, s.BytesCopied));
    }

    [Fact]
    public void EverySlotHoldsAtMostOneExpert()
    {
        var rng = new Random(5);
        var t = new ExpertSlotTable(5, 64, new LruPolicy());
        for (int i = 0; i < 500; i++)
        {
            var key = new ExpertKey(rng.Next(3), rng.Next(8));
            if (rng.Next(3) == 0) t.Prefetch(key, Nothing);
            else t.Use(key, Nothing, out _);
            var occupants = Enumerable.Range(0, t.SlotCount).Select(t.Occupant).Where(o => o is not null).ToList();
            Assert.Equal(occupants.Count, occupants.Distinct().Count());
            Assert.Equal(t.Count, occupants.Count(o => t.Contains(o!.Value, out _)));
        }
        output.WriteLine(t.Stats.ToString());
    }
}
