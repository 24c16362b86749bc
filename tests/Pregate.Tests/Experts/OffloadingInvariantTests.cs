// The central invariant of offloading: for every family, format, weight type, budget, cache policy and miss policy the
// logits at every position are bit-identical to the resident run; plus hit rates, bytes read, the minimum budget and the runner's own
// out-of-order path compared with ResidentExperts.
using System.Runtime.InteropServices;
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Experts.Prediction;
using Pregate.Formats;
using Pregate.Formats.Safetensors;
using Pregate.Formats.Synth;
using Pregate.Kernels;
using Pregate.Models;
using Xunit.Abstractions;
using static Pregate.Tests.Models.ModelTestSupport;

namespace Pregate.Tests.Experts;

public sealed class OffloadingInvariantTests(ITestOutputHelper output)
{
    private const int Positions = 40;

    // 3 layers × 8 experts top-2: 24 experts, so budgets of 2 / 7 / 17 / 24 slots differ in hit rate.
    private static ModelConfig Shape(string family) => SynthShapes.Get(family) with { NumLayers = 3, NumExperts = 8 };

    public static TheoryData<string, string> Models()
    {
        var data = new TheoryData<string, string>();
        foreach (string family in new[] { "tiny", "tiny-qwen2moe", "tiny-qwen3moe", "tiny-olmoe" })
            foreach (string variant in new[] { "gguf-f32", "gguf-q8_0", "hf-f32", "hf-bf16", "hf-sharded" })
                data.Add(family, variant);
        return data;
    }

