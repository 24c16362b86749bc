// `pregate bench --batch`: one batched run (JSON, text and --stats carry the batch; the oracle recalls every token of a
// batched step), batch lists as a sweep and ablation dimension (results.json/results.md batch column, chart), and
// errors for bad batches, a context too small or a GPU backend.
using System.Text.Json;
using Pregate.Tests.Cli;
using Xunit.Abstractions;

namespace Pregate.Tests.Bench;

public sealed class BenchBatchCliTests(ITestOutputHelper output) : IDisposable
{
    private static readonly string[] Workload = ["--prompt-tokens", "4", "--gen-tokens", "4", "--rounds", "1", "--threads", "1"];

    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-bench-batch-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private (int Code, string Out, string Err) Run(params string[] args) => CliRun.Run(output, args);

    private string Tiny()
    {
        string path = Path.Combine(_dir, "tiny.gguf");
        if (!File.Exists(path)) Assert.Equal(0, Run("synth", "--shape", "tiny", "--out", path).Code);
        return path;
    }

    private static List<JsonElement> Rows(string dir) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "results.json"))).RootElement.GetProperty("rows").EnumerateArray().ToList();

    [Fact]
    public void ABatchedRunCarriesTheBatchAndTheOracleRecallsEveryToken()
    {
        string model = Tiny();
        var (code, text, _) = Run(["bench", "--model", model, "--batch", "3", "--json", "--expert-memory", "50%", "--predictor", "oracle", .. Workload]);
        Assert.Equal(0, code);
        var r = JsonDocument.Parse(text).RootElement;
        Assert.Equal(3, r.GetProperty("batch").GetInt32());
        Assert.True(r.GetProperty("decode_tok_s").GetDouble() > 0);
        Assert.Equal(1.0, r.GetProperty("prediction_recall").GetDouble());
        Assert.Equal(1.0, r.GetProperty("prediction_precision").GetDouble());
        Assert.Equal(JsonValueKind.Null, r.GetProperty("roofline_fraction").ValueKind); // weights per token × tok/s would overstate a batch

        var (scode, stats, _) = Run(["bench", "--model", model, "--batch", "2", "--stats", "--expert-memory", "50%", "--predictor", "next-gate", .. Workload]);
        Assert.Equal(0, scode);
        Assert.Contains("batch 2 (sequences decoding together", stats);
        Assert.Contains("steps/s of 2 tokens", stats);
        Assert.Contains("layer   uses  hit rate", stats);

        var (rcode, resident, _) = Run(["bench", "--model", model, "--batch", "4", .. Workload]);
        Assert.Equal(0, rcode);
        Assert.Contains("batch 4", resident);
        var (dcode, single, _) = Run(["bench", "--model", model, "--json", .. Workload]);
        Assert.Equal(0, dcode);
        Assert.Equal(1, JsonDocument.Parse(single).RootElement.GetProperty("batch").GetInt32());
    }

    [Theory]
    [InlineData("0", "at least 1 sequence")]
    [InlineData("-2", "at least 1 sequence")]
    [InlineData("2,x", "'x' is not a whole number")]
    public void BadBatchesAreUsageErrors(string value, string message)
    {
        var (code, _, err) = Run(["bench", "--model", Tiny(), "--batch", value, .. Workload]);
        Assert.Equal(2, code);
        Assert.Contains("error: --batch", err);
        Assert.Contains(message, err);
    }

    [Fact]
    public void AContextTooSmallForEachSequenceIsAClearError()
    {
        var (code, _, err) = Run(["bench", "--model", Tiny(), "--batch", "2", "--ctx", "6", .. Workload]);
        Assert.Equal(1, code);
        Assert.Contains("exceed the context of 6", err);
        Assert.Contains("each of the batch's sequences", err);
        var (gpu, _, gpuErr) = Run(["bench", "--model", Tiny(), "--batch", "2", "--backend", "cuda", .. Workload]);
        Assert.Equal(1, gpu);
        Assert.Contains("decodes on the CPU engine only", gpuErr);
        var (io, _, ioErr) = Run(["bench", "--model", Tiny(), "--io", "--batch", "2"]);
        Assert.Equal(2, io);
        Assert.Contains("--batch belongs to the decode benchmark", ioErr);
    }

    [Fact]
    public void ABatchListIsASweepDimensionWithItsOwnColumn()
    {
        string model = Tiny(), dir = Path.Combine(_dir, "sweep");
        var (code, text, _) = Run(["bench", "--model", model, "--expert-memory", "50%,all", "--batch", "1,2", "--predictor", "none", "--out", dir, .. Workload]);
        Assert.Equal(0, code);
        var rows = Rows(dir);
        Assert.Equal(["score@50%×1", "resident@all×1", "score@50%×2", "resident@all×2"],
            rows.Select(r => $"{r.GetProperty("config").GetString()}@{r.GetProperty("budget").GetString()}×{r.GetProperty("batch").GetInt32()}"));
        foreach (var r in rows)
        {
            Assert.Equal("ok", r.GetProperty("status").GetString());
            Assert.Equal(r.GetProperty("batch").GetInt32(), r.GetProperty("bench").GetProperty("batch").GetInt32());
        }
        string md = File.ReadAllText(Path.Combine(dir, "results.md"));
        Assert.Equal(md, text);
        Assert.Contains("| config | budget | batch | decode tok/s | prefill tok/s |", md);
        Assert.Contains("| score | 50% | 2 |", md);
        Assert.Contains("| resident | all | 1 |", md);
        Assert.True(new FileInfo(Path.Combine(dir, "chart.png")).Length > 1000);

        // A single --batch value with a budget list: the column shows that batch.
        string single = Path.Combine(_dir, "single");
        Assert.Equal(0, Run(["bench", "--model", model, "--expert-memory", "50%,all", "--batch", "2", "--predictor", "none", "--out", single, .. Workload]).Code);
        Assert.All(Rows(single), r => Assert.Equal(2, r.GetProperty("batch").GetInt32()));
        Assert.Contains("| resident | all | 2 |", File.ReadAllText(Path.Combine(single, "results.md")));
    }

    /// <summary>The ablation at two batch sizes: the oracle replays a routing recorded for each, so it recalls everything at both.</summary>
    [Fact]
    public void TheAblationRunsEachBatchWithItsOwnOracleTrace()
    {
        string model = Tiny(), dir = Path.Combine(_dir, "ablation");
        var (code, _, err) = Run(["bench", "--model", model, "--ablation", "--expert-memory", "50%", "--batch", "1,2", "--out", dir, .. Workload]);
        Assert.Equal(0, code);
        Assert.Contains("(batch 2) for the oracle predictor", err);
        var rows = Rows(dir);
        Assert.Equal(2 * 9, rows.Count);
        Assert.Equal(Enumerable.Repeat(1, 9).Concat(Enumerable.Repeat(2, 9)), rows.Select(r => r.GetProperty("batch").GetInt32()));
        var oracle = rows.Where(r => r.GetProperty("config").GetString()!.StartsWith("cache+oracle", StringComparison.Ordinal)).ToList();
        Assert.Equal(4, oracle.Count);
        Assert.All(oracle, r => Assert.Equal(1.0, r.GetProperty("prediction_recall").GetDouble()));
        Assert.Contains("| config | budget | batch |", File.ReadAllText(Path.Combine(dir, "results.md")));
    }
}
