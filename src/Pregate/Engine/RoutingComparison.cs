// `pregate eval --reference`: how much a model (e.g. a quantized copy) changes behaviour against a reference model on the
// same tokens — per layer, the share of tokens whose top-k expert set equals the reference's (each model routes on its own
// hidden states), the share of positions whose greedy next token differs, and the mean KL divergence of the model's
// next-token distribution from the reference's (llama.cpp's perplexity tool reports the same KL(reference ‖ model)).
using Pregate.Models;

namespace Pregate.Engine;

/// <summary>
/// Per-layer top-k routing agreement, greedy next-token change rate and mean KL(reference ‖ model) in nats over
/// <see cref="Tokens"/> positions.
/// </summary>
public sealed record RoutingComparisonReport(int Tokens, IReadOnlyList<double> LayerAgreement, double MeanAgreement, double GreedyChangeRate,
    double MeanKlDivergence);

public static class RoutingComparison
{
    /// <summary>
    /// Runs both models on the first <paramref name="maxTokens"/> tokens of <paramref name="text"/> (tokenized by
    /// <paramref name="model"/>'s tokenizer), in windows of <paramref name="window"/> tokens from an empty cache; each window
    /// as one prefill, or for <paramref name="model"/> token by token (decode steps) when <paramref name="stepwise"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The models differ in vocabulary, layers or top-k, or the text has no token.</exception>
    public static RoutingComparisonReport Run(ModelSession model, ModelSession reference, string text, int maxTokens, int window, IProgress<string>? progress = null,
        bool stepwise = false)
    {
        var c = model.Config;
        var r = reference.Config;
        if (c.VocabSize != r.VocabSize || c.NumLayers != r.NumLayers || c.NumExpertsUsed != r.NumExpertsUsed || c.NumExperts != r.NumExperts)
            throw new ArgumentException("the reference must have the model's vocabulary, layers and experts (a copy in another format or precision)");
        var ids = model.Tokenizer.Encode(text, addBos: false).Take(maxTokens).ToArray();
        if (ids.Length < 1) throw new ArgumentException("the text has no tokens");
        window = Math.Min(window, Math.Min(model.State.Context, reference.State.Context));
        var agree = new long[c.NumLayers];
        long changed = 0;
        double kl = 0;
        for (int start = 0; start < ids.Length; start += window)
        {
            var block = ids.AsSpan(start, Math.Min(window, ids.Length - start));
            var (routesA, logitsA) = RunWindow(model, block, stepwise);
            var (routesB, logitsB) = RunWindow(reference, block, stepwise: false);
            int k = c.NumExpertsUsed, v = c.VocabSize;
            for (int t = 0; t < block.Length; t++)
            {
                for (int l = 0; l < c.NumLayers; l++)
                    if (routesA[l].AsSpan(t * k, k).SequenceEqual(routesB[l].AsSpan(t * k, k))) agree[l]++;
                if (Sampler.ArgMax(logitsA.AsSpan(t * v, v)) != Sampler.ArgMax(logitsB.AsSpan(t * v, v))) changed++;
                kl += KlDivergence(logitsB.AsSpan(t * v, v), logitsA.AsSpan(t * v, v));
            }
            progress?.Report($"compared {start + block.Length}/{ids.Length} tokens");
        }
        var layers = agree.Select(a => (double)a / ids.Length).ToArray();
        return new RoutingComparisonReport(ids.Length, layers, layers.Average(), (double)changed / ids.Length, kl / ids.Length);
    }

    /// <summary>
    /// KL(p ‖ q) = Σ_v p_v (log p_v − log q_v) in nats, p = softmax(<paramref name="reference"/>), q = softmax(<paramref name="logits"/>),
    /// in double precision.
    /// </summary>
    public static double KlDivergence(ReadOnlySpan<float> reference, ReadOnlySpan<float> logits)
    {
        if (reference.Length != logits.Length) throw new ArgumentException($"{reference.Length} reference logits but {logits.Length} logits");
        double lseP = LogSumExp(reference), lseQ = LogSumExp(logits), sum = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            double logP = reference[i] - lseP;
            sum += Math.Exp(logP) * (logP - (logits[i] - lseQ));
        }
        return Math.Max(sum, 0);
    }

    private static double LogSumExp(ReadOnlySpan<float> x)
    {
        double max = double.NegativeInfinity;
        foreach (float v in x) max = Math.Max(max, v);
        double sum = 0;
        foreach (float v in x) sum += Math.Exp(v - max);
        return max + Math.Log(sum);
    }

    // All-position logits [n, V] and, per layer, each token's chosen experts sorted ascending [n, k].
    private static (int[][] Routes, float[] Logits) RunWindow(ModelSession s, ReadOnlySpan<int> tokens, bool stepwise)
    {
        var c = s.Config;
        var rec = new Recorder(c.NumLayers, tokens.Length, c.NumExpertsUsed);
        var logits = new float[(long)tokens.Length * c.VocabSize];
        var old = s.Model.Observer;
        try
        {
            s.Model.Observer = rec;
            s.State.Reset();
            if (!stepwise) s.Model.Forward(s.State, tokens, logits, allPositions: true, s.Team);
            else
                for (int t = 0; t < tokens.Length; t++) s.Model.Forward(s.State, tokens[t], logits.AsSpan(t * c.VocabSize, c.VocabSize), s.Team);
        }
        finally
        {
            s.Model.Observer = old;
        }
        return (rec.Routes, logits);
    }

    private sealed class Recorder(int layers, int tokens, int k) : IForwardObserver
    {
        public readonly int[][] Routes = Enumerable.Range(0, layers).Select(_ => new int[tokens * k]).ToArray();

        public void OnTensor(string name, int layer, int position, ReadOnlySpan<float> values) { }

        public void OnRouting(int layer, int position, ReadOnlySpan<float> probs, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights)
        {
            var dst = Routes[layer].AsSpan(position * k, k);
            ids.CopyTo(dst);
            dst.Sort();
        }
    }
}
