// ExpertLoader: byte-identical slots under every policy, single loads under concurrency, prefetch accounting, priorities,
// cancellation of stale prefetches, I/O errors surfacing on Acquire, and no hang when every slot is pinned.
using Pregate.Experts;
using Xunit.Abstractions;

namespace Pregate.Tests.Experts;

public sealed class ExpertLoaderTests(ITestOutputHelper output) : IDisposable
{
    private static readonly TimeSpan Guard = TimeSpan.FromSeconds(60); // generous: a hang fails the test, never the suite
    private readonly DiskFolder _dir = new();

    public void Dispose() => _dir.Dispose();

    private StackedExpertFile Model(int layers = 3, int experts = 8, int seed = 1) =>
        new(_dir, $"model-{seed}.bin", layers, experts, partBytes: [3000, 5000, 4100], headerBytes: 1234, seed);

    private static ExpertLoader Loader(ExpertLayout layout, int slots, EvictionPolicyKind kind = EvictionPolicyKind.Lru, ExpertLoaderOptions? options = null) =>
        new(layout, new ExpertCache(new SlotPool(layout.SlotBytes, slots), EvictionPolicy.Create(kind, layout.LayerCount, layout.ExpertCount)), options);

    private static Task<T> Within<T>(Func<T> body) => Within(Task.Factory.StartNew(body, TaskCreationOptions.LongRunning));

    private static async Task<T> Within<T>(Task<T> task)
    {
        if (await Task.WhenAny(task, Task.Delay(Guard)) != task) Assert.Fail("the call did not return: a hang");
        return await task;
    }

    private void Print(ExpertCacheStats s) => output.WriteLine(
        $"hits {s.Hits}, misses {s.Misses}, loads {s.Loads}, bytes {s.BytesRead}, evictions {s.Evictions}, prefetch loads {s.PrefetchLoads}, " +
        $"prefetch hits {s.PrefetchHits}, wasted {s.PrefetchesWasted} (cancelled {s.PrefetchesCancelled}), stall {s.Stall.TotalMilliseconds:0.###} ms");

    [Theory]
    [InlineData(EvictionPolicyKind.Lru, true)]
    [InlineData(EvictionPolicyKind.Lfu, true)]
    [InlineData(EvictionPolicyKind.Score, true)]
    [InlineData(EvictionPolicyKind.Lru, false)]
    public void DecodeLikeTrafficGetsByteIdenticalExperts(EvictionPolicyKind kind, bool allowDirect)
    {
        StackedExpertFile model = Model(layers: 4, experts: 8);
        using ExpertLoader loader = Loader(model.Layout, slots: 6, kind, new ExpertLoaderOptions { AllowDirectIo = allowDirect });
        var random = new Random(11);
        var probabilities = new float[model.Experts];
        long acquires = 0, mismatches = 0;
        for (int token = 0; token < 40; token++)
        {
            for (int layer = 0; layer < model.Layers; layer++)
            {
                loader.BeginLayer(layer);
                ExpertKey[] chosen = Pick(random, layer, model.Experts);
                for (int e = 0; e < probabilities.Length; e++) probabilities[e] = chosen.Any(k => k.Expert == e) ? 0.4f : 0.2f / 6;
                loader.ObserveRouting(layer, probabilities);
                foreach (ExpertKey guess in Pick(random, (layer + 1) % model.Layers, model.Experts)) loader.Prefetch(guess);
                loader.Request(chosen);
                var leases = chosen.Select(loader.Acquire).ToList();
                foreach (ExpertLease lease in leases)
                {
                    mismatches += model.CountMismatches(lease);
                    acquires++;
                    lease.Dispose();
                }
            }
        }
        ExpertCacheStats s = loader.Stats;
        output.WriteLine($"{kind}, direct allowed {allowDirect}: {acquires} acquires, {mismatches} bytes differ from the file (tolerance 0)");
        Print(s);
        Assert.Equal(0, mismatches);
        Assert.Equal(acquires, s.Hits + s.Misses);
        Assert.InRange(s.PrefetchHits, 0, s.PrefetchLoads);
        Assert.InRange(s.PrefetchesCancelled, 0, s.PrefetchesWasted);
        Assert.InRange(s.Loads, 1, acquires + s.PrefetchLoads);
        Assert.True(s.BytesRead >= s.Loads * (3000 + 5000 + 4100));
        Assert.Throws<ArgumentException>(() => loader.ObserveRouting(0, [1f]));
    }

