// Sampling: greedy, seeded reproducibility, top-k / top-p / min-p truncation, temperature, repetition penalty,
// and stop strings cutting streamed text.
using System.Text;
using Pregate.Engine;
using Xunit.Abstractions;

namespace Pregate.Tests.Engine;

public sealed class SamplerTests(ITestOutputHelper output)
{
    private static readonly float[] Logits = [1.0f, 3.0f, 2.5f, -1.0f, 3.0f, 0.0f];

    [Fact]
    public void GreedyTakesTheLargestLogitWithTiesToTheLowerId()
    {
        var s = new Sampler(SamplingOptions.Greedy, Logits.Length);
        Assert.Equal(1, s.Sample(Logits, []));
    }

    [Fact]
    public void TheSameSeedGivesTheSameDraws()
    {
        var o = new SamplingOptions { Temperature = 1.5f, TopK = 0, TopP = 1, MinP = 0, Seed = 42 };
        var a = new Sampler(o, Logits.Length);
        var b = new Sampler(o, Logits.Length);
        var c = new Sampler(o with { Seed = 43 }, Logits.Length);
        var da = Enumerable.Range(0, 64).Select(_ => a.Sample(Logits, [])).ToArray();
        var db = Enumerable.Range(0, 64).Select(_ => b.Sample(Logits, [])).ToArray();
        var dc = Enumerable.Range(0, 64).Select(_ => c.Sample(Logits, [])).ToArray();
        Assert.Equal(da, db);
        Assert.NotEqual(da, dc);
    }

    [Fact]
    public void DrawsFollowTheSoftmaxAtTemperatureOne()
    {
        var s = new Sampler(new SamplingOptions { Temperature = 1, TopK = 0, TopP = 1, MinP = 0, Seed = 7 }, Logits.Length);
        const int n = 200_000;
        var counts = new int[Logits.Length];
        for (int i = 0; i < n; i++) counts[s.Sample(Logits, [])]++;
        double z = Logits.Sum(l => Math.Exp(l));
        double worst = 0;
        for (int i = 0; i < Logits.Length; i++)
        {
            double p = Math.Exp(Logits[i]) / z, f = (double)counts[i] / n;
            double sigma = Math.Sqrt(p * (1 - p) / n);
            worst = Math.Max(worst, Math.Abs(f - p) / sigma);
        }
        output.WriteLine($"largest deviation from softmax: {worst:0.00} standard errors over {n} draws");
        Assert.True(worst < 5, $"frequencies deviate by {worst:0.00} standard errors");
    }

    [Fact]
    public void TruncationKeepsOnlyTheAllowedTokens()
    {
        HashSet<int> Drawn(SamplingOptions o)
        {
            var s = new Sampler(o with { Temperature = 5, Seed = 1 }, Logits.Length);
            return Enumerable.Range(0, 4000).Select(_ => s.Sample(Logits, [])).ToHashSet();
        }
        var none = new SamplingOptions { TopK = 0, TopP = 1, MinP = 0 };
        Assert.Equal(6, Drawn(none).Count);
        Assert.Equal([1, 4], Drawn(none with { TopK = 2 }).Order());
        // softmax: ids 1 and 4 hold 0.356 each, id 2 0.216: top-p 0.5 keeps two of them, 0.75 three.
        Assert.Equal([1, 4], Drawn(none with { TopP = 0.5f }).Order());
        Assert.Equal([1, 2, 4], Drawn(none with { TopP = 0.75f }).Order());
        // min-p 0.5: keep exp(l - 3) ≥ 0.5, i.e. logits ≥ 3 - ln 2 ≈ 2.31.
        Assert.Equal([1, 2, 4], Drawn(none with { MinP = 0.5f }).Order());
    }

    [Fact]
    public void RepetitionPenaltyDemotesRecentTokens()
    {
        var s = new Sampler(SamplingOptions.Greedy with { RepetitionPenalty = 2f }, Logits.Length);
        Assert.Equal(2, s.Sample(Logits, [1, 4])); // 3/2 = 1.5 < 2.5
        Assert.Equal(1, s.Sample(Logits, [4]));
        var far = new Sampler(SamplingOptions.Greedy with { RepetitionPenalty = 2f, RepetitionWindow = 1 }, Logits.Length);
        Assert.Equal(4, far.Sample(Logits, [4, 1])); // only the last token (1) is penalised: 4 is outside the window
    }

    [Theory]
    [InlineData(-1f, 40, 0.9f, 0f, 1f)]
    [InlineData(1f, 40, 0f, 0f, 1f)]
    [InlineData(1f, 40, 1.5f, 0f, 1f)]
    [InlineData(1f, 40, 0.9f, 1f, 1f)]
    [InlineData(1f, 40, 0.9f, 0f, 0f)]
    [InlineData(float.NaN, 40, 0.9f, 0f, 1f)]
    public void InvalidSettingsAreRejected(float t, int k, float p, float minP, float penalty)
    {
        var o = new SamplingOptions { Temperature = t, TopK = k, TopP = p, MinP = minP, RepetitionPenalty = penalty };
        Assert.Throws<ArgumentException>(() => new Sampler(o, 10));
    }

    [Fact]
    public void StopStringsCutTheStreamAndHoldBackPartialMatches()
    {
        var m = new StopMatcher(["</end>", "STOP"]);
        var all = new StringBuilder();
        var streamed = new List<string>();
        Assert.False(m.Push("Hello </e", all, streamed.Add));
        Assert.Equal("Hello ", all.ToString()); // "</e" may start "</end>": held back
        Assert.False(m.Push("x", all, streamed.Add));
        Assert.Equal("Hello </ex", all.ToString());
        Assert.False(m.Push(" and ST", all, streamed.Add));
        Assert.True(m.Push("OP there", all, streamed.Add));
        Assert.Equal("Hello </ex and ", all.ToString());
        Assert.Equal(all.ToString(), string.Concat(streamed));
        m.Finish(all, streamed.Add);
        Assert.Equal("Hello </ex and ", all.ToString());
    }
}
