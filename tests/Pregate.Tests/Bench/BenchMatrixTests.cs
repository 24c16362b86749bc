// `pregate bench` beyond one configuration: --ablation and budget/policy sweeps end to end on a tiny synthetic model
// (results.json rows, results.md table, chart.png), the per-layer figures of bench --json and --stats, the oracle in a
// single bench, the memory-capped path where cgroup v1 memory is writable, and exit code 2 for bad values.
using System.Text.Json;
using Pregate.Tests.Cli;
using Xunit.Abstractions;

namespace Pregate.Tests.Bench;

public sealed class BenchMatrixTests(ITestOutputHelper output) : IDisposable
{
    private static readonly byte[] PngSignature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];
    private static readonly string[] Workload = ["--prompt-tokens", "4", "--gen-tokens", "4", "--rounds", "1", "--threads", "1"];

    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-bench-matrix-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private (int Code, string Out, string Err) Run(params string[] args) => CliRun.Run(output, args);

    private string Tiny()
    {
        string path = Path.Combine(_dir, "tiny.gguf");
        if (!File.Exists(path)) Assert.Equal(0, Run("synth", "--shape", "tiny", "--out", path).Code);
        return path;
    }

    // results.json parsed, results.md with its table, chart.png a PNG: the rows as (config, budget, status).
    private static (JsonDocument Json, string Markdown) Outputs(string dir)
    {
        var png = File.ReadAllBytes(Path.Combine(dir, "chart.png"));
        Assert.True(png.Length > 1000);
        Assert.Equal(PngSignature, png[..8]);
        string md = File.ReadAllText(Path.Combine(dir, "results.md"));
        Assert.Contains("| config | budget | decode tok/s | prefill tok/s | hit rate | recall | precision | stall ms/token | io busy | bytes read/token | disk use | skipped u/v/b | peak memory |", md);
        return (JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "results.json"))), md);
    }

    private static List<(string Config, string Budget, string Status, JsonElement Row)> Rows(JsonDocument doc) =>
        doc.RootElement.GetProperty("rows").EnumerateArray()
            .Select(r => (r.GetProperty("config").GetString()!, r.GetProperty("budget").GetString()!, r.GetProperty("status").GetString()!, r)).ToList();

    [Fact]
    public void AblationRunsEveryConfigurationAndWritesJsonMarkdownAndChart()
    {
        string model = Tiny(), dir = Path.Combine(_dir, "ablation");
        var (code, text, err) = Run(["bench", "--model", model, "--ablation", "--expert-memory", "50%,75%", "--out", dir, .. Workload]);
        Assert.Equal(0, code);
        Assert.Contains("wrote ", err);
        Assert.StartsWith("# bench ablation", text);
        var (json, md) = Outputs(dir);
        Assert.Equal("ablation", json.RootElement.GetProperty("mode").GetString());
        var rows = Rows(json);
        string[] expected =
        [
            "on-demand",
            "cache@50%", "cache+next-gate@50%", "cache+next-gate (gated)@50%", "cache+pregate@50%", "cache+pregate (gated)@50%",
            "cache+oracle@50%", "cache+oracle (gated)@50%",
            "cache@75%", "cache+next-gate@75%", "cache+next-gate (gated)@75%", "cache+pregate@75%", "cache+pregate (gated)@75%",
            "cache+oracle@75%", "cache+oracle (gated)@75%",
            "resident@all",
        ];
        Assert.Equal(expected, rows.Select(r => r.Config == "on-demand" ? r.Config : $"{r.Config}@{r.Budget}"));
        foreach (var r in rows)
        {
            Assert.Equal(r.Config.StartsWith("cache+pregate", StringComparison.Ordinal) ? "skipped" : "ok", r.Status);
            Assert.Contains($"| {r.Config} | {r.Budget} |", md);
            if (r.Status != "ok") continue;
            Assert.True(r.Row.GetProperty("decode_tok_s").GetDouble() > 0);
            Assert.True(r.Row.GetProperty("peak_memory_bytes").ValueKind is JsonValueKind.Number or JsonValueKind.Null);
            var bench = r.Row.GetProperty("bench");
            Assert.Equal(r.Config == "resident" ? 0 : 2, bench.GetProperty("layers").GetArrayLength());
        }
        var oracle = rows.Where(r => r.Config.StartsWith("cache+oracle", StringComparison.Ordinal)).Select(r => r.Row).ToList();
        Assert.All(oracle, r => Assert.Equal(1.0, r.GetProperty("prediction_recall").GetDouble()));
        var onDemand = rows[0].Row;
        Assert.Equal(JsonValueKind.Null, onDemand.GetProperty("prediction_recall").ValueKind);
        Assert.Equal("lru", onDemand.GetProperty("cache_policy").GetString());
        // The on-demand run reads every expert of every decode step: disk figures of the decode loops, and its disk use
        // against the rate measured at start (a share, though a page-cache-backed temp folder can exceed 1).
        double disk = json.RootElement.GetProperty("disk_read_gb_s").GetDouble();
        double decodeBytes = onDemand.GetProperty("decode_bytes_read_per_token").GetDouble();
        output.WriteLine($"disk {disk:0.00} GB/s; on-demand decode reads {decodeBytes:0} B/token, disk use {onDemand.GetProperty("disk_use").GetDouble():P1}");
        Assert.True(disk > 0);
        Assert.True(decodeBytes > 0);
        Assert.True(onDemand.GetProperty("disk_use").GetDouble() > 0);
        Assert.Equal(JsonValueKind.Null, rows[^1].Row.GetProperty("disk_use").ValueKind);
        Assert.Contains("| disk use |", md);
        Assert.Contains("no calibrated predictor", rows[4].Row.GetProperty("note").GetString());
        Assert.Contains("no calibrated predictor", rows[5].Row.GetProperty("note").GetString());
    }

    [Fact]
    public void BudgetSweepRunsEachBudgetAndPolicy()
    {
        string model = Tiny(), dir = Path.Combine(_dir, "sweep");
        var (code, text, _) = Run(["bench", "--model", model, "--expert-memory", "10%,50%,all", "--cache", "lru,score", "--predictor", "none", "--json", "--out", dir, .. Workload]);
        Assert.Equal(0, code);
        var (json, _) = Outputs(dir);
        Assert.Equal(File.ReadAllText(Path.Combine(dir, "results.json")), text); // --json prints results.json
        Assert.Equal("sweep", json.RootElement.GetProperty("mode").GetString());
        var rows = Rows(json);
        // 10% is below the tiny model's minimum (two slots): skipped with a note, not a failure.
        Assert.Equal(["lru@10%:skipped", "score@10%:skipped", "lru@50%:ok", "score@50%:ok", "resident@all:ok"],
            rows.Select(r => $"{r.Config}@{r.Budget}:{r.Status}"));
        Assert.Contains("minimum", rows[0].Row.GetProperty("note").GetString());
        Assert.Equal("score", rows[3].Row.GetProperty("bench").GetProperty("cache_policy").GetString());
        Assert.InRange(rows[2].Row.GetProperty("expert_hit_rate").GetDouble(), 0, 1);
    }

    [Fact]
    public void SingleBenchJsonHasTheExpertFiguresPerLayerAndTheOracleRecallsEverything()
    {
        string model = Tiny();
        var (code, text, err) = Run(["bench", "--model", model, "--json", "--expert-memory", "50%", "--predictor", "oracle", .. Workload]);
        Assert.Equal(0, code);
        Assert.Contains("predictor oracle", err);
        var r = JsonDocument.Parse(text).RootElement;
        foreach (string field in (string[])["expert_hit_rate", "bytes_read_per_token", "stall_ms_per_token", "io_busy_fraction", "prediction_recall",
                     "prediction_precision", "prefetch_bytes_wasted", "peak_rss_bytes", "expert_memory_bytes"])
            Assert.True(r.TryGetProperty(field, out _), field);
        Assert.Equal(1.0, r.GetProperty("prediction_recall").GetDouble());
        var layers = r.GetProperty("layers").EnumerateArray().ToList();
        Assert.Equal(2, layers.Count);
        Assert.Equal(r.GetProperty("expert_bytes_read_per_token").GetDouble(), layers.Sum(l => l.GetProperty("bytes_read_per_token").GetDouble()), 6);

        var (tcode, table, _) = Run(["bench", "--model", model, "--stats", "--expert-memory", "50%", "--predictor", "next-gate", .. Workload]);
        Assert.Equal(0, tcode);
        Assert.Contains("layer   uses  hit rate", table);
        Assert.Matches(@"\ntotal\s+\d+", table);

        var (lcode, _, lerr) = Run("logits", "--model", model, "--tokens", "1,2,3", "--expert-memory", "50%", "--predictor", "oracle");
        Assert.Equal(1, lcode);
        Assert.Contains("only pregate bench records one", lerr);
    }

    [Fact]
    public void RunStatsPrintsAPerLayerTable()
    {
        var (code, _, err) = Run("run", "--model", Tiny(), "--prompt", "Hi", "-n", "4", "--temperature", "0", "--expert-memory", "50%", "--stats");
        Assert.Equal(0, code);
        Assert.Contains("layer   uses  hit rate  misses", err);
        Assert.Matches(@"\n0\s+\d+\s+\d+\.\d%", err);
        Assert.Matches(@"\n1\s+\d+\s+\d+\.\d%", err);
        Assert.Matches(@"\ntotal\s+\d+", err);
    }

    [Theory]
    [InlineData("--expert-memory", "10%,abc", "--expert-memory")]
    [InlineData("--memory-cap", "0", "--memory-cap")]
    [InlineData("--cache", "lru,fifo", "--cache")]
    public void BadValuesAreUsageErrors(string option, string value, string mentioned)
    {
        // --ablation picks its own policies, so a policy list is checked as a sweep.
        string[] mode = option == "--cache" ? [] : ["--ablation"];
        var (code, _, err) = Run(["bench", "--model", Tiny(), .. mode, option, value, .. Workload]);
        Assert.Equal(2, code);
        Assert.Contains("error: " + mentioned, err);
    }

    [Fact]
    public void MemoryCapNeedsAMatrix()
    {
        var (code, _, err) = Run(["bench", "--model", Tiny(), "--memory-cap", "1GiB", .. Workload]);
        Assert.Equal(2, code);
        Assert.Contains("--ablation", err);
    }

    [Fact]
    public void MemoryCappedSweepRunsChildrenInCgroups()
    {
        const string root = "/sys/fs/cgroup/memory";
        string probe = Path.Combine(root, $"pregate-test-probe-{Environment.ProcessId}");
        try
        {
            Directory.CreateDirectory(probe);
            Directory.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            output.WriteLine($"skipped: cgroup v1 memory is not writable here ({root}: {e.Message})");
            return;
        }
        string model = Tiny(), dir = Path.Combine(_dir, "capped");
        // The children get the engine options of the command line: here misses computed in place, so nothing is read.
        var (code, _, _) = Run(["bench", "--model", model, "--expert-memory", "50%,all", "--memory-cap", "1GiB", "--on-miss", "compute", "--predictor", "none",
            "--out", dir, .. Workload]);
        Assert.Equal(0, code);
        var (json, md) = Outputs(dir);
        Assert.Equal(1L << 30, json.RootElement.GetProperty("memory_cap_bytes").GetInt64());
        Assert.Contains("cgroup memory cap", md);
        Assert.Contains("Missed experts: --on-miss compute.", md);
        var offloaded = Rows(json).First(r => r.Budget == "50%").Row.GetProperty("bench");
        Assert.True(offloaded.GetProperty("computed_in_place").GetInt64() > 0);
        Assert.Equal(0, offloaded.GetProperty("bytes_read_per_token").GetDouble());
        foreach (var r in Rows(json))
        {
            Assert.Equal("ok", r.Status);
            long peak = r.Row.GetProperty("peak_memory_bytes").GetInt64();
            output.WriteLine($"{r.Config} {r.Budget}: cgroup peak {peak} bytes, limit hits {r.Row.GetProperty("memory_limit_hits")}");
            Assert.InRange(peak, 1, 1L << 30);
        }
        Assert.Empty(Directory.GetDirectories(root, $"pregate-bench-{Environment.ProcessId}-*"));
    }
}
