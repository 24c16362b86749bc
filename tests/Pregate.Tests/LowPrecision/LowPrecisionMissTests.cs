// --on-miss low-precision: a missed expert weighted below the threshold runs from its {name}.q4_0 copy (quantize --dual).
// Threshold 0 is bit-identical to resident; otherwise the logits equal an independent reference that computes the
// substituted experts from the copy (chosen by the documented rule), fewer bytes are read than by loading, and files
// without copies or with malformed ones give clear errors.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Experts.Prediction;
using Pregate.Formats;
using Pregate.Formats.Gguf;
using Pregate.Formats.Synth;
using Pregate.Kernels;
using Pregate.Models;
using Pregate.Tests.Experts;
using Pregate.Tests.Cli;
using Xunit.Abstractions;
using static Pregate.Tests.Models.ModelTestSupport;

namespace Pregate.Tests.LowPrecision;

public sealed class LowPrecisionMissTests(ITestOutputHelper output) : IDisposable
{
    private const int Positions = 32;
    private readonly DiskFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    // 3 layers × 8 experts top-2: with 2 slots (one layer's experts) a layer never finds its own experts cached, because
    // the two most recent loads belong to the two layers before it.
    private static ModelConfig Shape(string family) => SynthShapes.Get(family) with { NumLayers = 3, NumExperts = 8 };

    // The f32 synthetic model quantized to q8_0 with the given expert copies (q4_0 by default), on a disk folder.
    private string DualModel(string family, params DType[] copies)
    {
        if (copies.Length == 0) copies = [DType.Q4_0];
        string path = _folder.File($"{family}-q8_0-{string.Join('-', copies.Select(DTypes.Name))}.gguf");
        if (File.Exists(path)) return path;
        string source = _folder.File($"{family}-f32.gguf");
        if (!File.Exists(source)) SyntheticModel.WriteGguf(source, new SynthOptions(Shape(family), DType.F32, Seed: 7));
        ModelQuantizer.Run(source, path, new QuantizeOptions { Type = DType.Q8_0, DualTypes = copies });
        return path;
    }

    private static ModelSession Offloaded(string path, int slots, MissPolicy onMiss, float below = MissPolicies.DefaultLowPrecisionBelow,
        EvictionPolicyKind policy = EvictionPolicyKind.Lru)
    {
        long slotBytes;
        using (var ck = Checkpoint.Open(path)) slotBytes = DirectFileReader.AlignUp(OffloadedExperts.LayoutOf(ck).SlotBytes);
        return ModelSession.Open(path, new EngineOptions
        {
            Context = 64, ExpertMemory = ExpertMemory.OfBytes(slots * slotBytes), OnMiss = onMiss, LowPrecisionBelow = below,
            CachePolicy = policy, Predictor = PredictorKind.None, ResidentWhenBudgetCoversAll = false,
        });
    }

    // The prompt as one prefill block (RunBatch), then the same tokens again one at a time (Run) after a reset.
    private static (float[][] Prefill, float[][] Decode) Run(ModelSession s, int[] tokens) => (s.Logits(tokens, allPositions: true), Decode(s, tokens));

    [Theory]
    [InlineData("tiny", 2)]
    [InlineData("tiny", 7)]
    [InlineData("tiny-qwen3moe", 2)]
    public void ThresholdZeroIsBitIdenticalToResident(string family, int slots)
    {
        string path = DualModel(family);
        var tokens = Tokens(Positions, Shape(family).VocabSize, 21);
        (float[][], float[][]) expected;
        using (var resident = ModelSession.Open(path, new EngineOptions { Context = 64, ExpertMemory = ExpertMemory.All }))
            expected = Run(resident, tokens);
        using var session = Offloaded(path, slots, MissPolicy.LowPrecision, below: 0);
        output.WriteLine(session.DescribePlacement());
        Assert.Contains("on miss low-precision (q4_0 copies below weight 0)", session.ExpertPlacement.Describe());
        var actual = Run(session, tokens);
        ExpertStats s = session.ExpertStats;
        output.WriteLine($"{family}, {slots} slots, threshold 0: {s.ComputedLowPrecision} from copies, {s.Cache.Loads} loads, {s.BytesRead} bytes read");
        AssertBitIdentical(expected.Item1, actual.Item1);
        AssertBitIdentical(expected.Item2, actual.Item2);
        Assert.Equal(0, s.ComputedLowPrecision);
        Assert.Equal(0, s.ComputedLowPrecisionBytes);
        Assert.True(s.Cache.Loads > 0);
    }

