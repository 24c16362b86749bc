// The benchmark protocol with a batch of sequences decoding together: identical sequences of a step read exactly the
// expert bytes one sequence reads (their shared guesses are fetched once), every row's logits stay bit-identical to a
// resident run, and prediction recall counts each token of a batched decode step against its own guesses.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts.Prediction;
using Pregate.Formats.Synth;
using Xunit.Abstractions;
using static Pregate.Tests.Models.ModelTestSupport;

namespace Pregate.Tests.Bench;

public sealed class BatchedBenchmarkTests(ITestOutputHelper output)
{
    private const int Context = 64;

    // 3 layers × 8 experts top-2 (24 experts).
    private static string Model() => Synth("tiny-l3e8", SynthShapes.Get("tiny") with { NumLayers = 3, NumExperts = 8 }, DType.F32, gguf: true);

    private static EngineOptions Offloaded(ExpertMemory budget, PredictorKind predictor, RoutingTrace? trace) =>
        new() { Context = Context, Threads = 1, ExpertMemory = budget, Predictor = predictor, OracleTrace = trace };

    // One pass of the protocol through the batched target: reset, the prompts one after the other, then the forced steps.
    // Returns the logits of every decode step ([steps][B · V]).
    private static List<float[]> Pass(ModelSession s, BenchmarkSettings settings)
    {
        var target = new SessionBenchmarkTarget(s);
        int n = settings.Batch, vocab = s.Config.VocabSize;
        var logits = new float[n * vocab];
        target.Reset(n);
        for (int b = 0; b < n; b++) target.Prefill(b, settings.PromptIds(vocab, b), logits.AsSpan(b * vocab, vocab));
        var forced = Enumerable.Range(0, n).Select(b => settings.ForcedIds(vocab, b)).ToArray();
        var steps = new List<float[]>();
        var tokens = new int[n];
        for (int i = 0; i < settings.GenTokens; i++)
        {
            for (int b = 0; b < n; b++) tokens[b] = forced[b][i];
            if (n == 1) target.Decode(tokens[0], logits);
            else target.DecodeStep(tokens, logits);
            steps.Add((float[])logits.Clone());
        }
        return steps;
    }

    // Checks of the one-layer-ahead prediction a pass of decode steps makes: every decoded token in layers 1.. (top-k each);
    // the prompts (prefill blocks) count none.
    private static long ChecksPerPass(ModelSession s, BenchmarkSettings settings) =>
        (long)settings.Batch * settings.GenTokens * (s.Config.NumLayers - 1) * s.Config.NumExpertsUsed;

