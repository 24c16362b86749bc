// The calibrated pre-gate on the shipped model and its held-out text: it must recall the next layer's experts better
// than chance and at least as well as next-gate; the sidecar file round-trips, reads format 1, refuses other models,
// unknown versions and misplaced tensors.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts.Prediction;
using Pregate.Formats.Synth;
using Pregate.Tests.Models;
using Xunit.Abstractions;

namespace Pregate.Tests.Prediction;

public sealed class PregateCalibrationTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-calib-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Text() => File.ReadAllText(Path.Combine(TrainedModelTests.ModelDir(), "valid.txt"));

    [Fact]
    public void CalibratedPredictorBeatsChanceAndNextGateOnHeldOutText()
    {
        using var s = ModelSession.Open(TrainedModelTests.ModelDir());
        var (predictor, r) = PregateCalibrator.Calibrate(s, Text(), new CalibrationOptions { MaxTokens = 8000, Lookahead = 2 });
        int k = s.Config.NumExpertsUsed, e = s.Config.NumExperts;
        output.WriteLine($"train {r.TrainTokens} tokens, held out {r.HeldOutTokens}");
        output.WriteLine($"pregate   top-{k} {r.Pregate.MeanTopK:P1} (per layer {string.Join(" ", r.Pregate.TopK.Select(x => x.ToString("0.00")))}), top-{k + 1} {r.Pregate.MeanTopKPlus1:P1}, top-{k + 2} {r.Pregate.MeanTopKPlus2:P1}");
        output.WriteLine($"next-gate top-{k} {r.NextGate.MeanTopK:P1} (per layer {string.Join(" ", r.NextGate.TopK.Select(x => x.ToString("0.00")))}), top-{k + 1} {r.NextGate.MeanTopKPlus1:P1}, top-{k + 2} {r.NextGate.MeanTopKPlus2:P1}");
        output.WriteLine($"ridge {string.Join(" ", r.Ridge.Select(x => x[0]))}; epochs {string.Join(" ", r.Epochs.Select(x => x[0]))}");
        double chance = (double)k / e;
        Assert.True(r.Pregate.MeanTopK > 2 * chance, $"pregate recall {r.Pregate.MeanTopK:P1} is not above twice chance ({chance:P1})");
        Assert.True(r.Pregate.MeanTopK >= r.NextGate.MeanTopK, "the calibrated predictor should recall at least as well as next-gate");
        Assert.True(r.Pregate.MeanTopKPlus1 >= r.Pregate.MeanTopK && r.Pregate.MeanTopKPlus2 >= r.Pregate.MeanTopKPlus1, "more guesses cannot recall less");
        Assert.Equal(2, predictor.MaxLookahead);
        Assert.True(predictor.UsesGateFeatures);
        Assert.Equal("2", predictor.Metadata["version"]);

        string path = Path.Combine(_dir, "p.safetensors");
        predictor.Save(path);
        var loaded = LinearPregate.Load(path, s.Checkpoint);
        var h = new float[s.Config.HiddenSize];
        var rng = new SeededRandom(3, "h");
        rng.Fill(h, 1, 0);
        var a = new float[e];
        var b = new float[e];
        for (int ahead = 1; ahead <= 2; ahead++)
        {
            Assert.True(predictor.Score(0, ahead, h, a));
            Assert.True(loaded.Score(0, ahead, h, b));
            Assert.Equal(a, b);
        }
        Assert.False(loaded.Score(s.Config.NumLayers - 1, 1, h, b)); // nothing after the last layer
    }

    [Fact]
    public void APredictorForAnotherModelIsRefused()
    {
        using var s = ModelSession.Open(TrainedModelTests.ModelDir());
        var (predictor, _) = PregateCalibrator.Calibrate(s, Text(), new CalibrationOptions { MaxTokens = 2000 });
        string path = Path.Combine(_dir, "p.safetensors");
        predictor.Save(path);
        string other = ModelTestSupport.Synth("tiny", SynthShapes.Get("tiny"), DType.F32, gguf: true);
        using var ck = Pregate.Formats.Checkpoint.Open(other);
        var ex = Assert.Throws<ModelFormatException>(() => LinearPregate.Load(path, ck));
        Assert.Contains("different model", ex.Message);
        File.WriteAllText(path, "not a predictor");
        Assert.Throws<ModelFormatException>(() => LinearPregate.Load(path, s.Checkpoint));
    }

    [Fact]
    public void CalibrationIsDeterministicAndAForeignFileFallsBackToNextGate()
    {
        string model = TrainedModelTests.ModelDir();
        string a = Path.Combine(_dir, "a.safetensors"), b = Path.Combine(_dir, "b.safetensors");
        using (var s = ModelSession.Open(model))
        {
            PregateCalibrator.Calibrate(s, Text(), new CalibrationOptions { MaxTokens = 2000 }).Predictor.Save(a);
            PregateCalibrator.Calibrate(s, Text(), new CalibrationOptions { MaxTokens = 2000 }).Predictor.Save(b);
        }
        Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));

        // The same file offered to another model: rejected with a message, the run goes on with next-gate.
        string other = ModelTestSupport.Synth("tiny", SynthShapes.Get("tiny"), DType.F32, gguf: true);
        Assert.True(ExpertMemory.TryParse("50%", out var budget, out _));
        using var session = ModelSession.Open(other, new EngineOptions { ExpertMemory = budget, Predictor = PredictorKind.Pregate, PredictorFile = a });
        output.WriteLine(session.ExpertPlacement.Describe());
        Assert.StartsWith("next-gate", session.ExpertPlacement.Predictor);
        Assert.Contains("different model", session.ExpertPlacement.Predictor);
    }

    [Fact]
    public void FormatOneFilesLoadAndOtherVersionsOrMisplacedTensorsAreRefused()
    {
        using var ck = Pregate.Formats.Checkpoint.Open(TrainedModelTests.ModelDir());
        var c = ck.Config;
        int layers = c.NumLayers, d = c.HiddenSize, e = c.NumExperts;
        var rng = new SeededRandom(5, "maps");
        float[] Random(int n) { var v = new float[n]; rng.Fill(v, 1, 0); return v; }
        var weights = Enumerable.Range(0, layers).Select(l => new[] { l + 1 < layers ? Random(e * d) : null }).ToArray();
        var bias = Enumerable.Range(0, layers).Select(l => new[] { l + 1 < layers ? Random(e) : null }).ToArray();
        var noGates = Enumerable.Range(0, layers).Select(_ => new float[]?[1]).ToArray();
        var gates = Enumerable.Range(0, layers).Select(l => new[] { l + 1 < layers ? Random(e * e) : null }).ToArray();
        var routers = Enumerable.Range(0, layers).Select(l => LinearPregate.RouterMap(ck, l)).ToArray();
        Dictionary<string, string> Meta(string version) => new()
        {
            ["format"] = LinearPregate.FormatName, ["version"] = version, ["model_hash"] = ModelFingerprint.Of(ck), ["lookahead"] = "1",
        };
        string path = Path.Combine(_dir, "v.safetensors");

        // Format 1: W and b only, scores W·x + b.
        new LinearPregate(layers, d, e, c.NumExpertsUsed, 1, c.RmsNormEps, weights, noGates, bias, new float[]?[layers], Meta("1")).Save(path);
        var v1 = LinearPregate.Load(path, ck);
        Assert.False(v1.UsesGateFeatures);
        var h = new float[d];
        new SeededRandom(6, "h").Fill(h, 1, 0);
        var x = new float[d];
        Pregate.Kernels.ElementOps.RmsNorm(h, c.RmsNormEps, x);
        var scores = new float[e];
        Assert.True(v1.Score(2, 1, h, scores));
        for (int i = 0; i < e; i++)
        {
            float expect = bias[2][0]![i] + Pregate.Kernels.ElementOps.Dot(weights[2][0].AsSpan(i * d, d), x);
            Assert.True(Math.Abs(scores[i] - expect) <= 1e-5f * (1 + Math.Abs(expect)), $"expert {i}: {scores[i]} vs {expect}");
        }

        // Format 2 with gate weights round-trips; the same tensors under version 1, or an unknown version, are refused.
        var v2 = new LinearPregate(layers, d, e, c.NumExpertsUsed, 1, c.RmsNormEps, weights, gates, bias, routers, Meta("2"));
        v2.Save(path);
        var loaded = LinearPregate.Load(path, ck);
        Assert.True(loaded.UsesGateFeatures);
        var expected = new float[e];
        Assert.True(v2.Score(2, 1, h, expected));
        Assert.True(loaded.Score(2, 1, h, scores));
        Assert.Equal(expected, scores);

        new LinearPregate(layers, d, e, c.NumExpertsUsed, 1, c.RmsNormEps, weights, gates, bias, routers, Meta("1")).Save(path);
        var ex = Assert.Throws<ModelFormatException>(() => LinearPregate.Load(path, ck));
        output.WriteLine(ex.Message);
        Assert.Contains("needs format version 2", ex.Message);
        new LinearPregate(layers, d, e, c.NumExpertsUsed, 1, c.RmsNormEps, weights, noGates, bias, new float[]?[layers], Meta("3")).Save(path);
        ex = Assert.Throws<ModelFormatException>(() => LinearPregate.Load(path, ck));
        output.WriteLine(ex.Message);
        Assert.Contains("version 3 is not supported", ex.Message);
        Assert.Contains("pregate calibrate", ex.Message);
    }

    [Fact]
    public void TheShippedPredictorLoadsAndMatchesItsModelCard()
    {
        string model = TrainedModelTests.ModelDir();
        using var ck = Pregate.Formats.Checkpoint.Open(model);
        var p = LinearPregate.Load(LinearPregate.DefaultPath(model), ck);
        output.WriteLine(string.Join(", ", p.Metadata.Select(kv => $"{kv.Key}={kv.Value}")));
        Assert.True(p.UsesGateFeatures);
        string card = File.ReadAllText(Path.Combine(model, "MODEL_CARD.md"));
        double recall = double.Parse(p.Metadata["recall_top_k"], System.Globalization.CultureInfo.InvariantCulture);
        var stated = System.Text.RegularExpressions.Regex.Match(card, @"pregate (\d+\.\d)% \(top-3");
        Assert.True(stated.Success, "the model card states no pregate recall");
        double cardRecall = double.Parse(stated.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        output.WriteLine($"card {cardRecall}%, file {recall:P2}");
        Assert.True(Math.Abs(cardRecall - recall * 100) <= 0.05 + 1e-9, $"the card says {cardRecall}%, the file {recall:P2} (tolerance: the card's rounding)");
    }

    [Fact]
    public void TooLittleTextIsAClearError()
    {
        using var s = ModelSession.Open(TrainedModelTests.ModelDir());
        var ex = Assert.Throws<ArgumentException>(() => PregateCalibrator.Calibrate(s, "Just a few words.", new CalibrationOptions()));
        Assert.Contains("tokens", ex.Message);
    }
}
