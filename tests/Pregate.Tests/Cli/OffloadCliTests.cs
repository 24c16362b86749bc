// The engine options of offloading on the command line: run --expert-memory 30% --stats, logits identical with and
// without offloading under every miss policy, budgets covering every expert and the default meaning resident (and saying
// so), the placement line on stderr, and clear errors for bad budgets, policies and miss policies.
using System.Text.Json;
using Xunit.Abstractions;

namespace Pregate.Tests.Cli;

public sealed class OffloadCliTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pregate-offload-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private (int Code, string Out, string Err) Run(params string[] args) => CliRun.Run(output, args, logStdout: false);

    private string Tiny()
    {
        string path = Path.Combine(_dir, "tiny.gguf");
        Assert.Equal(0, Run("synth", "--shape", "tiny", "--out", path).Code);
        return path;
    }

    [Fact]
    public void InterleaveOnAndOffGiveTheSameLogitsAndSaySo()
    {
        string path = Path.Combine(_dir, "tiny-q8_0.gguf");
        Assert.Equal(0, Run("synth", "--shape", "tiny", "--dtype", "q8_0", "--out", path).Code);
        const string tokens = "1,5,9,33";
        var (code, plain, err) = Run("logits", "--model", path, "--tokens", tokens, "--expert-memory", "all", "--interleave", "off");
        Assert.Equal(0, code);
        Assert.Matches(@"experts: resident \(all .+ mapped\)", err);
        var (ocode, packed, oerr) = Run("logits", "--model", path, "--tokens", tokens, "--expert-memory", "all", "--interleave", "on");
        Assert.Equal(0, ocode);
        Assert.Equal(plain, packed);
        if (Pregate.Kernels.VecDot.UseAvx2) Assert.Matches(@"experts: resident \(all .+; .+ of Q8_0/Q4_0 weights copied into interleaved rows\)", oerr);
        var (bad, _, berr) = Run("logits", "--model", path, "--tokens", tokens, "--interleave", "sometimes");
        Assert.NotEqual(0, bad);
        Assert.Contains("--interleave must be auto, on or off, not 'sometimes'", berr);
    }

    [Fact]
    public void RunWithAnExpertBudgetPrintsThePlacementAndStatistics()
    {
        string path = Tiny();
        var (code, text, err) = Run("run", "--model", path, "--prompt", "Hello", "-n", "12", "--temperature", "0",
            "--expert-memory", "30%", "--cache", "lfu", "--stats");
        Assert.Equal(0, code);
        Assert.StartsWith("Hello", text);
        Assert.Contains("experts: offloaded, budget", err);
        Assert.Contains("policy lfu", err);
        Assert.Matches(@"experts: \d+\.\d% hits \(\d+ misses of \d+ uses over \d+ tokens\), .+ read \(.+/token\), stall .+ ms/token, I/O busy \d+%", err);

        var (ccode, ctext, cerr) = Run("run", "--model", path, "--prompt", "Hello", "-n", "12", "--temperature", "0",
            "--expert-memory", "30%", "--on-miss", "compute", "--predictor", "none", "--stats");
        Assert.Equal(0, ccode);
        Assert.Equal(text, ctext);
        Assert.Contains("on miss compute", cerr);
        Assert.Matches(@"experts: .+ 0 B read .+, \d+ computed in place \(.+ from the map\)", cerr);

        var (rcode, _, rerr) = Run("run", "--model", path, "--prompt", "Hello", "-n", "4", "--expert-memory", "all", "--stats");
        Assert.Equal(0, rcode);
        Assert.Contains("experts: resident (all ", rerr);
        Assert.Contains("experts: resident, no expert I/O", rerr);
    }

    [Fact]
    public void LogitsAreTheSameTextWithAndWithoutOffloading()
    {
        string path = Tiny();
        const string tokens = "1,5,9,33,100,7,250,3,3,3,17,200";
        var (code, resident, _) = Run("logits", "--model", path, "--tokens", tokens, "--expert-memory", "all");
        Assert.Equal(0, code);
        foreach (string budget in new[] { "30%", "60%", "90%" })
            foreach (string policy in new[] { "lru", "score" })
                foreach (string onMiss in new[] { "load", "compute", "auto" })
                {
                    var (c, offloaded, err) = Run("logits", "--model", path, "--tokens", tokens, "--expert-memory", budget, "--cache", policy, "--on-miss", onMiss);
                    Assert.Equal(0, c);
                    Assert.Contains("experts: offloaded", err);
                    if (onMiss != "load") Assert.Contains($"on miss {onMiss}", err);
                    Assert.Equal(resident, offloaded);
                }
        Assert.Equal(12, JsonDocument.Parse(resident).RootElement.GetProperty("logits").GetArrayLength());

        var (scode, withStats, serr) = Run("logits", "--model", path, "--tokens", tokens, "--expert-memory", "30%", "--stats");
        Assert.Equal(0, scode);
        Assert.Equal(resident, withStats);
        Assert.Matches(@"forward: 12 tokens in \d+\.\d+ s, \d+\.\d+ tok/s", serr);
        Assert.Contains("over 12 tokens", serr);
    }

    [Fact]
    public void ABudgetCoveringEveryExpertAndTheDefaultAreResidentAndSaySo()
    {
        string path = Tiny();
        const string tokens = "1,5,9,33";
        var (code, resident, _) = Run("logits", "--model", path, "--tokens", tokens, "--expert-memory", "all");
        Assert.Equal(0, code);
        foreach (string budget in new[] { "100%", "1GiB" })
        {
            var (c, text, err) = Run("logits", "--model", path, "--tokens", tokens, "--expert-memory", budget, "--stats");
            Assert.Equal(0, c);
            Assert.Matches(@"experts: resident \(all .+ mapped; budget .+ covers every expert\)", err);
            Assert.Contains("experts: resident, no expert I/O", err);
            Assert.Equal(resident, text);
        }
        // No option: this small model fits in the memory available, so it is resident, and the line says why.
        var (dcode, dtext, derr) = Run("logits", "--model", path, "--tokens", tokens);
        Assert.Equal(0, dcode);
        Assert.Matches(@"experts: resident \(all .+ mapped\); chosen for .+ available", derr);
        Assert.Equal(resident, dtext);
    }

    [Fact]
    public void BadOffloadOptionsAreUserErrors()
    {
        string path = Tiny();
        var cases = new (string[] Args, string Expect)[]
        {
            (["run", "--model", path, "--expert-memory", "lots"], "--expert-memory: 'lots' is not a size"),
            (["run", "--model", path, "--expert-memory", "150%"], "at most 100%"),
            (["run", "--model", path, "--expert-memory", "1KiB"], "minimum"),
            (["logits", "--model", path, "--tokens", "1", "--expert-memory", "1%"], "minimum"),
            (["run", "--model", path, "--cache", "fifo"], "--cache must be lru, lfu or score"),
            (["run", "--model", path, "--on-miss", "later"], "--on-miss must be load, compute, auto or low-precision, not 'later'"),
            (["run", "--model", path, "--expert-memory", "12"], "minimum"), // 12 bytes
            (["run", "--model", path, "--expert-memory", "-5%"], "--expert-memory: '-5%' is not a percentage"),
            (["run", "--model", path, "--expert-memory", "1e9"], "--expert-memory: 'e9' in '1e9' is not a size unit"),
        };
        foreach (var (args, expect) in cases)
        {
            var (code, _, err) = Run(args);
            Assert.Equal(1, code);
            Assert.Contains(expect, err);
            Assert.DoesNotContain("   at ", err);
        }
    }
}
