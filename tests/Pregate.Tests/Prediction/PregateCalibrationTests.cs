// The calibrated pre-gate on the shipped model and its held-out text: it must recall the next layer's experts better
// than chance and at least as well as next-gate; the sidecar file round-trips and refuses other models.
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
        output.WriteLine($"pregate   top-{k} {r.Pregate.MeanTopK:P1} (per layer {string.Join(" ", r.Pregate.TopK.Select(x => x.ToString("0.00")))}), top-{k + 1} {r.Pregate.MeanTopKPlus1:P1}");
        output.WriteLine($"next-gate top-{k} {r.NextGate.MeanTopK:P1} (per layer {string.Join(" ", r.NextGate.TopK.Select(x => x.ToString("0.00")))}), top-{k + 1} {r.NextGate.MeanTopKPlus1:P1}");
        double chance = (double)k / e;
        Assert.True(r.Pregate.MeanTopK > 2 * chance, $"pregate recall {r.Pregate.MeanTopK:P1} is not above twice chance ({chance:P1})");
        Assert.True(r.Pregate.MeanTopK >= r.NextGate.MeanTopK, "the calibrated predictor should recall at least as well as next-gate");
        Assert.Equal(2, predictor.MaxLookahead);

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
    public void TooLittleTextIsAClearError()
    {
        using var s = ModelSession.Open(TrainedModelTests.ModelDir());
        var ex = Assert.Throws<ArgumentException>(() => PregateCalibrator.Calibrate(s, "Just a few words.", new CalibrationOptions()));
        Assert.Contains("tokens", ex.Message);
    }
}
