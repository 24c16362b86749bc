// The forward pass against llama.cpp: tiny random models of every family in F32 (logits at every position within 1e-4
// relative, identical greedy continuations), odd sizes and GQA ratios, quantized weights, and HF vs GGUF copies.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Formats.Synth;
using Xunit.Abstractions;
using static Pregate.Tests.Models.ModelTestSupport;

namespace Pregate.Tests.Models;

public sealed class ForwardPassOracleTests(ITestOutputHelper output)
{
    public static TheoryData<string> Families => new() { "tiny", "tiny-qwen2moe", "tiny-qwen3moe", "tiny-olmoe" };

    [Theory]
    [MemberData(nameof(Families))]
    public void F32LogitsMatchLlamaCppAtEveryPosition(string shape)
    {
        var c = SynthShapes.Get(shape);
        string path = Synth(shape, c, DType.F32, gguf: true);
        var tokens = Tokens(40, c.VocabSize, 11);
        using var oracle = new LlamaCppOracle(path);
        using var session = ModelSession.Open(path, new EngineOptions { Context = 256 });
        var expected = oracle.Logits(tokens);
        var actual = session.Logits(tokens, allPositions: true);
        double err = RelativeError(actual, expected);
        output.WriteLine($"{shape}: max|diff|/max|ref| = {err:E2} over {tokens.Length} positions × {c.VocabSize} logits");
        Assert.True(err <= 1e-4, $"relative error {err:E2} exceeds 1e-4");
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void GreedyContinuationMatchesLlamaCpp(string shape)
    {
        var c = SynthShapes.Get(shape);
        string path = Synth(shape, c, DType.F32, gguf: true);
        var prompt = Tokens(8, c.VocabSize, 5);
        using var oracle = new LlamaCppOracle(path);
        using var session = ModelSession.Open(path, new EngineOptions { Context = 256 });
        var expected = oracle.Greedy(prompt, 32);
        var actual = Greedy(session, prompt, 32);
        output.WriteLine($"{shape}: llama.cpp {string.Join(",", expected)}");
        output.WriteLine($"{shape}: pregate   {string.Join(",", actual)}");
        Assert.Equal(expected, actual);
    }

    // Hidden and expert sizes that are not multiples of 8 or 32, GQA ratios 1, 2 and 3, top-k from 1 to 4.
    public static TheoryData<string, int, int, int, int, int, int> OddShapes => new()
    {
        // name, hidden, expert ffn, heads, kv heads, experts, top-k
        { "odd-gqa1-k1", 60, 44, 5, 5, 3, 1 },
        { "odd-gqa2-k3", 76, 52, 4, 2, 5, 3 },
        { "odd-gqa3-k4", 90, 70, 6, 2, 6, 4 },
        { "odd-gqa3-k2", 42, 30, 3, 1, 4, 2 },
    };

    [Theory]
    [MemberData(nameof(OddShapes))]
    public void OddSizesMatchLlamaCpp(string name, int hidden, int ffn, int heads, int kvHeads, int experts, int topK)
    {
        foreach (string family in new[] { "tiny", "tiny-qwen3moe" })
        {
            var c = SynthShapes.Get(family) with
            {
                HiddenSize = hidden, ExpertFfn = ffn, NumHeads = heads, NumKvHeads = kvHeads,
                HeadDim = family == "tiny" ? hidden / heads / 2 * 2 : 14, NumExperts = experts, NumExpertsUsed = topK,
            };
            if (family == "tiny" && c.HeadDim * heads != hidden) continue; // the llama arch needs H·hd = D
            string path = Synth($"{family}-{name}", c, DType.F32, gguf: true, seed: 3);
            var tokens = Tokens(24, c.VocabSize, 17);
            using var oracle = new LlamaCppOracle(path);
            using var session = ModelSession.Open(path, new EngineOptions { Context = 256 });
            double err = RelativeError(session.Logits(tokens, true), oracle.Logits(tokens));
            output.WriteLine($"{family} {name} (D {hidden}, F {ffn}, H {heads}/{kvHeads}, hd {c.HeadDim}, top-{topK} of {experts}): {err:E2}");
            Assert.True(err <= 1e-4, $"{family} {name}: relative error {err:E2} exceeds 1e-4");
        }
    }

    [Theory]
    [InlineData("tiny", "q8_0")]
    [InlineData("tiny", "q4_0")]
    [InlineData("tiny-qwen2moe", "q8_0")]
    [InlineData("tiny-olmoe", "q4_0")]
    public void QuantizedLogitsAgreeWithLlamaCpp(string shape, string dtype)
    {
        Assert.True(DTypes.TryParse(dtype, out var type));
        var c = SynthShapes.Get(shape);
        string path = Synth(shape, c, type, gguf: true);
        var tokens = Tokens(48, c.VocabSize, 23);
        using var oracle = new LlamaCppOracle(path);
        using var session = ModelSession.Open(path, new EngineOptions { Context = 256 });
        var expected = oracle.Logits(tokens);
        var actual = session.Logits(tokens, true);
        double err = RelativeError(actual, expected);
        int agree = 0;
        for (int i = 0; i < tokens.Length; i++) if (ArgMax(actual[i]) == ArgMax(expected[i])) agree++;
        double top1 = (double)agree / tokens.Length;
        output.WriteLine($"{shape} {dtype}: max|diff|/max|ref| = {err:E2}, top-1 agreement {top1:P1}");
        // Both sides quantize activations to Q8 for these dot products, so the gap is summation order only.
        Assert.True(err <= 1e-4, $"relative error {err:E2} exceeds 1e-4");
        Assert.True(top1 >= 0.95, $"top-1 agreement {top1:P1} below 95%");
    }

    [Theory]
    [MemberData(nameof(Families))]
    public void HuggingFaceAndGgufCopiesGiveTheSameLogits(string shape)
    {
        var c = SynthShapes.Get(shape);
        string gguf = Synth(shape, c, DType.F32, gguf: true);
        string hf = Synth(shape, c, DType.F32, gguf: false);
        var tokens = Tokens(32, c.VocabSize, 29);
        using var a = ModelSession.Open(gguf, new EngineOptions { Context = 256 });
        using var b = ModelSession.Open(hf, new EngineOptions { Context = 256 });
        double err = RelativeError(b.Logits(tokens, true), a.Logits(tokens, true));
        output.WriteLine($"{shape}: HF vs GGUF {err:E2}");
        Assert.True(err <= 1e-5, $"relative error {err:E2} exceeds 1e-5");
        Assert.Equal(Greedy(a, tokens[..6], 16), Greedy(b, tokens[..6], 16));
    }
}
