// `convert` against llama.cpp: synthetic HF checkpoints of all four families and the shipped model converted to GGUF load in
// llama.cpp with logits matching Pregate's on the HF folder, Pregate gives the same logits on both copies, and the
// tokenizer (vocabulary, merges, specials, chat template) comes over so both tokenize text alike.
using System.Text.Json.Nodes;
using LLama;
using LLama.Common;
using Pregate.Core;
using Pregate.Engine;
using Pregate.Formats;
using Pregate.Formats.Export;
using Pregate.Formats.Gguf;
using Pregate.Formats.Synth;
using Pregate.Tests.Models;
using Pregate.Tests.Cli;
using Xunit.Abstractions;
using static Pregate.Tests.Models.ModelTestSupport;

namespace Pregate.Tests.Conversion;

public sealed class ConvertTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-convert-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string ShippedModel
    {
        get
        {
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            {
                string p = Path.Combine(d.FullName, "models", "brown-moe-14m");
                if (Directory.Exists(p)) return p;
            }
            throw new DirectoryNotFoundException("models/brown-moe-14m not found above the test directory");
        }
    }

    private string Convert(string hf, string name, DType type)
    {
        string path = Path.Combine(_dir, name + ".gguf");
        using var ck = Checkpoint.Open(hf);
        GgufExport.Write(ck, path, new GgufExportOptions { TypeOf = s => GgufLayout.KeepsF32(s) ? DType.F32 : type, FileType = type });
        return path;
    }

    public static TheoryData<string> Families => new() { "tiny", "tiny-qwen2moe", "tiny-qwen3moe", "tiny-olmoe" };

    // F32 conversion is exact, so llama.cpp must agree with Pregate's HF run as tightly as with a Pregate-written GGUF (1e-4).
    [Theory]
    [MemberData(nameof(Families))]
    public void ConvertedSyntheticModelsMatchLlamaCppAndTheHfFolder(string shape)
    {
        var c = SynthShapes.Get(shape);
        string hf = Synth(shape, c, DType.F32, gguf: false, seed: 7);
        string gguf = Convert(hf, shape, DType.F32);
        var tokens = Tokens(40, c.VocabSize, 3);
        using var hfSession = ModelSession.Open(hf, new EngineOptions { Context = 256 });
        var reference = hfSession.Logits(tokens, allPositions: true);
        using (var oracle = new LlamaCppOracle(gguf))
        {
            double err = RelativeError(oracle.Logits(tokens), reference);
            output.WriteLine($"{shape}: llama.cpp on converted GGUF vs Pregate on HF: {err:E2} (tolerance 1e-4)");
            Assert.True(err <= 1e-4, $"{shape}: {err:E2}");
        }
        using var ggufSession = ModelSession.Open(gguf, new EngineOptions { Context = 256 });
        double own = RelativeError(ggufSession.Logits(tokens, true), reference);
        output.WriteLine($"{shape}: Pregate on converted GGUF vs on HF: {own:E2} (tolerance 1e-5)");
        Assert.True(own <= 1e-5, $"{shape}: {own:E2}");
    }

    // A bf16 checkpoint converts exactly to f32 and bf16, and to f16 with only f16's narrower exponent to lose (none at these
    // magnitudes): Pregate's logits on each GGUF stay within 1e-5 (f32, bf16) and 1e-3 (f16, other kernels) of the HF run.
    [Theory]
    [InlineData("f32", 1e-5)]
    [InlineData("bf16", 1e-5)]
    [InlineData("f16", 1e-3)]
    public void EachConvertTypeGivesTheHfLogits(string typeName, double tolerance)
    {
        Assert.True(DTypes.TryParse(typeName, out var type));
        var c = SynthShapes.Get("tiny-qwen3moe");
        string hf = Synth("tiny-qwen3moe", c, DType.BF16, gguf: false, seed: 9);
        string gguf = Convert(hf, "q3-" + typeName, type);
        var tokens = Tokens(32, c.VocabSize, 5);
        using var a = ModelSession.Open(hf, new EngineOptions { Context = 256 });
        using var b = ModelSession.Open(gguf, new EngineOptions { Context = 256 });
        double err = RelativeError(b.Logits(tokens, true), a.Logits(tokens, true));
        output.WriteLine($"bf16 HF → {typeName} GGUF: {err:E2} (tolerance {tolerance:E0})");
        Assert.True(err <= tolerance, $"{typeName}: {err:E2}");
    }

    // The shipped model (bf16 Mixtral) converted to f32: llama.cpp's logits within 1e-4 of Pregate's on the HF folder, the same
    // token ids from both tokenizers, and bos/add_bos carried over.
    [Fact]
    public void ShippedModelConvertsForLlamaCpp()
    {
        string hf = ShippedModel;
        string gguf = Convert(hf, "brown", DType.F32);
        using var hfSession = ModelSession.Open(hf, new EngineOptions { Context = 256 });
        string text = File.ReadAllText(Path.Combine(hf, "valid.txt"))[..2000];
        var tokens = hfSession.Tokenizer.Encode(text, addBos: false).Take(64).ToArray();
        var reference = hfSession.Logits(tokens, true);
        using (var oracle = new LlamaCppOracle(gguf))
        {
            double err = RelativeError(oracle.Logits(tokens), reference);
            output.WriteLine($"shipped model: llama.cpp on converted GGUF vs Pregate on HF: {err:E2} (tolerance 1e-4)");
            Assert.True(err <= 1e-4, $"{err:E2}");
        }
        using var weights = LLamaWeights.LoadFromFile(new ModelParams(gguf) { GpuLayerCount = 0 });
        var theirs = weights.Tokenize(text[..500], add_bos: false, special: false, System.Text.Encoding.UTF8).Select(t => (int)t).ToArray();
        var ours = hfSession.Tokenizer.Encode(text[..500], addBos: false).ToArray();
        output.WriteLine($"tokenizers: llama.cpp {theirs.Length} tokens, Pregate {ours.Length}");
        Assert.Equal(ours, theirs);
        using var g = GgufFile.Open(gguf);
        Assert.True(g.TryGetInt(GgufModelConfig.BosTokenKey, out int bos) && bos == 0);
        Assert.True(g.TryGetBool("tokenizer.ggml.add_bos_token", out bool addBos) && addBos);
        using var ggufSession = ModelSession.Open(gguf, new EngineOptions { Context = 256 });
        Assert.Equal(hfSession.Tokenizer.Encode(text, addBos: true), ggufSession.Tokenizer.Encode(text, addBos: true));
    }

    [Fact]
    public void ChatTemplateAndSpecialTokensComeOver()
    {
        var c = SynthShapes.Get("tiny-olmoe");
        string src = Synth("tiny-olmoe", c, DType.F32, gguf: false, seed: 2);
        string hf = Path.Combine(_dir, "olmoe-chat");
        Directory.CreateDirectory(hf);
        foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(hf, Path.GetFileName(f)));
        const string Template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}";
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(hf, "tokenizer_config.json")))!.AsObject();
        cfg["chat_template"] = Template;
        File.WriteAllText(Path.Combine(hf, "tokenizer_config.json"), cfg.ToJsonString());
        string gguf = Convert(hf, "olmoe-chat", DType.F16);
        using var g = GgufFile.Open(gguf);
        Assert.True(g.TryGetString("tokenizer.chat_template", out var tpl));
        Assert.Equal(Template, tpl);
        Assert.True(g.TryGetString("tokenizer.ggml.pre", out var pre));
        output.WriteLine($"pre-tokenizer {pre}, template carried over");
        var types = g.Metadata["tokenizer.ggml.token_type"].AsIntArray();
        var tokens = g.Metadata["tokenizer.ggml.tokens"].AsStringArray();
        int eot = Array.IndexOf(tokens, "<|endoftext|>");
        Assert.True(eot >= 0);
        Assert.Equal(3, types[eot]); // control
        Assert.True(g.TryGetInt(GgufModelConfig.EosTokenKey, out int eos) && eos == eot);
    }

    [Fact]
    public void CliConvertsAndRejectsBadTypes()
    {
        var c = SynthShapes.Get("tiny");
        string hf = Synth("tiny", c, DType.F32, gguf: false, seed: 7);
        string dst = Path.Combine(_dir, "cli.gguf");
        var (code, outText, _) = RunCli("convert", "--model", hf, "--out", dst, "--type", "bf16");
        Assert.Equal(0, code);
        Assert.Contains("bf16", outText);
        Assert.True(File.Exists(dst));
        Assert.Equal(1, RunCli("convert", "--model", hf, "--out", dst, "--type", "q4_0").Code);
        Assert.Equal(1, RunCli("convert", "--model", Path.Combine(_dir, "missing"), "--out", dst).Code);
        Assert.Equal(2, RunCli("convert", "--model", hf).Code);
    }

    private (int Code, string Out, string Err) RunCli(params string[] args) => CliRun.Run(output, args, logStdout: false);
}