    // Two distinct experts, three quarters of the time from a hot set of four.
    private static ExpertKey[] Pick(Random random, int layer, int experts)
    {
        int a = random.Next(4) < 3 ? random.Next(4) : random.Next(experts);
        int b;
        do b = random.Next(4) < 3 ? random.Next(4) : random.Next(experts); while (b == a);
        return [new ExpertKey(layer, a), new ExpertKey(layer, b)];
    }

    [Fact]
    public void EnoughSlotsForEveryExpertReadsEachOnce()
    {
        StackedExpertFile model = Model(layers: 2, experts: 4);
        using ExpertLoader loader = Loader(model.Layout, slots: 8);
        for (int round = 0; round < 3; round++)
            for (int l = 0; l < 2; l++)
            {
                loader.BeginLayer(l);
                for (int e = 0; e < 4; e++)
                {
                    using ExpertLease lease = loader.Acquire(new ExpertKey(l, e));
                    Assert.Equal(0, model.CountMismatches(lease));
                }
            }
        ExpertCacheStats s = loader.Stats;
        Print(s);
        Assert.Equal(8, s.Loads);
        Assert.Equal(16, s.Hits);
        Assert.Equal(0, s.Evictions);
    }

    [Fact]
    public async Task ConcurrentAcquiresOfOneExpertLoadItOnce()
    {
        StackedExpertFile model = Model();
        using ExpertLoader loader = Loader(model.Layout, slots: 2);
        const int threads = 8;
        var key = new ExpertKey(2, 5);
        using var barrier = new Barrier(threads);
        Task<ExpertLease>[] tasks = Enumerable.Range(0, threads).Select(_ => Task.Factory.StartNew(() =>
        {
            barrier.SignalAndWait();
            return loader.Acquire(key);
        }, TaskCreationOptions.LongRunning)).ToArray();
        ExpertLease[] leases = await Within(Task.WhenAll(tasks));
        ExpertCacheStats s = loader.Stats;
        Print(s);
        Assert.Equal(1, s.Loads);
        Assert.Equal(threads, s.Hits + s.Misses);
        Assert.Single(leases.Select(l => l.Slot).Distinct());
        Assert.All(leases, l => Assert.Equal(0, model.CountMismatches(l)));
        foreach (ExpertLease lease in leases) lease.Dispose();
    }

    [Fact]
    public void PrefetchThenDemandIsAPrefetchHitWithoutASecondRead()
    {
        StackedExpertFile model = Model();
        using ExpertLoader loader = Loader(model.Layout, slots: 4);
        var key = new ExpertKey(1, 2);
        loader.BeginLayer(0);
        loader.Prefetch(key);
        Assert.True(loader.WaitUntilIdle(Guard));
        loader.Prefetch(key); // resident: no second read
        Assert.True(loader.WaitUntilIdle(Guard));
        loader.BeginLayer(1);
        using (ExpertLease lease = loader.Acquire(key)) Assert.Equal(0, model.CountMismatches(lease));
        ExpertCacheStats s = loader.Stats;
        Print(s);
        Assert.Equal(new ExpertCacheStats(Hits: 1, Misses: 0, Loads: 1, BytesRead: s.BytesRead, Evictions: 0, PrefetchLoads: 1,
            PrefetchHits: 1, PrefetchesWasted: 0, PrefetchesCancelled: 0, Stall: TimeSpan.Zero, IoBusy: s.IoBusy), s);

        // A requested (demand) load that finished before the acquire is still a miss, but no stall.
        var other = new ExpertKey(1, 3);
        loader.Request([other]);
        Assert.True(loader.WaitUntilIdle(Guard));
        Assert.True(loader.TryAcquire(other, out ExpertLease? ready));
        ready.Dispose();
        ExpertCacheStats d = loader.Stats - s;
        Print(d);
        Assert.Equal((0L, 1L, 1L, 0L), (d.Hits, d.Misses, d.Loads, d.PrefetchHits));
        Assert.Equal(TimeSpan.Zero, d.Stall);
        Assert.False(loader.TryAcquire(new ExpertKey(0, 0), out _));
    }

