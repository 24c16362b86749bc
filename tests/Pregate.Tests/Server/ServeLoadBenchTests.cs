// `pregate bench --serve-load` on the tiny synthetic model: one round per client count, each client gets exactly
// --gen-tokens tokens (ignore_eos), the concurrent round decodes in batches, and bad --clients lists are user errors.
using System.Text.Json;
using Pregate.Tests.Cli;
using Xunit.Abstractions;

namespace Pregate.Tests.Server;

public sealed class ServeLoadBenchTests(ITestOutputHelper output)
{
    private (int Code, string Out, string Err) Run(params string[] args) => CliRun.Run(output, args);

    [Fact(Timeout = 180_000)]
    public async Task EachRoundStreamsTheAskedTokensToEveryClient()
    {
        await Task.Yield();
        // The slow model and 48 tokens each: five streams overlap even on a fast machine (a tiny model finishes a
        // client's tokens before the next one's prompt is prefilled).
        const int tokens = 48;
        var (code, json, _) = Run("bench", "--serve-load", "--model", ServerTestSupport.SlowModel, "--clients", "1,5", "--gen-tokens", $"{tokens}",
            "--threads", "1", "--ctx", "256", "--json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(json);
        var rounds = doc.RootElement.GetProperty("rounds").EnumerateArray().ToArray();
        Assert.Equal([1, 5], rounds.Select(r => r.GetProperty("clients").GetInt32()));
        foreach (var r in rounds)
        {
            int clients = r.GetProperty("clients").GetInt32();
            Assert.Equal(clients * tokens, r.GetProperty("tokens").GetInt64());
            Assert.True(r.GetProperty("tok_s").GetDouble() > 0);
            Assert.True(r.GetProperty("ttft_p95_ms").GetDouble() >= r.GetProperty("ttft_p50_ms").GetDouble());
            Assert.Equal(0, r.GetProperty("expert_bytes_per_token").GetDouble());   // resident experts read nothing
        }
        Assert.Equal(1, rounds[0].GetProperty("mean_batch").GetDouble());
        Assert.True(rounds[1].GetProperty("mean_batch").GetDouble() > 1.5, "five concurrent clients should decode together");

        var (text, table, _) = Run("bench", "--serve-load", "--model", ServerTestSupport.TinyModel, "--clients", "2", "--gen-tokens", "3",
            "--threads", "1", "--ctx", "128");
        Assert.Equal(0, text);
        Assert.Contains("TTFT mean", table);
    }

    [Theory]
    [InlineData("0")]
    [InlineData("1,x")]
    [InlineData("300")]
    [InlineData(",")]
    public void ABadClientListIsAUserError(string clients)
    {
        var (code, _, err) = Run("bench", "--serve-load", "--model", ServerTestSupport.TinyModel, "--clients", clients, "--threads", "1");
        Assert.Equal(1, code);
        Assert.Contains("--clients", err);
    }
}
