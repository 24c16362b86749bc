// The oracle predictor (routing replayed from a recorded resident run): logits stay bit-identical to resident, its recall
// and precision are 100% on a replay of the same workload, per-layer expert figures add up to the totals, and routing
// traces round-trip through their file and reject malformed ones.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Experts.Prediction;
using Pregate.Formats.Synth;
using Xunit.Abstractions;
using static Pregate.Tests.Models.ModelTestSupport;

namespace Pregate.Tests.Prediction;

public sealed class OracleTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-oracle-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // 3 layers × 8 experts top-2 (24 experts): a 30% budget holds 7 of them.
    private static string Model() => Synth("tiny-l3e8", SynthShapes.Get("tiny") with { NumLayers = 3, NumExperts = 8 }, DType.F32, gguf: true);

    private static readonly BenchmarkSettings Workload = new() { PromptTokens = 6, GenTokens = 12, Seed = 7, WarmupTime = TimeSpan.Zero };

    // One benchmark pass (reset, prefill, forced decode), keeping the logits after the prompt and after every decoded token.
    private static List<float[]> Pass(ModelSession s)
    {
        var target = new SessionBenchmarkTarget(s);
        var logits = new float[s.Config.VocabSize];
        var rows = new List<float[]>();
        target.Reset();
        target.Prefill(Workload.PromptIds(s.Config.VocabSize), logits);
        rows.Add((float[])logits.Clone());
        foreach (int token in Workload.ForcedIds(s.Config.VocabSize))
        {
            target.Decode(token, logits);
            rows.Add((float[])logits.Clone());
        }
        return rows;
    }

    private static EngineOptions Offloaded(PredictorKind predictor, RoutingTrace? trace, int lookahead = 1) =>
        new() { Context = 64, ExpertMemory = ExpertMemory.OfFraction(0.3), Predictor = predictor, OracleTrace = trace, Lookahead = lookahead };

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void OracleKeepsLogitsBitIdenticalAndRecallsEveryExpertOnAReplay(int lookahead)
    {
        string path = Model();
        RoutingTrace trace;
        List<float[]> expected;
        using (var resident = ModelSession.Open(path, new EngineOptions { Context = 64, ExpertMemory = ExpertMemory.All }))
        {
            trace = Benchmark.RecordRouting(resident, Workload);
            expected = Pass(resident);
        }
        Assert.Equal(Workload.PromptTokens + Workload.GenTokens, trace.StepCount);

        using var s = ModelSession.Open(path, Offloaded(PredictorKind.Oracle, trace, lookahead));
        Assert.True(s.ExpertPlacement.Offloaded);
        Assert.StartsWith("oracle", s.ExpertPlacement.Predictor);
        for (int pass = 0; pass < 2; pass++) // the second pass replays the trace cyclically
        {
            var before = s.ExpertStats;
            var actual = Pass(s);
            for (int r = 0; r < expected.Count; r++) Assert.Equal(expected[r], actual[r]);
            var st = s.ExpertStats - before;
            output.WriteLine($"pass {pass}, lookahead {lookahead}: hit rate {st.HitRate:P1}, recall {st.PredictionRecall:P1}, precision {st.PredictionPrecision:P1}, " +
                             $"prefetch precision {st.PrefetchPrecision?.ToString("P1") ?? "-"}, stall {st.StallMsPerToken:0.000} ms/token");
            // Every decoded token's layers 1.. were predicted one layer earlier: (layers − 1) · top-k checks per token.
            Assert.Equal((long)Workload.GenTokens * (s.Config.NumLayers - 1) * s.Config.NumExpertsUsed, st.PredictionChecks);
            Assert.Equal(1.0, st.PredictionRecall);
            Assert.Equal(1.0, st.PredictionPrecision);
            foreach (var layer in st.Layers!.Skip(1)) Assert.Equal(1.0, layer.PredictionRecall);
            Assert.Null(st.Layers![0].PredictionRecall); // nothing predicts layer 0
        }
    }

    [Fact]
    public void NextGateRecallStaysBelowTheOracleOnTheSameWorkload()
    {
        string path = Model();
        using var s = ModelSession.Open(path, Offloaded(PredictorKind.NextGate, null));
        var before = s.ExpertStats;
        Pass(s);
        var st = s.ExpertStats - before;
        output.WriteLine($"next-gate: recall {st.PredictionRecall:P1}, precision {st.PredictionPrecision:P1}");
        Assert.InRange(st.PredictionRecall!.Value, 0, 1);
        Assert.Equal(st.PredictionRecall, st.PredictionPrecision); // top-k guesses for top-k routed: the same ratio
    }

    [Theory]
    [InlineData(PredictorKind.None)]
    [InlineData(PredictorKind.NextGate)]
    public void PerLayerFiguresSumToTheTotals(PredictorKind predictor)
    {
        using var s = ModelSession.Open(Model(), Offloaded(predictor, null, lookahead: predictor == PredictorKind.None ? 1 : 2));
        var before = s.ExpertStats;
        Pass(s);
        Pass(s);
        var st = s.ExpertStats - before;
        var layers = st.Layers!;
        Assert.Equal(s.Config.NumLayers, layers.Count);
        var sum = layers.Aggregate(default(ExpertCacheStats), (a, l) => a + l.Cache);
        var total = st.Cache;
        output.WriteLine($"{predictor}: total {total}");
        output.WriteLine($"{predictor}: Σ layers {sum}");
        Assert.True(total.Hits + total.Misses > 0);
        Assert.Equal(total.Hits, sum.Hits);
        Assert.Equal(total.Misses, sum.Misses);
        Assert.Equal(total.Loads, sum.Loads);
        Assert.Equal(total.BytesRead, sum.BytesRead);
        Assert.Equal(total.PrefetchLoads, sum.PrefetchLoads);
        Assert.Equal(total.PrefetchHits, sum.PrefetchHits);
        Assert.Equal(total.PrefetchesWasted, sum.PrefetchesWasted);
        Assert.Equal(total.PrefetchesCancelled, sum.PrefetchesCancelled);
        Assert.Equal(total.PrefetchBytesWasted, sum.PrefetchBytesWasted);
        // Stall time is converted from timestamp ticks per layer: at most one 100 ns tick of rounding per layer (and snapshot).
        Assert.InRange(Math.Abs((total.Stall - sum.Stall).Ticks), 0, 2 * layers.Count);
        Assert.Equal(st.PredictionChecks, layers.Sum(l => l.PredictionChecks));
        Assert.Equal(st.PredictionHits, layers.Sum(l => l.PredictionHits));
        Assert.Equal(st.PredictionGuesses, layers.Sum(l => l.PredictionGuesses));
        if (predictor == PredictorKind.None) Assert.Equal(0, total.PrefetchLoads);
    }

    [Fact]
    public void OracleWithoutATraceIsAClearError()
    {
        var e = Assert.Throws<ArgumentException>(() => ModelSession.Open(Model(), Offloaded(PredictorKind.Oracle, null)));
        output.WriteLine(e.Message);
        Assert.Contains("bench", e.Message);
    }

    [Fact]
    public void TracesRoundTripAndMalformedOnesAreRejected()
    {
        var trace = new RoutingTrace(layerCount: 3, topK: 2);
        var rng = new SeededRandom(5, "trace");
        for (int s = 0; s < 10; s++)
        {
            int step = trace.AddStep();
            for (int l = 0; l < 3; l++) trace.Set(step, l, [(int)(rng.NextULong() % 8), (int)(rng.NextULong() % 8)]);
        }
        string file = Path.Combine(_dir, "t.bin");
        using (var fs = File.Create(file)) trace.Save(fs);
        var back = RoutingTrace.Load(file, expertCount: 8);
        Assert.Equal(trace.StepCount, back.StepCount);
        for (int s = 0; s < 10; s++)
            for (int l = 0; l < 3; l++) Assert.Equal(trace.Experts(s, l).ToArray(), back.Experts(s, l).ToArray());

        var e = Assert.Throws<ModelFormatException>(() => RoutingTrace.Load(file, expertCount: 4));
        output.WriteLine(e.Message);
        var bytes = File.ReadAllBytes(file);
        File.WriteAllBytes(file, bytes[..^3]);
        e = Assert.Throws<ModelFormatException>(() => RoutingTrace.Load(file, expertCount: 8));
        output.WriteLine(e.Message);
        Assert.Contains(file, e.Message);
        File.WriteAllBytes(file, "nope"u8.ToArray());
        Assert.Throws<ModelFormatException>(() => RoutingTrace.Load(file, expertCount: 8));
    }
}