    [Fact]
    public void StalePrefetchesAreCancelledBeforeTheirRead()
    {
        StackedExpertFile model = Model(layers: 3);
        using ExpertLoader loader = Loader(model.Layout, slots: 4, options: new ExpertLoaderOptions { StartPaused = true });
        loader.BeginLayer(0);
        loader.Prefetch(new ExpertKey(1, 3)); // needed at layer 1 of this token
        loader.Prefetch(new ExpertKey(2, 4)); // needed at layer 2 of this token
        loader.BeginLayer(1);
        loader.BeginLayer(2);                 // (1, 3) went stale
        loader.Prefetch(new ExpertKey(0, 5)); // layer 0 is behind: needed at layer 0 of the next token
        loader.BeginLayer(0);                 // next token: (2, 4) went stale, (0, 5) is due now
        loader.Resume();
        Assert.True(loader.WaitUntilIdle(Guard));
        ExpertCacheStats s = loader.Stats;
        Print(s);
        Assert.Equal(2, s.PrefetchesCancelled);
        Assert.Equal(2, s.PrefetchesWasted);
        Assert.Equal(1, s.Loads);
        Assert.True(loader.IsResident(new ExpertKey(0, 5)));
        Assert.False(loader.IsResident(new ExpertKey(1, 3)));
        Assert.False(loader.IsResident(new ExpertKey(2, 4)));
    }

    [Fact]
    public void DemandLoadsGoFirstThenPrefetchesByDeadline()
    {
        StackedExpertFile model = Model(layers: 3);
        using ExpertLoader loader = Loader(model.Layout, slots: 2, options: new ExpertLoaderOptions { StartPaused = true });
        loader.BeginLayer(0);
        loader.Prefetch(new ExpertKey(2, 1)); // queued first, needed last
        loader.Prefetch(new ExpertKey(1, 1));
        loader.Request([new ExpertKey(0, 1)]); // queued last, needed now
        loader.Resume();
        Assert.True(loader.WaitUntilIdle(Guard));
        ExpertCacheStats s = loader.Stats;
        Print(s);
        // Two slots: the demand load takes one, the layer-1 prefetch the other, the layer-2 prefetch finds none (reserved).
        Assert.True(loader.IsResident(new ExpertKey(0, 1)));
        Assert.True(loader.IsResident(new ExpertKey(1, 1)));
        Assert.False(loader.IsResident(new ExpertKey(2, 1)));
        Assert.Equal((2L, 1L, 1L), (s.Loads, s.PrefetchLoads, s.PrefetchesCancelled));
    }

    [Fact]
    public async Task PrefetchesDoNotEvictEachOtherAndDemandTakesTheirSlot()
    {
        StackedExpertFile model = Model();
        using ExpertLoader loader = Loader(model.Layout, slots: 3);
        loader.BeginLayer(0);
        using ExpertLease current = loader.Acquire(new ExpertKey(0, 0));
        foreach (int e in new[] { 0, 1, 2 }) loader.Prefetch(new ExpertKey(1, e));
        Assert.True(loader.WaitUntilIdle(Guard));
        ExpertCacheStats s = loader.Stats;
        Print(s);
        Assert.Equal((3L, 2L, 1L), (s.Loads, s.PrefetchLoads, s.PrefetchesCancelled)); // the third prefetch found every slot taken
        Assert.True(loader.IsResident(new ExpertKey(1, 0)) && loader.IsResident(new ExpertKey(1, 1)));

        // A demand load with every slot pinned takes the prefetch reservation needed last rather than waiting.
        using (ExpertLease extra = await Within(() => loader.Acquire(new ExpertKey(0, 7))))
            Assert.Equal(0, model.CountMismatches(extra));
        ExpertCacheStats d = loader.Stats - s;
        Print(d);
        Assert.Equal(1, d.Evictions);
        Assert.Equal(1, d.PrefetchesWasted);
        Assert.Equal(1, new[] { 0, 1 }.Count(e => loader.IsResident(new ExpertKey(1, e))));
        Assert.Equal(0, model.CountMismatches(current));
    }