    // A threshold above every weight: nothing is ever loaded (every expert misses and runs from its copy), so the reference
    // computes every expert from the q4_0 copy. Loading the same experts reads more bytes.
    [Theory]
    [InlineData("tiny")]
    [InlineData("tiny-qwen2moe")]
    public void AboveEveryWeightEveryExpertRunsFromItsCopy(string family)
    {
        string path = DualModel(family);
        var c = Shape(family);
        var tokens = Tokens(Positions, c.VocabSize, 22);
        var (expected, substituted) = Reference(path, tokens, below: 2);
        using var session = Offloaded(path, c.NumExpertsUsed, MissPolicy.LowPrecision, below: 2);
        var actual = Run(session, tokens);
        ExpertStats low = session.ExpertStats;
        ExpertStats load;
        using (var loading = Offloaded(path, c.NumExpertsUsed, MissPolicy.Load))
        {
            Run(loading, tokens);
            load = loading.ExpertStats;
        }
        output.WriteLine($"{family}: {low.ComputedLowPrecision} of {low.ExpertUses} uses from copies ({low.ComputedLowPrecisionBytes} bytes, " +
                         $"{low.ExpertBytesPerToken:0} bytes/token); load: {load.Cache.Loads} loads, {load.ExpertBytesPerToken:0} bytes/token");
        output.WriteLine(EngineOptionSetLine(session, low));
        AssertBitIdentical(expected.Prefill, actual.Prefill);
        AssertBitIdentical(expected.Decode, actual.Decode);
        Assert.Equal(substituted, low.ComputedLowPrecision);
        Assert.Equal(low.ExpertUses, low.ComputedLowPrecision);
        Assert.Equal(1.0, low.LowPrecisionShare);
        Assert.Equal(0, low.Cache.Loads);
        Assert.Equal(0, low.BytesRead);
        Assert.Equal(2 * Positions, low.Tokens);
        Assert.True(low.ComputedLowPrecisionBytes > 0);
        Assert.True(low.ExpertBytesPerToken < load.ExpertBytesPerToken,
            $"{low.ExpertBytesPerToken} bytes/token from copies, {load.ExpertBytesPerToken} loading");
        // Every copy of these models has one size: q4_0 takes 18 bytes per 32 weights, 3 matrices of F × D per expert.
        long copyBytes = 3L * c.ExpertFfn * c.HiddenSize / 32 * 18;
        Assert.Equal(low.ComputedLowPrecision * copyBytes, low.ComputedLowPrecisionBytes);
    }

    // Mixtral top-2 renormalised: the first expert weighs at least 0.5, the second less. With 2 LRU slots no expert of the
    // running layer is cached, so at threshold 0.5 every second expert of a decoded token runs from its copy and every
    // first expert loads; in the prefill block an expert runs from its copy only when it is every token's second choice.
    [Fact]
    public void OnlyLightlyWeightedMissesRunFromTheCopy()
    {
        string path = DualModel("tiny");
        var c = Shape("tiny");
        var tokens = Tokens(Positions, c.VocabSize, 23);
        var (expected, substituted) = Reference(path, tokens, below: 0.5f);
        using var session = Offloaded(path, c.NumExpertsUsed, MissPolicy.LowPrecision, below: 0.5f);
        Assert.Equal(DType.Q4_0, session.ExpertPlacement.LowPrecisionType);
        var prefill = session.Logits(tokens, allPositions: true);
        ExpertStats afterPrefill = session.ExpertStats;
        var decode = Decode(session, tokens);
        ExpertStats d = session.ExpertStats - afterPrefill;
        output.WriteLine($"prefill: {afterPrefill.ComputedLowPrecision} of {afterPrefill.ExpertUses} experts from copies, {afterPrefill.Cache.Loads} loads; " +
                         $"decode: {d.ComputedLowPrecision} of {d.ExpertUses} from copies, {d.Cache.Loads} loads; reference substituted {substituted}");
        AssertBitIdentical(expected.Prefill, prefill);
        AssertBitIdentical(expected.Decode, decode);
        Assert.Equal(substituted, session.ExpertStats.ComputedLowPrecision);
        Assert.Equal(Positions * c.NumLayers, d.ComputedLowPrecision);
        Assert.Equal(Positions * c.NumLayers, d.Cache.Loads);
        Assert.True(afterPrefill.Cache.Loads > 0);
    }

