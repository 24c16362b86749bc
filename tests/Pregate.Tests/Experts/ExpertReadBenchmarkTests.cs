// The expert read benchmark behind `pregate bench --io`: both modes move the same aligned bytes per expert, every round
// reports positive rates, bad counts are rejected, and the command prints the rates of a real GGUF.
using Pregate.Experts;
using Xunit.Abstractions;

namespace Pregate.Tests.Experts;

public sealed class ExpertReadBenchmarkTests(ITestOutputHelper output) : IDisposable
{
    private readonly DiskFolder _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void BothModesReadEveryExpertAndReportRates()
    {
        var model = new StackedExpertFile(_dir, "model.bin", layers: 3, experts: 8, partBytes: [30000, 50000, 41000], headerBytes: 1234, seed: 2);
        var rounds = ExpertReadBenchmark.Run(model.Layout, expertsPerRound: 6, inFlight: 3, rounds: 3, seed: 5);
        foreach (var r in rounds)
            output.WriteLine($"{r.Experts} experts, {r.Bytes} bytes: part reads {r.PartReadsBytesPerSecond / 1e6:0.0} MB/s, one read {r.OneReadBytesPerSecond / 1e6:0.0} MB/s, speedup {r.Speedup:0.000}");
        Assert.Equal(3, rounds.Count);
        Assert.All(rounds, r =>
        {
            Assert.Equal(6, r.Experts);
            Assert.True(r.PartReadsBytesPerSecond > 0 && r.OneReadBytesPerSecond > 0);
            Assert.InRange(r.Bytes, 6L * (30000 + 50000 + 41000), 6L * (30000 + 50000 + 41000 + 3 * 2 * 4096));
        });
        Assert.Throws<ArgumentOutOfRangeException>(() => ExpertReadBenchmark.Run(model.Layout, expertsPerRound: 13, inFlight: 1, rounds: 1, seed: 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => ExpertReadBenchmark.Run(model.Layout, expertsPerRound: 2, inFlight: 0, rounds: 1, seed: 1));
    }

    [Fact]
    public void BenchIoPrintsBothRates()
    {
        string path = _dir.File("tiny.gguf");
        Assert.Equal(0, Pregate.Cli.Cli.Run(["synth", "--shape", "tiny", "--out", path], new StringWriter(), new StringWriter()));
        var o = new StringWriter();
        var e = new StringWriter();
        Assert.Equal(0, Pregate.Cli.Cli.Run(["bench", "--io", "--model", path, "--rounds", "2"], o, e));
        output.WriteLine(e.ToString() + o);
        Assert.Matches(@"part reads \(current layout\): [\d.]+–[\d.]+–[\d.]+ GB/s; one read per expert \(expert-major\): [\d.]+–[\d.]+–[\d.]+ GB/s; speedup", o.ToString());
    }
}
