// Predictors driving the offloaded runner: prefetching never changes the math (bit-identical logits) whatever the predictor
// and prefetch gating, the guesses are measured while decoding (recall does not depend on the gating), and bad predictor
// options are clear errors.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Experts.Prediction;
using Pregate.Tests.Models;
using Xunit.Abstractions;

namespace Pregate.Tests.Prediction;

public sealed class PrefetchTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-prefetch-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static int[] Prompt(ModelSession s) =>
        s.Tokenizer.Encode(File.ReadAllText(Path.Combine(TrainedModelTests.ModelDir(), "valid.txt"))[..2000], false).Take(96).ToArray();

    // The gating settings the tests run: none, the default, and each gate alone at a strict setting.
    private static PrefetchGating Gating(string name) => name switch
    {
        "off" => PrefetchGating.Off,
        "default" => PrefetchGating.Default,
        "confident" => new PrefetchGating { MinProbability = 0.9 },
        "valuable" => new PrefetchGating { ProtectValuable = true },
        "behind" => new PrefetchGating { MaxWrongReads = 2 },
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, null),
    };

    [Theory]
    [InlineData(PredictorKind.None, 1, 0, "default")]
    [InlineData(PredictorKind.NextGate, 1, 0, "off")]
    [InlineData(PredictorKind.NextGate, 1, 0, "default")]
    [InlineData(PredictorKind.NextGate, 2, 1, "default")]
    [InlineData(PredictorKind.NextGate, 2, 1, "behind")]
    [InlineData(PredictorKind.Pregate, 1, 1, "off")]
    [InlineData(PredictorKind.Pregate, 1, 1, "default")]
    [InlineData(PredictorKind.Pregate, 1, 0, "confident")]
    [InlineData(PredictorKind.Pregate, 1, 1, "valuable")]
    public void PrefetchingKeepsLogitsBitIdenticalAndIsMeasured(PredictorKind kind, int lookahead, int extra, string gating)
    {
        string model = TrainedModelTests.ModelDir();
        string predictorFile = Path.Combine(_dir, "p.safetensors");
        float[][] expected;
        using (var resident = ModelSession.Open(model, new EngineOptions { ExpertMemory = ExpertMemory.All }))
        {
            expected = resident.Logits(Prompt(resident), allPositions: true);
            if (kind == PredictorKind.Pregate)
            {
                var text = File.ReadAllText(Path.Combine(model, "valid.txt"));
                PregateCalibrator.Calibrate(resident, text, new CalibrationOptions { MaxTokens = 6000 }).Predictor.Save(predictorFile);
            }
        }
        Assert.True(ExpertMemory.TryParse("30%", out var budget, out _));
        var o = new EngineOptions
        {
            ExpertMemory = budget, Predictor = kind, PredictorFile = predictorFile, Lookahead = lookahead, PredictExtra = extra, PrefetchGating = Gating(gating),
        };
        using var s = ModelSession.Open(model, o);
        Assert.True(s.ExpertPlacement.Offloaded);
        var prompt = Prompt(s);
        var actual = s.Logits(prompt, allPositions: true);
        for (int r = 0; r < expected.Length; r++) Assert.Equal(expected[r], actual[r]);

        // Decode token by token (teacher-forced) so the predictor's guesses are checked one layer later.
        var before = s.ExpertStats;
        s.State.Reset();
        var logits = new float[s.Config.VocabSize];
        foreach (int t in prompt) s.Model.Forward(s.State, t, logits, s.Team);
        var st = s.ExpertStats - before;
        output.WriteLine($"{s.ExpertPlacement.Describe()}");
        output.WriteLine($"hit rate {st.HitRate:P1}, recall {st.PredictionRecall?.ToString("P1") ?? "-"}, prefetch hits {st.Cache.PrefetchHits}, wasted {st.Cache.PrefetchesWasted}, " +
                         $"skipped {st.Cache.PrefetchesSkippedUnlikely}/{st.Cache.PrefetchesSkippedValuable}/{st.Cache.PrefetchesSkippedBusy} (unlikely/valuable/busy), stall {st.StallMsPerToken:0.00} ms/token");
        if (gating == "off") Assert.Equal(0, st.Cache.PrefetchesSkipped);
        if (gating == "confident") Assert.True(st.Cache.PrefetchesSkippedUnlikely > 0, "no guess fell below a 0.9 threshold");
        if (gating is "valuable" or "behind") Assert.Equal(0, st.Cache.PrefetchesSkippedUnlikely);
        if (gating is "confident" or "behind") Assert.Equal(0, st.Cache.PrefetchesSkippedValuable);
        if (gating is "confident" or "valuable") Assert.Equal(0, st.Cache.PrefetchesSkippedBusy);
        if (kind == PredictorKind.None)
        {
            Assert.Null(st.PredictionRecall);
            Assert.Equal(0, st.Cache.PrefetchLoads);
            Assert.Equal(0, st.Cache.PrefetchesSkipped);
        }
        else
        {
            Assert.NotNull(st.PredictionRecall);
            Assert.True(st.PredictionRecall > 2.0 * s.Config.NumExpertsUsed / s.Config.NumExperts, $"recall {st.PredictionRecall:P1} is not above twice chance");
            Assert.True(st.Cache.PrefetchHits > 0, "no prefetched expert was used");
        }
    }

    [Fact]
    public void GatingChangesWhatIsReadButNotTheRecall()
    {
        string model = TrainedModelTests.ModelDir();
        Assert.True(ExpertMemory.TryParse("30%", out var budget, out _));
        var recalls = new List<double?>();
        foreach (string gating in new[] { "off", "default", "confident" })
        {
            using var s = ModelSession.Open(model, new EngineOptions { ExpertMemory = budget, Predictor = PredictorKind.NextGate, PrefetchGating = Gating(gating) });
            var prompt = Prompt(s).Take(48).ToArray();
            var logits = new float[s.Config.VocabSize];
            foreach (int t in prompt) s.Model.Forward(s.State, t, logits, s.Team);
            var st = s.ExpertStats;
            output.WriteLine($"{gating,-9}: {s.ExpertPlacement.Describe()}");
            output.WriteLine($"           recall {st.PredictionRecall:P2}, prefetch loads {st.Cache.PrefetchLoads}, skipped {st.Cache.PrefetchesSkipped}, bytes {st.BytesRead}");
            Assert.Equal(gating != "off", s.ExpertPlacement.Describe().Contains("prefetch gating"));
            recalls.Add(st.PredictionRecall);
        }
        Assert.NotNull(recalls[0]);
        Assert.All(recalls, r => Assert.Equal(recalls[0], r));
    }

    [Fact]
    public void MissingOrMismatchedPredictorsAreClearErrors()
    {
        string model = TrainedModelTests.ModelDir();
        Assert.True(ExpertMemory.TryParse("30%", out var budget, out _));
        var missing = Assert.Throws<ArgumentException>(() => ModelSession.Open(model,
            new EngineOptions { ExpertMemory = budget, Predictor = PredictorKind.Pregate, PredictorFile = Path.Combine(_dir, "none.safetensors") }));
        Assert.Contains("pregate calibrate", missing.Message);
        Assert.Throws<ArgumentException>(() => ModelSession.Open(model, new EngineOptions { ExpertMemory = budget, Predictor = PredictorKind.Oracle }));
        Assert.Throws<ArgumentException>(() => ModelSession.Open(model, new EngineOptions { ExpertMemory = budget, Lookahead = 3 }));
        Assert.ThrowsAny<ArgumentException>(() => ModelSession.Open(model,
            new EngineOptions { ExpertMemory = budget, PrefetchGating = new PrefetchGating { MinProbability = -0.1 } }));
    }
}