    /// <summary>
    /// Four copies of one sequence decoding together read exactly the expert bytes one sequence reads, and each row's logits
    /// equal the resident one-sequence logits bit for bit (tolerance 0). The budget holds every expert, so what is read
    /// depends only on which experts are asked for (no eviction, and the oracle's guesses are all used, so none is dropped
    /// as stale depending on the I/O threads' timing): a guess several sequences share must be fetched once.
    /// </summary>
    [Fact]
    public void IdenticalSequencesOfAStepReadTheBytesOfOneAndMatchResident()
    {
        string path = Model();
        const int copies = 4;
        var one = new BenchmarkSettings { PromptTokens = 5, GenTokens = 10, Seed = 3, WarmupTime = TimeSpan.Zero };
        int vocab = SynthShapes.Get("tiny").VocabSize;
        var window = one.PromptIds(vocab).Concat(one.ForcedIds(vocab)).ToArray();
        var same = one with { Batch = copies, Text = Enumerable.Repeat(window, copies).SelectMany(w => w).ToArray() };
        var single = one with { Text = window };

        RoutingTrace traceOne, traceSame;
        List<float[]> expected;
        using (var resident = ModelSession.Open(path, new EngineOptions { Context = Context, Threads = 1, ExpertMemory = ExpertMemory.All }))
        {
            traceOne = Benchmark.RecordRouting(resident, single);
            traceSame = Benchmark.RecordRouting(resident, same);
            expected = Pass(resident, single);
        }
        Assert.Equal(copies * traceOne.StepCount, traceSame.StepCount);

        // A slot for every expert, offloaded all the same.
        var budget = ExpertMemory.OfBytes(1L << 30);
        using var alone = ModelSession.Open(path, Offloaded(budget, PredictorKind.Oracle, traceOne) with { ResidentWhenBudgetCoversAll = false });
        using var together = ModelSession.Open(path, Offloaded(budget, PredictorKind.Oracle, traceSame) with { ResidentWhenBudgetCoversAll = false });
        Assert.True(together.ExpertPlacement.Offloaded);
        Assert.Equal(together.Config.NumLayers * together.Config.NumExperts, together.ExpertPlacement.SlotCount);
        Pass(alone, single);
        var rows = Pass(together, same);
        var a = alone.ExpertStats;
        var t = together.ExpertStats;
        output.WriteLine($"one sequence: {a.BytesRead} bytes read, {a.Cache.Loads} loads ({a.Cache.PrefetchLoads} by prefetch), recall {a.PredictionRecall:P1} of {a.PredictionChecks}");
        output.WriteLine($"{copies} copies:   {t.BytesRead} bytes read, {t.Cache.Loads} loads ({t.Cache.PrefetchLoads} by prefetch), recall {t.PredictionRecall:P1} of {t.PredictionChecks}");
        Assert.True(a.BytesRead > 0);
        Assert.Equal(a.BytesRead, t.BytesRead);
        Assert.Equal(a.Cache.Loads, t.Cache.Loads);

        double maxError = 0;
        for (int i = 0; i < rows.Count; i++)
            for (int b = 0; b < copies; b++)
                for (int v = 0; v < vocab; v++) maxError = Math.Max(maxError, Math.Abs(rows[i][b * vocab + v] - expected[i][v]));
        output.WriteLine($"max |row − resident| over {rows.Count} steps × {copies} rows = {maxError:G3} (tolerance 0)");
        Assert.Equal(0, maxError);

        Assert.Equal(ChecksPerPass(alone, single), a.PredictionChecks);
        Assert.Equal(ChecksPerPass(together, same), t.PredictionChecks);
        Assert.Equal(1.0, t.PredictionRecall);
        Assert.Equal(1.0, t.PredictionPrecision);
    }