    [Fact]
    public void TheSmallestCopyIsUsed()
    {
        string path = DualModel("tiny", DType.Q8_0, DType.Q4_0);
        using (var ck = Checkpoint.Open(path))
        {
            Assert.Equal([DType.Q8_0, DType.Q4_0], ck.ExpertCopyTypes);
            Assert.Equal(DType.Q4_0, OffloadedExperts.LowPrecisionCopyType(ck));
            var copy = ck.GetExpertCopy(TensorRole.ExpertDown, 2, 5, DType.Q4_0);
            Assert.Equal("blk.2.ffn_down_exps.weight.q4_0[5]", copy.Name);
            Assert.Equal(ck.GetExpert(TensorRole.ExpertDown, 2, 5).Shape, copy.Shape);
        }
        using var session = Offloaded(path, 2, MissPolicy.LowPrecision, below: 2);
        session.Logits(Tokens(8, Shape("tiny").VocabSize, 24), allPositions: true);
        Assert.Equal(DType.Q4_0, session.ExpertPlacement.LowPrecisionType);
        Assert.True(session.ExpertStats.ComputedLowPrecision > 0);
    }

    [Fact]
    public void AModelWithoutCopiesIsAClearError()
    {
        string source = _folder.File("plain.gguf");
        SyntheticModel.WriteGguf(source, new SynthOptions(Shape("tiny"), DType.Q8_0, Seed: 7));
        foreach (var memory in new[] { ExpertMemory.OfFraction(0.3), ExpertMemory.All })
        {
            var e = Assert.Throws<ArgumentException>(() => ModelSession.Open(source,
                new EngineOptions { Context = 32, ExpertMemory = memory, OnMiss = MissPolicy.LowPrecision, ResidentWhenBudgetCoversAll = false }));
            output.WriteLine(e.Message);
            Assert.Contains(source, e.Message);
            Assert.Contains("pregate quantize", e.Message);
            Assert.Contains("--dual MAIN,LOW", e.Message);
        }
        var (code, _, err) = Cli("logits", "--model", source, "--tokens", "1,2,3", "--expert-memory", "30%", "--on-miss", "low-precision");
        Assert.Equal(1, code);
        Assert.Contains("--dual", err);
        Assert.DoesNotContain("   at ", err);

        // Copies as large as the experts would read more, not less.
        string same = DualModel("tiny", DType.Q8_0);
        var larger = Assert.Throws<ArgumentException>(() => Offloaded(same, 2, MissPolicy.LowPrecision));
        output.WriteLine(larger.Message);
        Assert.Contains("not fewer", larger.Message);
    }