    [Fact]
    public void PinnedExpertIsNeverEvicted()
    {
        StackedExpertFile model = Model(layers: 3, experts: 8);
        using ExpertLoader loader = Loader(model.Layout, slots: 2);
        using ExpertLease pinned = loader.Acquire(new ExpertKey(0, 0));
        for (int i = 1; i < 24; i++)
        {
            using ExpertLease lease = loader.Acquire(new ExpertKey(i / 8, i % 8));
            Assert.NotEqual(pinned.Slot, lease.Slot);
            Assert.Equal(0, model.CountMismatches(lease));
        }
        Print(loader.Stats);
        Assert.Equal(22, loader.Stats.Evictions);
        Assert.Equal(0, model.CountMismatches(pinned));
    }

    [Fact]
    public async Task AllSlotsPinnedTimesOutWithAClearMessage()
    {
        StackedExpertFile model = Model();
        using ExpertLoader loader = Loader(model.Layout, slots: 2, options: new ExpertLoaderOptions { SlotWaitTimeout = TimeSpan.FromMilliseconds(200) });
        ExpertLease a = loader.Acquire(new ExpertKey(0, 0)), b = loader.Acquire(new ExpertKey(0, 1));
        TimeoutException e = await Within(() => Assert.Throws<TimeoutException>(() => loader.Acquire(new ExpertKey(0, 2))));
        output.WriteLine(e.Message);
        Assert.Contains("all 2 slots are pinned", e.Message);
        Assert.Contains("2 leases held", e.Message);
        // Queued behind a requested load that nobody waits for, an acquire still times out instead of hanging.
        loader.Request([new ExpertKey(0, 3)]);
        await Within(() => Assert.Throws<TimeoutException>(() => loader.Acquire(new ExpertKey(0, 4))));
        b.Dispose(); // the freed slot goes to the requested load, reserved for its acquire
        using (ExpertLease c = await Within(() => loader.Acquire(new ExpertKey(0, 3)))) Assert.Equal(0, model.CountMismatches(c));
        using (ExpertLease d = await Within(() => loader.Acquire(new ExpertKey(0, 2)))) Assert.Equal(0, model.CountMismatches(d));
        Assert.Equal(0, model.CountMismatches(a));
        a.Dispose();
    }

    [Fact]
    public async Task AcquireWithEverySlotPinnedWaitsForALeaseToEnd()
    {
        StackedExpertFile model = Model();
        using ExpertLoader loader = Loader(model.Layout, slots: 2);
        using ExpertLease a = loader.Acquire(new ExpertKey(0, 0));
        ExpertLease b = loader.Acquire(new ExpertKey(0, 1));
        Task<ExpertLease> waiting = Task.Factory.StartNew(() => loader.Acquire(new ExpertKey(0, 2)), TaskCreationOptions.LongRunning);
        b.Dispose();
        using ExpertLease c = await Within(waiting);
        Assert.Equal(b.Slot, c.Slot);
        Assert.Equal(0, model.CountMismatches(c));
    }