    // variant: gguf-<dtype>, hf-<dtype>, or hf-sharded (f32, one tensor per shard: an expert's matrices in different files).
    private static string ModelPath(string family, string variant)
    {
        var c = Shape(family);
        if (variant == "hf-sharded") return Reshard(Synth(family + "-l3e8", c, DType.F32, gguf: false), maxShardBytes: 16 << 10);
        string[] v = variant.Split('-');
        Assert.True(DTypes.TryParse(v[1], out DType type));
        return Synth(family + "-l3e8", c, type, gguf: v[0] == "gguf");
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void LogitsAreBitIdenticalToResidentAtEveryBudgetAndPolicy(string family, string variant)
    {
        string path = ModelPath(family, variant);
        var c = Shape(family);
        var tokens = Tokens(Positions, c.VocabSize, 41);
        float[][] expected;
        using (var resident = ModelSession.Open(path, new EngineOptions { Context = 64, ExpertMemory = ExpertMemory.All }))
        {
            expected = resident.Logits(tokens, allPositions: true);
            Assert.False(resident.ExpertPlacement.Offloaded);
            Assert.Equal(default, resident.ExpertStats);
        }
        int all = c.NumLayers * c.NumExperts;
        foreach (int slots in new[] { c.NumExpertsUsed, (int)Math.Round(0.3 * all), (int)Math.Round(0.7 * all), all })
            foreach (EvictionPolicyKind policy in Enum.GetValues<EvictionPolicyKind>())
                foreach (MissPolicy miss in Enum.GetValues<MissPolicy>().Where(m => m != MissPolicy.LowPrecision)) // changes outputs by design: LowPrecisionMissTests
                {
                    using var session = OpenWithSlots(path, slots, policy, onMiss: miss);
                    Assert.True(session.ExpertPlacement.Offloaded);
                    Assert.Equal(slots, session.ExpertPlacement.SlotCount);
                    var actual = session.Logits(tokens, allPositions: true);
                    ExpertStats s = session.ExpertStats;
                    output.WriteLine($"{family} {variant}: {slots,2} of {all} slots, {policy,-5} on miss {miss,-7}: hit rate {s.HitRate:0.000}, " +
                                     $"{s.Misses} misses, {s.BytesRead} bytes read, {s.ComputedInPlace} computed in place over {s.Tokens} tokens");
                    AssertBitIdentical(expected, actual);
                    Assert.Equal(Positions, s.Tokens);
                    // The prompt runs as blocks: each distinct expert of a layer is used once per block, not once per token.
                    Assert.InRange(s.Cache.Hits + s.Cache.Misses + s.ComputedInPlace, c.NumLayers * c.NumExpertsUsed, Positions * c.NumLayers * c.NumExpertsUsed);
                    switch (miss)
                    {
                        case MissPolicy.Load:
                            Assert.True(s.BytesRead > 0, "an offloaded run reads experts from the file");
                            Assert.Equal(0, s.ComputedInPlace);
                            if (slots == c.NumExpertsUsed) Assert.True(s.HitRate < 1, $"hit rate {s.HitRate} at the minimum budget");
                            break;
                        case MissPolicy.Compute:
                            Assert.True(s.ComputedInPlace > 0, "compute: the first use of an expert is computed from the map");
                            break;
                    }
                }
    }

    [Theory]
    [InlineData("tiny", "gguf-q8_0")]
    [InlineData("tiny-qwen3moe", "hf-f32")]
    public void ACacheHoldingEveryExpertHitsAlwaysAfterWarmUp(string family, string variant)
    {
        string path = ModelPath(family, variant);
        var c = Shape(family);
        var tokens = Tokens(Positions, c.VocabSize, 43);
        // No predictor: a wrong guess would read an expert the first pass never used, which is not what this test measures.
        using var session = OpenWithSlots(path, c.NumLayers * c.NumExperts, EvictionPolicyKind.Lru, PredictorKind.None);
        var first = session.Logits(tokens, allPositions: true);
        ExpertStats warm = session.ExpertStats;
        var second = session.Logits(tokens, allPositions: true);
        ExpertStats d = session.ExpertStats - warm;
        output.WriteLine($"warm-up: hit rate {warm.HitRate:0.000}, {warm.BytesRead} bytes; second pass: hit rate {d.HitRate:0.000}, {d.BytesRead} bytes, " +
                         $"{d.BytesPerToken} bytes/token, stall {d.StallMsPerToken:0.000} ms/token");
        AssertBitIdentical(first, second);
        Assert.True(warm.HitRate < 1);
        Assert.Equal(1.0, d.HitRate);
        Assert.Equal(0, d.Misses);
        Assert.Equal(0, d.BytesRead);
        Assert.Equal(Positions, d.Tokens);
    }

    [Fact]
    public void ABudgetBelowTopKSlotsIsAClearErrorAndTheMinimumWorks()
    {
        string path = ModelPath("tiny", "gguf-f32");
        long slotBytes = SlotBytesOf(path);
        long minimum = 2 * slotBytes;
        var e = Assert.Throws<ArgumentException>(() => ModelSession.Open(path, new EngineOptions { ExpertMemory = ExpertMemory.OfBytes(minimum - 1) }));
        output.WriteLine(e.Message);
        Assert.Contains("minimum", e.Message);
        Assert.Contains($"{minimum} bytes", e.Message);
        Assert.Contains("2 experts at once", e.Message);
        var f = Assert.Throws<ArgumentException>(() => ModelSession.Open(path, new EngineOptions { ExpertMemory = ExpertMemory.OfFraction(0.01) }));
        Assert.Contains("1%", f.Message);
        using var session = ModelSession.Open(path, new EngineOptions { Context = 16, ExpertMemory = ExpertMemory.OfBytes(minimum) });
        Assert.Equal(2, session.ExpertPlacement.SlotCount);
        output.WriteLine(session.ExpertPlacement.Describe());
        Assert.StartsWith("experts: offloaded, budget", session.ExpertPlacement.Describe());
    }

    [Fact]
    public void ResidentModeReadsNothingAndSaysSo()
    {
        string path = ModelPath("tiny-olmoe", "gguf-f32");
        using var session = ModelSession.Open(path, new EngineOptions { Context = 16, ExpertMemory = ExpertMemory.All });
        session.Logits(Tokens(8, session.Config.VocabSize, 3), allPositions: false);
        Assert.Equal(0, session.ExpertStats.BytesRead);
        Assert.IsType<ResidentExperts>(session.Model.Experts);
        output.WriteLine(session.ExpertPlacement.Describe());
        Assert.StartsWith("experts: resident (all ", session.ExpertPlacement.Describe());
    }

    // DESIGN "Memory tiers": a budget of at least all routed-expert bytes means resident, as all does.
    [Fact]
    public void ABudgetCoveringEveryExpertIsResidentAndSaysSo()
    {
        string path = ModelPath("tiny", "gguf-q8_0");
        long total;
        using (var ck = Checkpoint.Open(path)) total = OffloadedExperts.LayoutOf(ck).TotalBytes;
        foreach (ExpertMemory budget in new[] { ExpertMemory.OfBytes(total), ExpertMemory.OfBytes(4 * total), ExpertMemory.OfFraction(1) })
        {
            using var session = ModelSession.Open(path, new EngineOptions { Context = 16, ExpertMemory = budget });
            output.WriteLine($"{budget}: {session.ExpertPlacement.Describe()}");
            Assert.False(session.ExpertPlacement.Offloaded);
            Assert.IsType<ResidentExperts>(session.Model.Experts);
            Assert.Contains("covers every expert", session.ExpertPlacement.Describe());
        }
        using var below = ModelSession.Open(path, new EngineOptions { Context = 16, ExpertMemory = ExpertMemory.OfBytes(total - 1) });
        output.WriteLine($"{total - 1} bytes: {below.ExpertPlacement.Describe()}");
        Assert.True(below.ExpertPlacement.Offloaded);
    }

    [Fact]
    public void ShardedLayoutPutsAnExpertsMatricesInDifferentFiles()
    {
        using var ck = Checkpoint.Open(ModelPath("tiny", "hf-sharded"));
        ExpertLayout layout = OffloadedExperts.LayoutOf(ck);
        var files = layout.Extent(new ExpertKey(1, 5)).Parts.Select(p => p.Path).Distinct().Count();
        output.WriteLine($"{layout.Files.Count} files hold expert bytes; expert L1/E5 spans {files}");
        Assert.Equal(3, files);
    }

    // Calls the runner directly with random ids and a non-zero y, against ResidentExperts: with few slots experts come in
    // out of order, and their outputs must still be added in the order of the ids.
    [Theory]
    [InlineData("tiny", "gguf-q8_0")]
    [InlineData("tiny-qwen2moe", "hf-bf16")]
    public void RunMatchesResidentExpertsWhenExpertsArriveOutOfOrder(string family, string variant)
    {
        using var ck = Checkpoint.Open(ModelPath(family, variant));
        var c = ck.Config;
        var resident = new ResidentExperts(ck);
        ExpertLayout layout = OffloadedExperts.LayoutOf(ck);
        using var offloaded = new OffloadedExperts(ck, layout, new OffloadOptions { BudgetBytes = 5 * DirectFileReader.AlignUp(layout.SlotBytes) });
        var rng = new SeededRandom(7, "offload-run");
        var scratch = new ExpertScratch(c.HiddenSize, c.ExpertFfn, maxTokens: 1, expertsPerToken: c.NumExpertsUsed);
        var x = new ActivationQ8(c.HiddenSize);
        var input = new float[c.HiddenSize];
        var y0 = new float[c.HiddenSize];
        int[] ids = new int[c.NumExpertsUsed];
        float[] weights = new float[c.NumExpertsUsed];
        for (int step = 0; step < 300; step++)
        {
            for (int i = 0; i < input.Length; i++) (input[i], y0[i]) = (rng.NextSigned(), 0.5f * rng.NextSigned());
            x.Load(input);
            var order = Enumerable.Range(0, c.NumExperts).OrderBy(_ => rng.NextULong()).ToArray();
            for (int j = 0; j < ids.Length; j++) (ids[j], weights[j]) = (order[j], (float)rng.NextDouble());
            int layer = step % c.NumLayers;
            var expected = (float[])y0.Clone();
            var actual = (float[])y0.Clone();
            resident.Run(layer, ids, weights, x, expected, scratch, null);
            offloaded.Run(layer, ids, weights, x, actual, scratch, null);
            Assert.Equal(MemoryMarshal.Cast<float, int>(expected).ToArray(), MemoryMarshal.Cast<float, int>(actual).ToArray());
        }
        output.WriteLine($"{family} {variant}: {offloaded.ComputedAheadOfTurn} expert outputs computed ahead of their turn; hit rate {offloaded.Stats.HitRate:0.000}");
        Assert.True(offloaded.ComputedAheadOfTurn > 0, "no step computed a cached expert before a missing one");
    }

    // Default predictor (next-gate for these models) unless told: prefetching must not change the logits either.
    // A slot for every expert stays offloaded here (ResidentWhenBudgetCoversAll off): these tests measure the cache.
    private static ModelSession OpenWithSlots(string path, int slots, EvictionPolicyKind policy, PredictorKind? predictor = null,
        MissPolicy onMiss = MissPolicy.Load) =>
        ModelSession.Open(path, new EngineOptions
        {
            Context = 64, ExpertMemory = ExpertMemory.OfBytes(slots * SlotBytesOf(path)), CachePolicy = policy, Predictor = predictor,
            OnMiss = onMiss, ResidentWhenBudgetCoversAll = false,
        });

    private static long SlotBytesOf(string path)
    {
        using var ck = Checkpoint.Open(path);
        return DirectFileReader.AlignUp(OffloadedExperts.LayoutOf(ck).SlotBytes);
    }

    // A copy of an HF checkpoint with its tensors spread over shards of at most maxShardBytes (made once per test run).
    private static string Reshard(string source, long maxShardBytes)
    {
        string target = source + "-sharded";
        if (Directory.Exists(target)) return target;
        using var st = SafetensorsCheckpoint.Open(source);
        var tensors = st.Tensors.Select(t => new TensorData(t.Name, t.Type, t.Shape, s => s.Write(t.Bytes))).ToList();
        AtomicFile.WriteDirectory(target, tmp =>
        {
            foreach (string f in Directory.GetFiles(source).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
                File.Copy(f, Path.Combine(tmp, Path.GetFileName(f)));
            Assert.True(SafetensorsWriter.WriteCheckpoint(tmp, tensors, maxShardBytes).Count > 3);
        });
        return target;
    }
}
