// Batched prefill (blocks of tokens, experts grouped by token) against token-by-token decoding: the logits must be
// bit-identical for every family, weight type, block size and thread count, and the KV cache must continue the same way.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Formats.Synth;
using Pregate.Kernels;
using Pregate.Models;
using Xunit.Abstractions;
using static Pregate.Tests.Models.ModelTestSupport;

namespace Pregate.Tests.Models;

public sealed class BatchedForwardTests(ITestOutputHelper output)
{
    public static TheoryData<string, string> FamiliesAndTypes => new()
    {
        { "tiny", "f32" }, { "tiny-qwen2moe", "f32" }, { "tiny-qwen3moe", "f32" }, { "tiny-olmoe", "f32" },
        { "tiny", "q8_0" }, { "tiny-qwen2moe", "q4_0" }, { "tiny-olmoe", "q8_0" }, { "tiny-qwen3moe", "f16" },
    };

    [Theory]
    [MemberData(nameof(FamiliesAndTypes))]
    public void BatchedLogitsAreBitIdenticalToTokenByToken(string shape, string dtype)
    {
        Assert.True(DTypes.TryParse(dtype, out var type));
        var c = SynthShapes.Get(shape);
        string path = Synth(shape, c, type, gguf: true);
        var tokens = Tokens(37, c.VocabSize, 41);
        using var session = ModelSession.Open(path, new EngineOptions { Context = 64, Threads = 2 });
        var model = session.Model;
        int vocab = c.VocabSize;

        var single = model.CreateState(64);
        var expected = new float[tokens.Length * vocab];
        for (int i = 0; i < tokens.Length; i++) model.Forward(single, tokens[i], expected.AsSpan(i * vocab, vocab), session.Team);

        // Blocks of 1, 5 (uneven split) and the whole prompt; with and without the team.
        foreach (var (maxBatch, team) in new (int, WorkerTeam?)[] { (1, session.Team), (5, session.Team), (64, session.Team), (64, null) })
        {
            var state = model.CreateState(64, maxBatch);
            var actual = new float[tokens.Length * vocab];
            model.Forward(state, tokens, actual, allPositions: true, team);
            int mismatches = CountBitMismatches(expected, actual);
            output.WriteLine($"{shape} {dtype} blocks of {maxBatch}{(team is null ? ", no team" : "")}: {mismatches} of {actual.Length} logits differ");
            Assert.Equal(0, mismatches);

            // The cache written by the block continues exactly like the token-by-token one.
            var next = new float[vocab];
            var nextExpected = new float[vocab];
            var singleCopy = model.CreateState(64);
            for (int i = 0; i < tokens.Length; i++) model.Forward(singleCopy, tokens[i], default, session.Team);
            model.Forward(singleCopy, 3, nextExpected, session.Team);
            model.Forward(state, 3, next, session.Team);
            Assert.Equal(0, CountBitMismatches(nextExpected, next));
        }
    }

    /// <summary>A runner with only the one-token entry point: the interface's default RunBatch loops over tokens.</summary>
    private sealed class PerTokenExperts(IExpertRunner inner) : IExpertRunner
    {
        public int Calls;

        public void Run(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team)
        {
            Calls++;
            inner.Run(layer, ids, weights, x, y, scratch, team);
        }
    }

    [Theory]
    [InlineData("tiny-qwen2moe")]
    [InlineData("tiny-olmoe")]
    public void RunnersWithoutABatchedPathGiveTheSameLogits(string shape)
    {
        var c = SynthShapes.Get(shape);
        string path = Synth(shape, c, DType.Q8_0, gguf: true);
        var tokens = Tokens(23, c.VocabSize, 47);
        using var session = ModelSession.Open(path, new EngineOptions { Context = 32 });
        var grouped = session.Logits(tokens, allPositions: true);
        var perToken = new PerTokenExperts(session.Model.Experts);
        session.Model.Experts = perToken;
        var looped = session.Logits(tokens, allPositions: true);
        Assert.Equal(tokens.Length * c.NumLayers, perToken.Calls);
        int mismatches = 0;
        for (int i = 0; i < tokens.Length; i++) mismatches += CountBitMismatches(grouped[i], looped[i]);
        output.WriteLine($"{shape}: {mismatches} logits differ between grouped experts and the per-token default");
        Assert.Equal(0, mismatches);
    }

    [Fact]
    public void LastPositionLogitsEqualTheLastRowOfAllPositions()
    {
        var c = SynthShapes.Get("tiny-olmoe");
        string path = Synth("tiny-olmoe", c, DType.Q8_0, gguf: true);
        var tokens = Tokens(20, c.VocabSize, 43);
        using var session = ModelSession.Open(path, new EngineOptions { Context = 32 });
        var all = session.Logits(tokens, allPositions: true);
        var last = session.Logits(tokens, allPositions: false);
        Assert.Single(last);
        Assert.Equal(0, CountBitMismatches(all[^1], last[0]));
    }

    [Fact]
    public void TokensThatDoNotFitTheContextAreRejectedBeforeAnyWork()
    {
        var c = SynthShapes.Get("tiny");
        string path = Synth("tiny", c, DType.F32, gguf: true);
        using var session = ModelSession.Open(path, new EngineOptions { Context = 16 });
        var state = session.Model.CreateState(16, 4);
        session.Model.Forward(state, Tokens(10, c.VocabSize, 1), default, allPositions: false, session.Team);
        Assert.Throws<ArgumentOutOfRangeException>(() => session.Model.Forward(state, Tokens(7, c.VocabSize, 2), default, allPositions: false, session.Team));
        Assert.Equal(10, state.Position);
        Assert.Throws<ArgumentOutOfRangeException>(() => session.Model.Forward(state, [1, c.VocabSize], default, allPositions: false, session.Team));
        Assert.Throws<ArgumentException>(() => session.Model.Forward(state, [1, 2], new float[c.VocabSize], allPositions: true, session.Team));
        Assert.Equal(10, state.Position);
    }

    private static int CountBitMismatches(float[] expected, float[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        int n = 0;
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToUInt32Bits(expected[i]) != BitConverter.SingleToUInt32Bits(actual[i])) n++;
        return n;
    }
}
