// A model file that changes under a running engine: deleted or replaced (renamed over), the open descriptor and memory map
// keep serving the old bytes, so answers stay bit-identical; truncated in place, the run fails with an ExpertLoadException
// naming the file under every miss policy (never a crash or a wrong answer); truncated before opening, a ModelFormatException.
using System.Runtime.InteropServices;
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Experts.Prediction;
using Pregate.Formats;
using Pregate.Formats.Synth;
using Pregate.Kernels;
using Pregate.Models;
using Xunit.Abstractions;
using static Pregate.Tests.Models.ModelTestSupport;

namespace Pregate.Tests.Experts;

public sealed class ChangedModelFileTests(ITestOutputHelper output) : IDisposable
{
    private readonly DiskFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    private static readonly ModelConfig Shape = SynthShapes.Get("tiny") with { NumLayers = 3, NumExperts = 8 };

    private string CopyOfModel(string name)
    {
        string source = Synth("tiny-l3e8", Shape, DType.Q8_0, gguf: true);
        string path = _folder.File(name);
        File.Copy(source, path);
        return path;
    }

    [Theory]
    [InlineData(MissPolicy.Load)]
    [InlineData(MissPolicy.Compute)]
    [InlineData(MissPolicy.Auto)]
    public void ADeletedOrReplacedFileKeepsServingTheBytesItWasOpenedWith(MissPolicy onMiss)
    {
        string path = CopyOfModel($"deleted-{onMiss}.gguf");
        var tokens = Tokens(24, Shape.VocabSize, 21);
        float[][] expected;
        using (var resident = ModelSession.Open(path, new EngineOptions { Context = 32, ExpertMemory = ExpertMemory.All }))
            expected = resident.Logits(tokens, allPositions: true);
        using var session = ModelSession.Open(path, new EngineOptions
        {
            Context = 32, ExpertMemory = ExpertMemory.OfFraction(0.3), OnMiss = onMiss, Predictor = PredictorKind.None,
        });
        File.Delete(path);
        File.WriteAllBytes(path, new byte[4096]); // something else now has the name
        var actual = session.Logits(tokens, allPositions: true);
        output.WriteLine($"on miss {onMiss}: {session.ExpertStats.BytesRead} bytes read, {session.ExpertStats.ComputedInPlace} computed in place after the file was replaced");
        for (int r = 0; r < expected.Length; r++)
            Assert.Equal(MemoryMarshal.Cast<float, int>(expected[r]).ToArray(), MemoryMarshal.Cast<float, int>(actual[r]).ToArray());
    }

    [Theory]
    [InlineData(MissPolicy.Load)]
    [InlineData(MissPolicy.Compute)]
    [InlineData(MissPolicy.Auto)]
    public void AFileTruncatedUnderARunningEngineIsAClearError(MissPolicy onMiss)
    {
        string path = CopyOfModel($"truncated-{onMiss}.gguf");
        using var ck = Checkpoint.Open(path);
        ExpertLayout layout = OffloadedExperts.LayoutOf(ck);
        var c = ck.Config;
        // The expert part that ends last in the file; cutting the file at its start leaves every other expert whole.
        var (last, lastPart) = Enumerable.Range(0, c.NumLayers * c.NumExperts)
            .Select(i => new ExpertKey(i / c.NumExperts, i % c.NumExperts))
            .SelectMany(k => layout.Extent(k).Parts.Select(p => (Key: k, Part: p)))
            .MaxBy(x => x.Part.Offset + x.Part.Length);
        int other = (last.Expert + 1) % c.NumExperts;
        using var runner = new OffloadedExperts(ck, layout, new OffloadOptions
        {
            BudgetBytes = OffloadedExperts.MinimumBudgetBytes(layout, c.NumExpertsUsed), OnMiss = onMiss,
        });
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write)) f.SetLength(lastPart.Offset);

        var scratch = new ExpertScratch(c.HiddenSize, c.ExpertFfn, maxTokens: 1, expertsPerToken: c.NumExpertsUsed);
        var x = new ActivationQ8(c.HiddenSize);
        x.Load(Enumerable.Range(0, c.HiddenSize).Select(i => MathF.Sin(i)).ToArray());
        var y = new float[c.HiddenSize];
        var e = Assert.Throws<ExpertLoadException>(() => runner.Run(last.Layer, [other, last.Expert], [0.5f, 0.5f], x, y, scratch, null));
        output.WriteLine($"on miss {onMiss}: {e.Message}");
        Assert.Equal(last, e.Key);
        Assert.Contains(path, e.Message);
        // The runner stays usable for experts the file still holds.
        runner.Run(last.Layer, [other], [1f], x, y, scratch, null);
    }

    [Fact]
    public void AFileTruncatedBeforeOpeningIsAModelFormatError()
    {
        string path = CopyOfModel("short.gguf");
        using (var f = new FileStream(path, FileMode.Open, FileAccess.Write)) f.SetLength(f.Length - 100);
        var e = Assert.Throws<ModelFormatException>(() => ModelSession.Open(path, new EngineOptions { ExpertMemory = ExpertMemory.OfFraction(0.3) }));
        output.WriteLine(e.Message);
        Assert.Contains(path, e.Message);
    }
}
