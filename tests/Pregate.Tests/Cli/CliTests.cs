// The `pregate` command end to end, in process: synth → inspect for both formats, llama.cpp agreeing with inspect's
// parameter count, run and logits, and the exit codes and messages for bad input.
using System.Text.Json;
using LLama;
using LLama.Common;
using Pregate.Tests.Models;
using Xunit.Abstractions;

namespace Pregate.Tests.Cli;

public sealed class CliTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private (int Code, string Out, string Err) Run(params string[] args) => CliRun.Run(output, args, logStdout: false);

    private string P(string name) => Path.Combine(_dir, name);

    [Theory]
    [InlineData("gguf", "f32")]
    [InlineData("gguf", "q8_0")]
    [InlineData("hf", "bf16")]
    public void SynthThenInspectReportsTheShape(string format, string dtype)
    {
        string path = P($"m-{format}-{dtype}" + (format == "gguf" ? ".gguf" : ""));
        var (code, _, _) = Run("synth", "--shape", "tiny-qwen2moe", "--dtype", dtype, "--format", format, "--out", path, "--seed", "4");
        Assert.Equal(0, code);
        var (icode, json, _) = Run("inspect", "--model", path, "--json");
        Assert.Equal(0, icode);
        using var doc = JsonDocument.Parse(json);
        var r = doc.RootElement;
        Assert.Equal("qwen2_moe", r.GetProperty("architecture").GetString());
        Assert.Equal(2, r.GetProperty("n_layers").GetInt32());
        Assert.Equal(4, r.GetProperty("n_experts").GetInt32());
        Assert.Equal(2, r.GetProperty("n_experts_used").GetInt32());
        Assert.Equal(64, r.GetProperty("hidden_size").GetInt32());
        long total = r.GetProperty("total_bytes").GetInt64();
        Assert.Equal(total, r.GetProperty("expert_bytes").GetInt64() + r.GetProperty("resident_bytes").GetInt64());
        Assert.True(r.GetProperty("expert_bytes").GetInt64() > 0);
    }

    [Fact]
    public void LlamaCppCountsTheParametersInspectReports()
    {
        string path = P("mini.gguf");
        Assert.Equal(0, Run("synth", "--shape", "mixtral-mini", "--layers", "1", "--dtype", "q8_0", "--out", path).Code);
        var (_, json, _) = Run("inspect", "--model", path, "--json");
        long ours = JsonDocument.Parse(json).RootElement.GetProperty("total_params").GetInt64();
        using var w = LLamaWeights.LoadFromFile(new ModelParams(path) { GpuLayerCount = 0 });
        output.WriteLine($"inspect {ours}, llama.cpp {w.ParameterCount}");
        Assert.Equal(ours, (long)w.ParameterCount);
    }

    [Fact]
    public void RunStreamsTextAndLogitsPrintsOneRowPerPosition()
    {
        string path = P("tiny.gguf");
        Assert.Equal(0, Run("synth", "--shape", "tiny", "--out", path).Code);
        var (code, text, err) = Run("run", "--model", path, "--prompt", "Hello", "-n", "8", "--temperature", "0");
        Assert.Equal(0, code);
        Assert.StartsWith("Hello", text);
        Assert.Contains("tok/s", err);

        var (lcode, json, _) = Run("logits", "--model", path, "--tokens", "1,2,3");
        Assert.Equal(0, lcode);
        var rows = JsonDocument.Parse(json).RootElement.GetProperty("logits");
        Assert.Equal(3, rows.GetArrayLength());
        Assert.Equal(384, rows[0].GetArrayLength());
        var (_, last, _) = Run("logits", "--model", path, "--tokens", "1,2,3", "--positions", "last");
        var lastRow = JsonDocument.Parse(last).RootElement.GetProperty("logits");
        Assert.Equal(1, lastRow.GetArrayLength());
        Assert.Equal(rows[2].GetRawText(), lastRow[0].GetRawText());
    }

    [Fact]
    public void BadInputGivesExitCodeOneWithAClearMessage()
    {
        string path = P("tiny.gguf");
        Assert.Equal(0, Run("synth", "--shape", "tiny", "--out", path).Code);
        string corrupt = P("corrupt.gguf");
        File.WriteAllBytes(corrupt, File.ReadAllBytes(path)[..1000]);
        string noTokenizer = P("notok");
        Assert.Equal(0, Run("synth", "--shape", "tiny", "--format", "hf", "--out", noTokenizer).Code);
        File.Delete(Path.Combine(noTokenizer, "tokenizer.json"));

        var cases = new (string[] Args, string Expect)[]
        {
            (["inspect", "--model", P("missing.gguf")], "missing.gguf"),
            (["inspect", "--model", corrupt], "corrupt.gguf"),
            (["run", "--model", path, "--prompt", string.Concat(Enumerable.Repeat("word ", 400)), "--ctx", "64"], "context"),
            (["logits", "--model", path, "--tokens", "1,999999"], "999999"),
            (["logits", "--model", path, "--tokens", "1,x"], "'x'"),
            (["run", "--model", path, "-n", "0"], "-n"),
            (["run", "--model", noTokenizer, "--prompt", "hi"], "tokenizer"),
            (["run", "--model", path, "--temperature", "-1"], "temperature"),
            (["synth", "--shape", "nope", "--out", P("x.gguf")], "nope"),
            (["synth", "--shape", "tiny", "--dtype", "q8_0", "--format", "hf", "--out", P("x")], "gguf"),
            (["synth", "--shape", "tiny-qwen2moe", "--dtype", "q4_0", "--out", P("y.gguf")], null!),
        };
        foreach (var (args, expect) in cases)
        {
            var (code, _, err) = Run(args);
            if (expect is null) { Assert.Equal(0, code); continue; }
            Assert.Equal(1, code);
            Assert.Contains(expect, err);
            Assert.DoesNotContain("   at ", err); // no stack trace
        }
    }

    [Fact]
    public void EvalAndCalibrateRunOnTheShippedModel()
    {
        string model = TrainedModelTests.ModelDir();
        string text = P("text.txt");
        File.WriteAllText(text, File.ReadAllText(Path.Combine(model, "valid.txt"))[..40_000]);
        var (code, table, _) = Run("eval", "--model", model, "--text", text, "--max-tokens", "1500", "--lru-slots", "4,8");
        Assert.Equal(0, code);
        Assert.Contains("perplexity", table);
        Assert.Contains("| LRU 4 | LRU 8 |", table);
        string predictor = P("p.safetensors");
        var (ccode, report, _) = Run("calibrate", "--model", model, "--text", text, "--out", predictor, "--max-tokens", "3000");
        Assert.Equal(0, ccode);
        Assert.Contains("next-gate", report);
        Assert.True(File.Exists(predictor));
        Assert.Equal(1, Run("calibrate", "--model", model, "--text", P("missing.txt")).Code);
    }

    [Fact]
    public void UsageErrorsExitWithTwo()
    {
        Assert.Equal(2, Run("inspect").Code);
        Assert.Equal(2, Run("no-such-command").Code);
        Assert.Equal(2, Run("run", "--threads", "many").Code);
    }
}