    /// <summary>
    /// Distinct sequences at a 30% budget: the oracle recorded from a batched resident pass recalls every expert of every
    /// token of every decode step (recall and precision exactly 1, checks = sequences × steps × (layers − 1) × top-k per
    /// pass, prompts uncounted) over the warm-up and measured passes of <see cref="Benchmark.Run"/>; the rows' logits equal
    /// the resident batched pass bit for bit.
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(3)]
    public void TheOracleRecallsEveryTokenOfABatchedStep(int batch)
    {
        string path = Model();
        var settings = new BenchmarkSettings { PromptTokens = 6, GenTokens = 8, Seed = 11, Batch = batch, WarmupTime = TimeSpan.Zero };
        RoutingTrace trace;
        List<float[]> expected;
        using (var resident = ModelSession.Open(path, new EngineOptions { Context = Context, Threads = 1, ExpertMemory = ExpertMemory.All }))
        {
            trace = Benchmark.RecordRouting(resident, settings);
            expected = Pass(resident, settings);
        }
        Assert.Equal(batch * (settings.PromptTokens + settings.GenTokens), trace.StepCount);

        using var s = ModelSession.Open(path, Offloaded(ExpertMemory.OfFraction(0.3), PredictorKind.Oracle, trace));
        var actual = Pass(s, settings);
        for (int i = 0; i < expected.Count; i++) Assert.Equal(expected[i], actual[i]);
        var before = s.ExpertStats;
        var (timing, fed) = Benchmark.Run(new SessionBenchmarkTarget(s), settings);
        var st = s.ExpertStats - before;
        output.WriteLine($"batch {batch}: decode {timing.DecodeTokensPerSecond:0.0} tok/s ({timing.GenTokens} tokens), recall {st.PredictionRecall:P1}, " +
                         $"precision {st.PredictionPrecision:P1}, {st.PredictionChecks} checks, hit rate {st.HitRate:P1}");
        Assert.Equal(batch * settings.GenTokens, timing.GenTokens);
        Assert.Equal(batch * settings.PromptTokens, timing.PromptTokens);
        Assert.Equal(batch * settings.GenTokens, fed.Length);
        Assert.Equal(settings.ForcedIds(s.Config.VocabSize, batch - 1)[0], fed[batch - 1]); // [steps, B]: step 0, last sequence
        Assert.Equal(2 * ChecksPerPass(s, settings), st.PredictionChecks); // one warm-up pass and the measured one
        Assert.Equal(1.0, st.PredictionRecall);
        Assert.Equal(1.0, st.PredictionPrecision);
    }

    /// <summary>
    /// Next-gate guesses top-k for each token of a batched step: every token's checks are counted (prompts are not), and
    /// with as many guesses as routed experts per token, recall equals precision.
    /// </summary>
    [Fact]
    public void NextGateCountsEveryTokenOfABatchedStepAgainstItsOwnGuesses()
    {
        var settings = new BenchmarkSettings { PromptTokens = 6, GenTokens = 8, Seed = 5, Batch = 4, WarmupTime = TimeSpan.Zero };
        using var s = ModelSession.Open(Model(), Offloaded(ExpertMemory.OfFraction(0.5), PredictorKind.NextGate, null));
        Pass(s, settings);
        var st = s.ExpertStats;
        output.WriteLine($"next-gate, batch 4: recall {st.PredictionRecall:P1}, precision {st.PredictionPrecision:P1}, {st.PredictionChecks} checks, {st.PredictionGuesses} guesses");
        Assert.Equal(ChecksPerPass(s, settings), st.PredictionChecks);
        Assert.Equal(st.PredictionChecks, st.PredictionGuesses);
        Assert.InRange(st.PredictionRecall!.Value, 0, 1);
        Assert.Equal(st.PredictionRecall, st.PredictionPrecision);
    }

    /// <summary>Sequence 0 keeps the one-sequence streams; the others get their own; bad batches and targets are refused.</summary>
    [Fact]
    public void SequencesHaveTheirOwnStreamsAndBadBatchesAreRefused()
    {
        var one = new BenchmarkSettings { PromptTokens = 8, GenTokens = 4, Seed = 2 };
        var three = one with { Batch = 3 };
        Assert.Equal(one.PromptIds(1000), three.PromptIds(1000, 0));
        Assert.Equal(one.ForcedIds(1000), three.ForcedIds(1000, 0));
        Assert.NotEqual(three.PromptIds(1000, 0), three.PromptIds(1000, 1));
        Assert.NotEqual(three.PromptIds(1000, 1), three.PromptIds(1000, 2));
        Assert.NotEqual(three.ForcedIds(1000, 1), three.ForcedIds(1000, 2));

        var text = Enumerable.Range(0, 36).ToArray();
        var fromText = three with { Text = text };
        Assert.Equal(Enumerable.Range(12, 8), fromText.PromptIds(1000, 1));
        Assert.Equal(Enumerable.Range(32, 4), fromText.ForcedIds(1000, 2));
        var e = Assert.Throws<ArgumentException>(() => (fromText with { Text = text[..35] }).Validate());
        output.WriteLine(e.Message);
        Assert.Contains("3 sequences", e.Message);

        e = Assert.Throws<ArgumentException>(() => (one with { Batch = 0 }).Validate());
        output.WriteLine(e.Message);
        Assert.Contains("at least 1 sequence", e.Message);
        e = Assert.Throws<ArgumentException>(() => Benchmark.Run(new OneSequenceTarget(), three with { WarmupTime = TimeSpan.Zero }));
        output.WriteLine(e.Message);
        Assert.Contains("one sequence at a time", e.Message);
    }

    // An engine without batched steps.
    private sealed class OneSequenceTarget : IBenchmarkTarget
    {
        public int VocabSize => 16;
        public void Reset() { }
        public void Prefill(ReadOnlySpan<int> tokens, Span<float> lastLogits) => lastLogits.Clear();
        public void Decode(int token, Span<float> logits) => logits.Clear();
    }
}
