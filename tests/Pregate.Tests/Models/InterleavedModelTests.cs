// A model running on interleaved copies of its Q8_0 / Q4_0 weights (the default) against the same model reading the
// mapped file row by row: batched prefill and decode logits bit-identical, attention, shared and routed experts included.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Formats;
using Pregate.Formats.Synth;
using Pregate.Kernels;
using Pregate.Models;
using Xunit.Abstractions;
using static Pregate.Tests.Models.ModelTestSupport;

namespace Pregate.Tests.Models;

public sealed class InterleavedModelTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("tiny", "q8_0")]
    [InlineData("tiny-qwen2moe", "q4_0")]
    [InlineData("tiny-olmoe", "q4_0")]
    public void InterleavedWeightsGiveBitIdenticalLogits(string shape, string dtype)
    {
        Assert.True(DTypes.TryParse(dtype, out var type));
        var c = SynthShapes.Get(shape);
        string path = Synth(shape, c, type, gguf: true);
        using var plainCk = Checkpoint.Open(path);
        using var packedCk = Checkpoint.Open(path);
        var plain = MoeModel.Load(plainCk, interleaveWeights: false);
        var packed = MoeModel.Load(packedCk);
        using var team = new WorkerTeam(2);
        var tokens = Tokens(14, c.VocabSize, 5);
        int vocab = c.VocabSize, prompt = 9;

        float[] Run(MoeModel model)
        {
            var state = model.CreateState(32, 4);
            var logits = new float[tokens.Length * vocab];
            model.Forward(state, tokens.AsSpan(0, prompt), logits.AsSpan(0, prompt * vocab), allPositions: true, team);
            for (int i = prompt; i < tokens.Length; i++) model.Forward(state, tokens[i], logits.AsSpan(i * vocab, vocab), team);
            return logits;
        }

        var expected = Run(plain);
        var actual = Run(packed);
        int mismatches = 0;
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToUInt32Bits(expected[i]) != BitConverter.SingleToUInt32Bits(actual[i])) mismatches++;
        output.WriteLine($"{shape} {dtype}: {packed.InterleavedBytes} bytes interleaved, {mismatches} of {actual.Length} logits differ");
        Assert.Equal(0, mismatches);
        Assert.Equal(0, plain.InterleavedBytes);
        Assert.Equal(VecDot.UseAvx2, packed.InterleavedBytes > 0);
    }

    [Fact]
    public void AnotherExpertRunnerLeavesTheWeightsInPlace()
    {
        // Offloaded experts promise resident weights + budget: with a runner other than the resident one nothing is copied.
        var c = SynthShapes.Get("tiny");
        using var ck = Checkpoint.Open(Synth("tiny", c, DType.Q8_0, gguf: true));
        var model = MoeModel.Load(ck);
        model.Experts = new Forwarding(new ResidentExperts(ck));
        var state = model.CreateState(8);
        model.Forward(state, 5, new float[c.VocabSize]);
        Assert.Equal(0, model.InterleavedBytes);
    }

    [Theory]
    [InlineData(InterleaveMode.On)]
    [InlineData(InterleaveMode.Off)]
    [InlineData(InterleaveMode.Auto)]
    public void SessionsInterleaveAsAskedAndSayHowMuch(InterleaveMode mode)
    {
        var c = SynthShapes.Get("tiny-qwen2moe");
        string path = Synth("tiny-qwen2moe", c, DType.Q8_0, gguf: true);
        using var s = ModelSession.Open(path, new EngineOptions { ExpertMemory = ExpertMemory.All, Interleave = mode, Threads = 2 });
        long planned = s.ExpertPlacement.InterleavedBytes;
        s.Model.Forward(s.State, 3, new float[c.VocabSize], s.Team);
        string line = s.DescribePlacement();
        output.WriteLine($"{mode}: planned {planned}, copied {s.Model.InterleavedBytes}: {line}");
        // The plan is what the first pass copies: attention, shared expert, output and routed experts.
        Assert.Equal(planned, s.Model.InterleavedBytes);
        if (mode == InterleaveMode.Off || !VecDot.UseAvx2)
        {
            Assert.Equal(0, planned);
            Assert.Contains("mapped", line);
        }
        else
        {
            // A tiny model fits whatever memory this machine has: auto copies too.
            Assert.True(planned > s.Checkpoint.Tensors.Where(t => t.Type == DType.Q8_0).Sum(t => t.ByteLength) / 2, $"{planned} bytes planned");
            Assert.Equal(MoeModel.InterleavableBytes(s.Checkpoint, routedExperts: true), planned);
            Assert.Contains("copied into interleaved rows", line);
        }
    }

    [Fact]
    public void OffloadedSessionsCopyNothing()
    {
        var c = SynthShapes.Get("tiny");
        using var s = ModelSession.Open(Synth("tiny", c, DType.Q8_0, gguf: true),
            new EngineOptions { ExpertMemory = ExpertMemory.OfFraction(0.5), ResidentWhenBudgetCoversAll = false, Interleave = InterleaveMode.On, Threads = 1 });
        s.Model.Forward(s.State, 3, new float[c.VocabSize], s.Team);
        Assert.True(s.ExpertPlacement.Offloaded);
        Assert.Equal(0, s.ExpertPlacement.InterleavedBytes);
        Assert.Equal(0, s.Model.InterleavedBytes);
    }

    [Fact]
    public void ThePlacementLineSaysWhyCopiesWereDeclined()
    {
        var p = new ExpertPlacement(false, false, 600L << 20, 600L << 20, 0, 0, EvictionPolicyKind.Score, false, 400L << 20,
            InterleaveDeclinedBytes: 650L << 20);
        string line = p.Describe();
        output.WriteLine(line);
        Assert.Equal("experts: resident (all 600 MiB mapped; not interleaved: the 650 MiB of copies would not fit in the 400 MiB available)", line);
    }

    private sealed class Forwarding(IExpertRunner inner) : IExpertRunner
    {
        public void Run(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team) =>
            inner.Run(layer, ids, weights, x, y, scratch, team);
    }
}