    [Theory]
    [InlineData("shape")]
    [InlineData("type")]
    public void AMalformedCopyIsAModelFormatErrorNamingTheTensor(string fault)
    {
        const string target = "blk.1.ffn_up_exps.weight.q4_0";
        string path = Rewrite(DualModel("tiny"), $"bad-{fault}.gguf", target, fault);
        using (var resident = ModelSession.Open(path, new EngineOptions { Context = 32, ExpertMemory = ExpertMemory.All }))
            Assert.NotEmpty(resident.Logits([1, 2, 3], allPositions: false)); // the main experts are intact
        var e = Assert.Throws<ModelFormatException>(() => Offloaded(path, 2, MissPolicy.LowPrecision));
        output.WriteLine(e.Message);
        Assert.Contains(target, e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void TheCommandLineReportsLowPrecisionMisses()
    {
        string path = DualModel("tiny");
        string text = _folder.File("eval.txt");
        File.WriteAllText(text, string.Join(' ', Enumerable.Range(0, 80).Select(i => $"word{i % 13} and {i % 7}")));
        string[] engine = ["--expert-memory", "20%", "--on-miss", "low-precision", "--low-precision-below", "2", "--predictor", "none"];
        var (code, stdout, stderr) = Cli(["eval", "--model", path, "--text", text, "--max-tokens", "40", "--window", "20", "--ctx", "64",
            "--reference", path, .. engine]);
        output.WriteLine(stdout);
        Assert.Equal(0, code);
        Assert.Contains("on miss low-precision (q4_0 copies below weight 2)", stderr);
        Assert.Contains("(100.0%) from q4_0 copies", stdout);
        Assert.Contains("routing agreement", stdout);
        (code, _, stderr) = Cli(["logits", "--model", path, "--tokens", "1,2,3,4", "--stats", .. engine]);
        Assert.Equal(0, code);
        Assert.Contains("(100.0%) from q4_0 copies", stderr);
        (code, _, stderr) = Cli("logits", "--model", path, "--tokens", "1,2", "--low-precision-below", "0.2");
        Assert.Equal(1, code);
        Assert.Contains("--low-precision-below goes with --on-miss low-precision", stderr);
    }

    // The resident run of the file with the reference runner below: its logits for the prefill block and for decode steps,
    // and how many experts it computed from the copy.
    private static ((float[][] Prefill, float[][] Decode) Logits, long Substituted) Reference(string path, int[] tokens, float below)
    {
        using var resident = ModelSession.Open(path, new EngineOptions { Context = 64, ExpertMemory = ExpertMemory.All });
        var reference = new SubstitutingExperts(resident.Checkpoint, DType.Q4_0, below);
        resident.Model.Experts = reference;
        return (Run(resident, tokens), reference.Substituted);
    }

    /// <summary>
    /// Resident experts, except that in each group of a block (one expert and the tokens routed to it) whose every routing
    /// weight is below <c>below</c> the expert is computed from its copy: the offloaded runner's rule when none of the running
    /// layer's experts is cached. A single token is a block of one.
    /// </summary>
    private sealed class SubstitutingExperts : IExpertRunner
    {
        private readonly ExpertWeights[][] _main, _copy; // [layer][expert]
        private readonly float _below;

        public SubstitutingExperts(Checkpoint ck, DType type, float below)
        {
            var c = ck.Config;
            _below = below;
            ExpertWeights Of(Func<TensorRole, int, int, TensorView> get, int l, int e) => new(
                WeightMatrix.FromTensor(get(TensorRole.ExpertGate, l, e)), WeightMatrix.FromTensor(get(TensorRole.ExpertUp, l, e)),
                WeightMatrix.FromTensor(get(TensorRole.ExpertDown, l, e)));
            _main = Enumerable.Range(0, c.NumLayers).Select(l => Enumerable.Range(0, c.NumExperts).Select(e => Of(ck.GetExpert, l, e)).ToArray()).ToArray();
            _copy = Enumerable.Range(0, c.NumLayers).Select(l => Enumerable.Range(0, c.NumExperts)
                .Select(e => Of((r, ll, ee) => ck.GetExpertCopy(r, ll, ee, type), l, e)).ToArray()).ToArray();
        }

        public long Substituted { get; private set; }

        public void Run(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team) =>
            RunBatch(layer, ids, weights, x, y, scratch, team);

        public void RunBatch(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team)
        {
            var g = scratch.Grouping;
            g.Build(ids, x.Tokens);
            scratch.Gathered.LoadRows(x.Values(), x.Cols, g.SlotToken);
            var chosen = new ExpertWeights[g.Count];
            for (int i = 0; i < g.Count; i++)
            {
                bool allBelow = true;
                for (int pair = 0; pair < ids.Length; pair++)
                {
                    int slot = g.SlotOf[pair];
                    if (slot >= g.Starts[i] && slot < g.Starts[i + 1] && !(weights[pair] < _below)) allBelow = false;
                }
                chosen[i] = allBelow ? _copy[layer][g.Experts[i]] : _main[layer][g.Experts[i]];
                if (allBelow) Substituted++;
            }
            SwiGlu.RunGrouped(chosen, g.Starts, scratch.Gathered, scratch, team);
            g.Combine(weights, scratch.Out, y, x.Tokens);
        }
    }

    // A copy of the file where tensor `target` has one expert fewer ("shape") or holds the q8_0 main tensor's bytes and
    // type under its q4_0 name ("type").
    private unsafe string Rewrite(string source, string name, string target, string fault)
    {
        string path = _folder.File(name);
        using var g = GgufFile.Open(source);
        var w = new GgufWriter();
        foreach (string key in g.MetadataKeys) w.Set(key, g.Metadata[key]);
        foreach (var t in g.Tensors)
        {
            var view = t;
            if (view.Name == target)
            {
                if (fault == "shape")
                {
                    long perExpert = view.ByteLength / view.Shape[0];
                    view = new TensorView(view.Name, view.Type, [view.Shape[0] - 1, .. view.Shape[1..]], view.Pointer, view.ByteLength - perExpert);
                }
                else
                {
                    Assert.True(g.TryGetTensor(target[..^".q4_0".Length], out var main));
                    view = new TensorView(view.Name, main.Type, main.Shape, main.Pointer, main.ByteLength);
                }
            }
            w.AddTensor(new TensorData(view.Name, view.Type, view.Shape, s => s.Write(new ReadOnlySpan<byte>((void*)view.Pointer, checked((int)view.ByteLength)))));
        }
        w.Write(path);
        return path;
    }

    private static string EngineOptionSetLine(ModelSession s, ExpertStats stats) => Pregate.Cli.EngineOptionSet.DescribeStats(s.ExpertPlacement, stats);

    private (int Code, string Out, string Err) Cli(params string[] args) => CliRun.Run(output, args, logStdout: false);
}