    [Fact]
    public void ReadErrorsSurfaceOnAcquireAndNameTheFile()
    {
        StackedExpertFile model = Model(layers: 2, experts: 4);
        ExpertPart lastOfLayer0 = model.Layout.Extent(new ExpertKey(0, 3)).Parts[2];
        using (var f = new FileStream(model.Path, FileMode.Open, FileAccess.Write)) f.SetLength(lastOfLayer0.Offset + lastOfLayer0.Length);
        using ExpertLoader loader = Loader(model.Layout, slots: 4);

        using (ExpertLease tail = loader.Acquire(new ExpertKey(0, 3))) // its last aligned read runs past the new end
            Assert.Equal(0, model.CountMismatches(tail));
        var e = Assert.Throws<ExpertLoadException>(() => loader.Acquire(new ExpertKey(1, 0)));
        output.WriteLine(e.Message);
        Assert.Contains(model.Path, e.Message);
        Assert.IsAssignableFrom<IOException>(e.InnerException);
        Assert.Equal(new ExpertKey(1, 0), e.Key);

        loader.Prefetch(new ExpertKey(1, 1)); // fails on an I/O thread; the acquire that follows reports it
        Assert.True(loader.WaitUntilIdle(Guard));
        Assert.Throws<ExpertLoadException>(() => loader.Acquire(new ExpertKey(1, 1)));

        // Failed loads give their slots back: all four slots still hold layer 0 at once.
        var leases = Enumerable.Range(0, 4).Select(x => loader.Acquire(new ExpertKey(0, x))).ToList();
        Assert.All(leases, l => Assert.Equal(0, model.CountMismatches(l)));
        leases.ForEach(l => l.Dispose());
    }

    // The loader opens its files up front: a file deleted (or renamed over) later is still read through the open
    // descriptor, as the checkpoint's memory map still reads it; a file missing when the loader starts is a clear error.
    [Fact]
    public void ADeletedFileIsStillReadAndAMissingOneIsAnErrorAtStart()
    {
        StackedExpertFile model = Model();
        using (ExpertLoader loader = Loader(model.Layout, slots: 2))
        {
            File.Delete(model.Path);
            File.WriteAllBytes(model.Path, new byte[16]); // a different file at the same path
            using ExpertLease lease = loader.Acquire(new ExpertKey(1, 2));
            Assert.Equal(0, model.CountMismatches(lease));
        }
        File.Delete(model.Path);
        var e = Assert.Throws<FileNotFoundException>(() => Loader(model.Layout, slots: 2));
        output.WriteLine(e.Message);
        Assert.Contains(model.Path, e.Message);
    }

    [Fact]
    public async Task DisposeFailsWaitersAndStopsTheThreads()
    {
        StackedExpertFile model = Model();
        ExpertLoader loader = Loader(model.Layout, slots: 2);
        ExpertLease a = loader.Acquire(new ExpertKey(0, 0)), b = loader.Acquire(new ExpertKey(0, 1));
        loader.Prefetch(new ExpertKey(1, 0));
        Task<ObjectDisposedException> waiting = Task.Factory.StartNew(
            () => Assert.Throws<ObjectDisposedException>(() => loader.Acquire(new ExpertKey(0, 2))), TaskCreationOptions.LongRunning);
        await Within(() => { loader.Dispose(); return 0; });
        output.WriteLine((await Within(waiting)).Message);
        a.Dispose(); // after the loader: harmless
        b.Dispose();
        Assert.Throws<ObjectDisposedException>(() => loader.Prefetch(new ExpertKey(0, 0)));
    }

    [Fact]
    public void RejectsSlotsSmallerThanTheLayoutAndKeysOutsideTheModel()
    {
        StackedExpertFile model = Model();
        var small = new ExpertCache(new SlotPool(4096, 2), new LruPolicy());
        Assert.Throws<ArgumentException>(() => new ExpertLoader(model.Layout, small));
        small.Dispose();
        using ExpertLoader loader = Loader(model.Layout, slots: 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => loader.Acquire(new ExpertKey(3, 0)));
        Assert.Throws<ArgumentOutOfRangeException>(() => loader.Prefetch(new ExpertKey(0, 8)));
        Assert.Throws<ArgumentOutOfRangeException>(() => loader.BeginLayer(3));
    }
}
