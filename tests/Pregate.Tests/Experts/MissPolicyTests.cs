// The miss policies beyond load: compute never puts an expert into the cache, auto computes page-cached experts in place
// and loads cold ones while slots are free, and the cost model's decisions follow its documented formula.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Experts.Prediction;
using Pregate.Formats;
using Pregate.Formats.Synth;
using Xunit.Abstractions;
using static Pregate.Tests.Models.ModelTestSupport;

namespace Pregate.Tests.Experts;

public sealed unsafe partial class MissPolicyTests(ITestOutputHelper output) : IDisposable
{
    private readonly DiskFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    // 3 layers × 8 experts top-2, written to a disk folder so its pages can be dropped and O_DIRECT works.
    private string Model(string family, DType type)
    {
        string path = _folder.File($"{family}.gguf");
        var c = SynthShapes.Get(family) with { NumLayers = 3, NumExperts = 8 };
        SyntheticModel.WriteGguf(path, new SynthOptions(c, type, Seed: 11));
        return path;
    }

    private static float[][] ResidentLogits(string path, int[] tokens)
    {
        using var resident = ModelSession.Open(path, new EngineOptions { Context = 64, ExpertMemory = ExpertMemory.All });
        return resident.Logits(tokens, allPositions: true);
    }

    private static ModelSession Open(string path, int slots, MissPolicy onMiss)
    {
        long slotBytes;
        using (var ck = Checkpoint.Open(path)) slotBytes = DirectFileReader.AlignUp(OffloadedExperts.LayoutOf(ck).SlotBytes);
        return ModelSession.Open(path, new EngineOptions
        {
            Context = 64, ExpertMemory = ExpertMemory.OfBytes(slots * slotBytes), OnMiss = onMiss, Predictor = PredictorKind.None,
            ResidentWhenBudgetCoversAll = false,
        });
    }

    [Theory]
    [InlineData("tiny", "q8_0")]
    [InlineData("tiny-qwen3moe", "f32")]
    public void ComputeNeverGrowsTheCache(string family, string dtype)
    {
        Assert.True(DTypes.TryParse(dtype, out DType type));
        string path = Model(family, type);
        var tokens = Tokens(32, SynthShapes.Get(family).VocabSize, 5);
        float[][] expected, expectedDecode;
        using (var resident = ModelSession.Open(path, new EngineOptions { Context = 64, ExpertMemory = ExpertMemory.All }))
            (expected, expectedDecode) = (resident.Logits(tokens, allPositions: true), Decode(resident, tokens));
        using var session = Open(path, slots: 7, MissPolicy.Compute);
        Assert.Contains("on miss compute", session.ExpertPlacement.Describe());
        var prompt = session.Logits(tokens, allPositions: true);
        var decode = Decode(session, tokens);
        ExpertStats s = session.ExpertStats;
        output.WriteLine($"{family} {dtype}: {s.ComputedInPlace} experts ({s.ComputedInPlaceBytes} bytes) computed in place, " +
                         $"{s.Cache.Loads} loads, {s.BytesRead} bytes read, {s.Cache.Hits} hits");
        AssertBitIdentical(expected, prompt);
        AssertBitIdentical(expectedDecode, decode);
        Assert.Equal(0, s.Cache.Loads);
        Assert.Equal(0, s.BytesRead);
        Assert.Equal(0, s.Cache.Hits + s.Cache.Misses);
        Assert.True(s.ComputedInPlace > 0);
        Assert.Equal(0, s.ComputedInPlaceBytes % s.ComputedInPlace); // every expert of these models has the same size
    }

    [Fact]
    public void AutoComputesPageCachedExpertsInPlace()
    {
        string path = Model("tiny", DType.Q8_0);
        File.ReadAllBytes(path); // every page of the file in the page cache
        var tokens = Tokens(24, SynthShapes.Get("tiny").VocabSize, 6);
        var expected = ResidentLogits(path, tokens);
        using var session = Open(path, slots: 7, MissPolicy.Auto);
        var actual = session.Logits(tokens, allPositions: true);
        ExpertStats s = session.ExpertStats;
        output.WriteLine($"page-cached file, auto: {s.ComputedInPlace} computed in place, {s.Cache.Loads} loads");
        AssertBitIdentical(expected, actual);
        Assert.True(s.ComputedInPlace > 0);
        Assert.Equal(0, s.Cache.Loads);
    }

