// The pre-gate fit on a structured synthetic routing whose answer is known: layer 1 routes by next-gate's map, plus a
// linear correction, plus a push from the experts layer 0 chose, plus noise. The fit must beat next-gate on held-out rows,
// use layer 0's routing, stay deterministic, and with little data stay at least as good as next-gate.
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts.Prediction;
using Pregate.Kernels;
using Xunit.Abstractions;

namespace Pregate.Tests.Prediction;

public sealed class PregateFitTests(ITestOutputHelper output)
{
    private const int Hidden = 24, Experts = 8, K = 2;

    // The structure: router 0 = A, next-gate prior = R, layer 1 logits = R·x + Δ·x + 2.5·C·g0 + noise.
    private sealed class World
    {
        public readonly float[] A = Random(Experts * Hidden, 1, "A");
        public readonly float[] R = Random(Experts * Hidden, 1, "R");
        public readonly float[] Delta = Random(Experts * Hidden, 0.4f, "delta");

        public RoutingSamples Sample(int count, string stream)
        {
            var s = new RoutingSamples(count, 2, Hidden, Experts, K, keepRaw: false);
            var rng = new SeededRandom(11, stream);
            var logits = new float[Experts];
            var g = new float[Experts];
            var ids = new int[K];
            var vals = new float[K];
            var h = new float[Hidden];
            for (int r = 0; r < count; r++)
            {
                for (int j = 0; j < Hidden; j++) h[j] = rng.NextSigned();
                var x = s.Inputs[0].AsSpan(r * Hidden, Hidden);
                ElementOps.RmsNorm(h, 1e-5f, x);
                x.CopyTo(s.Inputs[1].AsSpan(r * Hidden, Hidden));
                for (int e = 0; e < Experts; e++) logits[e] = 2 * ElementOps.Dot(A.AsSpan(e * Hidden, Hidden), x);
                Store(s, 0, r, logits, ids, vals);
                LinearPregate.GateFeatures(logits, K, g);
                for (int e = 0; e < Experts; e++)
                    logits[e] = ElementOps.Dot(R.AsSpan(e * Hidden, Hidden), x) + ElementOps.Dot(Delta.AsSpan(e * Hidden, Hidden), x)
                        + 2.5f * g[(e + 3) % Experts] + 0.3f * rng.NextSigned();
                Store(s, 1, r, logits, ids, vals);
            }
            return s;
        }

        private static void Store(RoutingSamples s, int layer, int row, float[] logits, int[] ids, float[] vals)
        {
            float mean = logits.Average();
            for (int e = 0; e < Experts; e++) s.Targets[layer][row * Experts + e] = logits[e] - mean;
            ElementOps.TopK(logits, K, ids, vals);
            ids.CopyTo(s.Chosen[layer].AsSpan(row * K, K));
        }

        private static float[] Random(int n, float scale, string stream)
        {
            var v = new float[n];
            var rng = new SeededRandom(7, stream);
            for (int i = 0; i < n; i++) v[i] = scale * rng.NextSigned();
            return v;
        }
    }

    // Held-out recall of layer 1's top-k among the map's top k (from layer 0's inputs and routing).
    private static double Recall(RoutingSamples held, float[] w, float[]? gateWeights, float[] bias)
    {
        var scores = new float[Experts];
        var g = new float[Experts];
        var ids = new int[K];
        var vals = new float[K];
        var hits = new long[1];
        for (int r = 0; r < held.Count; r++)
        {
            var x = held.Input(0, r);
            LinearPregate.GateFeatures(held.Target(0, r), K, g);
            for (int e = 0; e < Experts; e++)
            {
                scores[e] = bias[e] + ElementOps.Dot(w.AsSpan(e * Hidden, Hidden), x);
                if (gateWeights is not null) scores[e] += ElementOps.Dot(gateWeights.AsSpan(e * Experts, Experts), g);
            }
            ElementOps.TopK(scores, K, ids, vals);
            PregateFit.CountHits(ids, held.Routed(1, r), K, hits);
        }
        return hits[0] / (double)(held.Count * K);
    }

    [Fact]
    public void TheFitBeatsNextGateAndUsesTheSourceLayersRouting()
    {
        var world = new World();
        var train = world.Sample(4000, "train");
        var held = world.Sample(1000, "held");
        var fit = PregateFit.Fit(train, 0, 1, world.R, new FitSettings());
        var ridgeOnly = PregateFit.Fit(train, 0, 1, world.R, new FitSettings { Epochs = 0 });
        var noGates = PregateFit.Fit(train, 0, 1, world.R, new FitSettings { GateFeatures = false });
        double nextGate = Recall(held, world.R, null, new float[Experts]);
        double full = Recall(held, fit.Weights, fit.GateWeights, fit.Bias);
        double ridge = Recall(held, ridgeOnly.Weights, ridgeOnly.GateWeights, ridgeOnly.Bias);
        double linear = Recall(held, noGates.Weights, noGates.GateWeights, noGates.Bias);
        output.WriteLine($"held-out top-{K} recall: next-gate {nextGate:P1}, ridge {ridge:P1} (λ {ridgeOnly.Ridge:g2}), " +
            $"ridge+refinement {full:P1} ({fit.Epochs} epochs), without gate features {linear:P1}");
        Assert.NotNull(fit.GateWeights);
        Assert.Null(noGates.GateWeights);
        // The structure is learnable: demand clear gains (measured: about +20 points over next-gate, +10 from the gates).
        Assert.True(full >= nextGate + 0.05, $"fit {full:P1} vs next-gate {nextGate:P1}");
        Assert.True(full >= linear + 0.02, $"with gate features {full:P1} vs without {linear:P1}");
        Assert.True(full >= ridge - 0.005, $"refinement {full:P1} fell below ridge {ridge:P1} by more than 0.5 points");
    }

    [Fact]
    public void WithLittleDataTheFitIsNoWorseThanNextGate()
    {
        var world = new World();
        var held = world.Sample(2000, "held");
        double nextGate = Recall(held, world.R, null, new float[Experts]);
        foreach (int rows in new[] { 200, 500 })
        {
            var fit = PregateFit.Fit(world.Sample(rows, $"small{rows}"), 0, 1, world.R, new FitSettings());
            double recall = Recall(held, fit.Weights, fit.GateWeights, fit.Bias);
            output.WriteLine($"{rows} training rows: fit {recall:P1} (λ {fit.Ridge:g2}, {fit.Epochs} epochs), next-gate {nextGate:P1}");
            Assert.True(recall >= nextGate - 0.005, $"{rows} rows: fit {recall:P1} is worse than next-gate {nextGate:P1} (tolerance 0.5 points)");
        }
    }

    [Fact]
    public void TheFitIsDeterministic()
    {
        var world = new World();
        var train = world.Sample(1500, "train");
        var a = PregateFit.Fit(train, 0, 1, world.R, new FitSettings { MaxEpochs = 50 });
        var b = PregateFit.Fit(train, 0, 1, world.R, new FitSettings { MaxEpochs = 50 });
        output.WriteLine($"λ {a.Ridge:g2}, {a.Epochs} epochs");
        Assert.Equal(a.Weights, b.Weights);
        Assert.Equal(a.GateWeights, b.GateWeights);
        Assert.Equal(a.Bias, b.Bias);
        Assert.Equal((a.Ridge, a.Epochs), (b.Ridge, b.Epochs));
    }
}
