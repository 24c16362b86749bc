// `pregate eval`: perplexity of a model on a text, and statistics of its routing there — per layer, how often consecutive
// tokens reuse an expert, how evenly load spreads, how well next-gate predicts the next layer, and what an LRU cache of
// a given number of slots per layer would hit.
using Pregate.Experts.Prediction;
using Pregate.Kernels;
using Pregate.Models;

namespace Pregate.Engine;

public sealed record LayerRoutingStats(
    int Layer,
    double ConsecutiveReuse,      // P(an expert of token t is also chosen at t−1)
    double LoadMaxOverMean,       // busiest expert's share / the mean share (1 = perfectly even)
    double LoadEntropyRatio,      // entropy of the load / log E
    double? NextGateRecallTopK,   // recall of this layer's experts from the previous layer's state (null for layer 0)
    double? NextGateRecallTopKPlus1,
    IReadOnlyDictionary<int, double> LruHitRate); // slots per layer → hit rate

public sealed record RoutingReport(int Tokens, double Perplexity, double NllPerToken, IReadOnlyList<LayerRoutingStats> Layers);

public static class RoutingAnalysis
{
    /// <summary>Runs <paramref name="text"/> through the model in windows and gathers the statistics.</summary>
    public static RoutingReport Run(ModelSession s, string text, int maxTokens, int window, IReadOnlyList<int> lruSlots, IProgress<string>? progress = null)
    {
        var c = s.Config;
        var ids = s.Tokenizer.Encode(text, addBos: false).Take(maxTokens).ToArray();
        if (ids.Length < 2) throw new ArgumentException("the text is too short: it needs at least two tokens");
        window = Math.Min(window, s.State.Context);
        var rec = new Recorder(c.NumLayers, c.HiddenSize);
        var nextGate = new NextGatePredictor(s.Checkpoint, 1);
        int k = c.NumExpertsUsed, e = c.NumExperts;
        var load = new long[c.NumLayers, e];
        var reuse = new double[c.NumLayers];
        var recallK = new double[c.NumLayers];
        var recallK1 = new double[c.NumLayers];
        long pairs = 0, predicted = 0;
        var lru = lruSlots.Select(slots => Enumerable.Range(0, c.NumLayers).Select(_ => new LruSim(slots)).ToArray()).ToArray();
        var previous = new int[c.NumLayers][];
        var scores = new float[e];
        var top = new int[Math.Min(k + 1, e)];
        var topVals = new float[top.Length];
        var logits = new float[c.VocabSize];
        double nll = 0;
        long scored = 0;
        var old = s.Model.Observer;
        try
        {
            s.Model.Observer = rec;
            for (int start = 0; start < ids.Length; start += window)
            {
                s.State.Reset();
                Array.Clear(previous);
                int end = Math.Min(ids.Length, start + window);
                for (int i = start; i < end; i++)
                {
                    s.Model.Forward(s.State, ids[i], logits, s.Team);
                    if (i + 1 < end)
                    {
                        nll -= LogSoftmaxAt(logits, ids[i + 1]);
                        scored++;
                    }
                    for (int l = 0; l < c.NumLayers; l++)
                    {
                        var chosen = rec.Ids[l];
                        foreach (int x in chosen) load[l, x]++;
                        if (previous[l] is int[] prev)
                        {
                            int same = chosen.Count(prev.Contains);
                            reuse[l] += (double)same / k;
                        }
                        previous[l] = (int[])chosen.Clone();
                        for (int si = 0; si < lru.Length; si++) lru[si][l].Access(chosen);
                        if (l > 0 && nextGate.Score(l - 1, 1, rec.Hidden[l - 1], scores))
                        {
                            ElementOps.TopK(scores, top.Length, top, topVals);
                            int inK = 0, inK1 = 0;
                            foreach (int x in chosen)
                            {
                                int at = Array.IndexOf(top, x);
                                if (at >= 0 && at < k) inK++;
                                if (at >= 0) inK1++;
                            }
                            recallK[l] += (double)inK / k;
                            recallK1[l] += (double)inK1 / k;
                        }
                    }
                    if (i > start) pairs++;
                    predicted++;
                }
                progress?.Report($"{end}/{ids.Length} tokens");
            }
        }
        finally
        {
            s.Model.Observer = old;
        }
        var layers = new List<LayerRoutingStats>();
        for (int l = 0; l < c.NumLayers; l++)
        {
            double total = 0, max = 0, entropy = 0;
            for (int x = 0; x < e; x++) { total += load[l, x]; max = Math.Max(max, load[l, x]); }
            for (int x = 0; x < e; x++)
            {
                double p = load[l, x] / total;
                if (p > 0) entropy -= p * Math.Log(p);
            }
            var hits = new Dictionary<int, double>();
            for (int si = 0; si < lru.Length; si++) hits[lruSlots[si]] = lru[si][l].HitRate;
            layers.Add(new LayerRoutingStats(l, pairs == 0 ? 0 : reuse[l] / pairs, max / (total / e), entropy / Math.Log(e),
                l == 0 ? null : recallK[l] / predicted, l == 0 ? null : recallK1[l] / predicted, hits));
        }
        double perToken = scored == 0 ? double.NaN : nll / scored;
        return new RoutingReport(ids.Length, Math.Exp(perToken), perToken, layers);
    }

    private static double LogSoftmaxAt(float[] logits, int target)
    {
        double max = double.NegativeInfinity;
        foreach (float v in logits) max = Math.Max(max, v);
        double sum = 0;
        foreach (float v in logits) sum += Math.Exp(v - max);
        return logits[target] - max - Math.Log(sum);
    }

    private sealed class Recorder(int layers, int hidden) : IForwardObserver
    {
        public readonly int[][] Ids = new int[layers][];
        public readonly float[][] Hidden = Enumerable.Range(0, layers).Select(_ => new float[hidden]).ToArray();

        public void OnTensor(string name, int layer, int position, ReadOnlySpan<float> values)
        {
            if (name == "attn_residual") values.CopyTo(Hidden[layer]);
        }

        public void OnRouting(int layer, int position, ReadOnlySpan<float> probs, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights) =>
            Ids[layer] = ids.ToArray();
    }

    // One layer's LRU cache of `slots` experts: a request hits when the expert is resident.
    private sealed class LruSim(int slots)
    {
        private readonly LinkedList<int> _order = new();
        private long _hits, _requests;

        public double HitRate => _requests == 0 ? 0 : (double)_hits / _requests;

        public void Access(int[] experts)
        {
            foreach (int x in experts)
            {
                _requests++;
                var node = _order.Find(x);
                if (node is not null) { _hits++; _order.Remove(node); }
                else if (_order.Count >= slots) _order.RemoveLast();
                _order.AddFirst(x);
            }
        }
    }
}