    [Fact]
    public void AutoLoadsColdExpertsWhileSlotsAreFree()
    {
        string path = Model("tiny", DType.Q8_0);
        var tokens = Tokens(24, SynthShapes.Get("tiny").VocabSize, 7);
        var expected = ResidentLogits(path, tokens);
        using var session = Open(path, slots: 24, MissPolicy.Auto);
        if (!session.ExpertPlacement.DirectIo)
        {
            output.WriteLine("skipped: this filesystem refuses O_DIRECT, so expert pages cannot be kept out of the page cache");
            return;
        }
        PageCache.Drop(path);
        var actual = session.Logits(tokens, allPositions: true);
        ExpertStats s = session.ExpertStats;
        output.WriteLine($"cold file, a slot for every expert, auto: {s.Cache.Loads} loads, {s.ComputedInPlace} computed in place " +
                         "(experts within a page-cache folio of a resident tensor count as cached)");
        AssertBitIdentical(expected, actual);
        Assert.True(s.Cache.Loads > 0, "with free slots, cold experts should be loaded");
    }

    // cost(load) = B·s_direct·(1 + f_victim), cost(compute) = B·(s_map + f_new·s_direct), with the priors s_direct = 1/1.0e9,
    // s_map = 1/0.6e9: a cold expert is loaded into a free slot, computed in place rather than evicting a frequently used
    // one, and computed in place whenever its pages are in the page cache.
    [Fact]
    public void CostModelFollowsItsFormula()
    {
        if (!OperatingSystem.IsLinux()) return;
        const int experts = 4, parts = 3;
        const long partBytes = 64 << 10, stride = 8 << 20; // experts 8 MiB apart: faulting one reads nothing of another
        _folder.WriteRandom("experts.bin", experts * stride, 3);
        string file = _folder.File("experts.bin");
        PageCache.Drop(file);
        using var map = new MappedFile(file);
        var pointers = new nint[experts * parts];
        var lengths = new long[experts * parts];
        for (int i = 0; i < pointers.Length; i++) (pointers[i], lengths[i]) = ((nint)(map.Base + i / parts * stride + i % parts * partBytes), partBytes);
        var model = new MissCostModel(1, experts, parts, pointers, lengths);
        ExpertKey cold = new(0, 0), popular = new(0, 1), warm = new(0, 2);
        Assert.Equal(parts * partBytes, model.BytesOf(cold));

        Assert.False(model.IsPageCached(cold));
        Assert.False(model.PreferCompute(cold, victim: null, token: 0, out bool cached));
        Assert.False(cached);
        for (long t = 0; t < 40; t++) model.ObserveUse(popular, 1, 1, t);
        model.ObserveUse(cold, 1, 1, 40);
        double fPopular = model.Frequency(popular, 40), fCold = model.Frequency(cold, 40);
        output.WriteLine($"frequencies: popular {fPopular:0.000}, cold {fCold:0.000}; s_direct {model.DirectSecondsPerByte:E2}, s_map {model.MapSecondsPerByte:E2} s/B");
        Assert.InRange(fPopular, 0.98, 1.0);
        Assert.InRange(fCold, 0.099, 0.101);
        Assert.True(model.PreferCompute(cold, victim: popular, token: 40, out _), "evicting a popular expert for a rarely used one");
        Assert.False(model.PreferCompute(popular, victim: cold, token: 40, out _), "evicting a rarely used expert for a popular one");

        long sum = 0;
        for (int i = 0; i < parts; i++)
            for (long b = 0; b < partBytes; b += 512) sum += map.Base[2 * stride + i * partBytes + b]; // fault the warm expert in
        Assert.True(sum >= 0);
        Thread.Sleep(MissCostModel.ResidencyTtl * 2);
        Assert.True(model.IsPageCached(warm));
        Assert.True(model.PreferCompute(warm, victim: null, token: 40, out cached));
        Assert.True(cached);

        // A measured disk far faster than the map reads makes even a popular victim worth evicting.
        model.ObserveLoader(new ExpertCacheStats(0, 0, 100, 1L << 30, 0, 0, 0, 0, 0, TimeSpan.Zero, TimeSpan.FromSeconds(0.01)));
        Assert.False(model.PreferCompute(cold, victim: popular, token: 40, out _));
    }
}
