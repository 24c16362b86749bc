// The fitting behind `pregate calibrate`: routing recorded on text (RoutingSamples), next-gate as the prior of each map,
// ridge regression of the correction with its strength picked on a validation split, then a softmax cross-entropy
// refinement toward the routed top-k, stopped early on the same split (Pre-gated MoE's pre-gate, fitted post hoc).
using Pregate.Experts.Prediction;
using Pregate.Kernels;

namespace Pregate.Engine;

/// <summary>
/// What the calibrator recorded for each token of a text and each layer: the normalised post-attention residual
/// <c>x = h / rms(h)</c>, the router's centred log-probabilities <c>y = log p − mean(log p)</c> (the router logits less
/// their mean) and the k experts routed to; optionally the raw residual <c>h</c> (to score predictors as they run).
/// </summary>
internal sealed class RoutingSamples
{
    public int Count { get; }
    public int Hidden { get; }
    public int Experts { get; }
    public int Layers { get; }
    public int K { get; }
    public float[][] Inputs { get; }   // [layer] → [Count, Hidden]
    public float[][] Targets { get; }  // [layer] → [Count, Experts]
    public int[][] Chosen { get; }     // [layer] → [Count, K]
    public float[][]? Raw { get; }     // [layer] → [Count, Hidden], when kept

    public RoutingSamples(int count, int layers, int hidden, int experts, int k, bool keepRaw)
    {
        Count = count;
        Layers = layers;
        Hidden = hidden;
        Experts = experts;
        K = k;
        Inputs = Enumerable.Range(0, layers).Select(_ => new float[checked(count * hidden)]).ToArray();
        Targets = Enumerable.Range(0, layers).Select(_ => new float[checked(count * experts)]).ToArray();
        Chosen = Enumerable.Range(0, layers).Select(_ => new int[checked(count * k)]).ToArray();
        Raw = keepRaw ? Enumerable.Range(0, layers).Select(_ => new float[checked(count * hidden)]).ToArray() : null;
    }

    public ReadOnlySpan<float> Input(int layer, int row) => Inputs[layer].AsSpan(row * Hidden, Hidden);
    public ReadOnlySpan<float> Target(int layer, int row) => Targets[layer].AsSpan(row * Experts, Experts);
    public ReadOnlySpan<int> Routed(int layer, int row) => Chosen[layer].AsSpan(row * K, K);
}

/// <summary>How one map is fitted (the calibrator's knobs; null = chosen on the validation split).</summary>
internal sealed record FitSettings
{
    /// <summary>Shrink toward next-gate (the target layer's router and norm applied to x) instead of toward zero.</summary>
    public bool NextGatePrior { get; init; } = true;
    /// <summary>Also feed the map the source layer's own routing: its top-k softmax weights renormalised, zero elsewhere (E inputs).</summary>
    public bool GateFeatures { get; init; } = true;
    /// <summary>Ridge strength relative to the number of samples; null = the best of <see cref="RidgeGrid"/> on validation.</summary>
    public double? Ridge { get; init; }
    public double[] RidgeGrid { get; init; } = [1e-4, 1e-3, 1e-2, 1e-1, 1, 10];
    /// <summary>Full-batch Adam epochs of the cross-entropy refinement; null = the best of up to <see cref="MaxEpochs"/> on validation.</summary>
    public int? Epochs { get; init; }
    public int MaxEpochs { get; init; } = 400;
    public double LearningRate { get; init; } = 1e-2;
}

/// <summary>
/// One fitted map: scores = W·x + G·g + b with W [Experts, Hidden] row-major, G [Experts, Experts] (null without gate
/// features) over g, the source layer's renormalised top-k router weights, and b [Experts]; with what was chosen.
/// </summary>
internal sealed record FittedMap(float[] Weights, float[]? GateWeights, float[] Bias, double Ridge, int Epochs);

internal static class PregateFit
{
    // Tokens are cut into blocks of this many; every ValidationEvery-th block validates (neighbouring tokens are alike).
    private const int BlockTokens = 64;
    private const int ValidationEvery = 8;
    private const int EpochsPerCheck = 10;

    /// <summary>Whether row <paramref name="row"/> belongs to the validation split.</summary>
    public static bool IsValidation(int row) => row / BlockTokens % ValidationEvery == ValidationEvery - 1;

    /// <summary>
    /// Fits the map from the inputs at <paramref name="layer"/> (x, and the layer's own gate weights g when enabled) to
    /// the router of <paramref name="target"/>: ridge on the correction to <paramref name="prior"/> (next-gate, [E, D]; g
    /// starts at zero) or to zero, W = W0 + (XᵀX + λ·n·I)⁻¹ Xᵀ(Y − X·W0ᵀ) with an unshrunk bias and Y the centred
    /// log-probabilities; then full-batch Adam on the mean cross-entropy between softmax(W·x + b) and the uniform
    /// distribution over the routed top-k. λ (from a grid) and the epoch count (0 allowed: never worse than ridge on
    /// validation) are chosen by recall at k, k+1 and k+2 on the validation split; the map is then refitted on all rows.
    /// Deterministic: no randomness, fixed summation order.
    /// </summary>
    public static FittedMap Fit(RoutingSamples s, int layer, int target, float[]? prior, FitSettings o)
    {
        int n = s.Count, d = s.Hidden, e = s.Experts;
        int f = d + (o.GateFeatures ? e : 0);
        var feat = new Features(s, layer, target, o.GateFeatures);
        float[]? w0 = null;
        if (o.NextGatePrior && prior is not null)
        {
            w0 = new float[e * f];
            for (int r = 0; r < e; r++) prior.AsSpan(r * d, d).CopyTo(w0.AsSpan(r * f, d));
        }
        var all = Enumerable.Range(0, n).ToArray();
        var fitRows = all.Where(r => !IsValidation(r)).ToArray();
        var validRows = all.Where(IsValidation).ToArray();
        double ridge = o.Ridge ?? 0;
        int epochs = o.Epochs ?? 0;
        bool chooseRidge = o.Ridge is null, chooseEpochs = o.Epochs is null && o.MaxEpochs > 0;
        if ((chooseRidge || chooseEpochs) && validRows.Length > 0 && fitRows.Length > f)
        {
            var stats = new Normal(feat, w0, fitRows);
            if (chooseRidge)
            {
                double best = double.NegativeInfinity;
                foreach (double lambda in o.RidgeGrid.OrderDescending())
                {
                    var (w, b) = stats.Solve(lambda, w0);
                    double score = ValidationScore(feat, w, b, validRows);
                    if (score > best + 1e-12) (best, ridge) = (score, lambda);
                }
            }
            if (chooseEpochs)
            {
                var (w, b) = stats.Solve(ridge, w0);
                epochs = Refine(feat, w, b, o.LearningRate, fitRows, o.MaxEpochs, validRows);
            }
        }
        else
        {
            if (chooseRidge) ridge = 1e-3;
            if (chooseEpochs) epochs = 0;
        }
        var full = new Normal(feat, w0, all);
        var (weights, bias) = full.Solve(ridge, w0);
        if (epochs > 0) Refine(feat, weights, bias, o.LearningRate, all, epochs, null);
        var wx = new float[e * d];
        var wg = o.GateFeatures ? new float[e * e] : null;
        for (int r = 0; r < e; r++)
        {
            weights.AsSpan(r * f, d).CopyTo(wx.AsSpan(r * d, d));
            if (wg is not null) weights.AsSpan(r * f + d, e).CopyTo(wg.AsSpan(r * e, e));
        }
        return new FittedMap(wx, wg, bias, ridge, epochs);
    }

    // The inputs of one map, row by row: [x (D), g (E) when gate features are on] and the target layer's targets.
    private sealed class Features
    {
        public readonly int Width, Experts, K;
        private readonly float[] _rows;
        private readonly RoutingSamples _s;
        private readonly int _target;

        public Features(RoutingSamples s, int layer, int target, bool gates)
        {
            int d = s.Hidden, e = s.Experts;
            Width = d + (gates ? e : 0);
            Experts = e;
            K = s.K;
            _s = s;
            _target = target;
            _rows = new float[checked(s.Count * Width)];
            for (int r = 0; r < s.Count; r++)
            {
                s.Input(layer, r).CopyTo(_rows.AsSpan(r * Width, d));
                if (gates) LinearPregate.GateFeatures(s.Target(layer, r), s.K, _rows.AsSpan(r * Width + d, e));
            }
        }

        public ReadOnlySpan<float> Row(int r) => _rows.AsSpan(r * Width, Width);
        public ReadOnlySpan<float> Target(int r) => _s.Target(_target, r);
        public ReadOnlySpan<int> Routed(int r) => _s.Routed(_target, r);
    }

    /// <summary>Fraction of the routed top-k of <paramref name="target"/> among the map's top k, k+1 and k+2, summed.</summary>
    private static double ValidationScore(Features s, float[] w, float[] b, int[] rows)
    {
        var hits = new long[3];
        var scores = new float[s.Experts];
        int guesses = Math.Min(s.K + 2, s.Experts);
        var ids = new int[guesses];
        var vals = new float[guesses];
        foreach (int r in rows)
        {
            Score(w, b, s.Row(r), scores);
            ElementOps.TopK(scores, guesses, ids, vals);
            CountHits(ids, s.Routed(r), s.K, hits);
        }
        return hits.Sum() / (double)(rows.Length * s.K);
    }

    /// <summary>Adds to <paramref name="hits"/>[j] how many of <paramref name="truth"/> are among the first k + j of <paramref name="ranked"/>.</summary>
    public static void CountHits(ReadOnlySpan<int> ranked, ReadOnlySpan<int> truth, int k, Span<long> hits)
    {
        foreach (int t in truth)
        {
            int at = ranked.IndexOf(t);
            if (at < 0) continue;
            for (int j = 0; j < hits.Length; j++)
                if (at < k + j) hits[j]++;
        }
    }

    private static void Score(float[] w, float[] b, ReadOnlySpan<float> x, Span<float> scores)
    {
        int d = x.Length;
        for (int e = 0; e < scores.Length; e++) scores[e] = b[e] + ElementOps.Dot(w.AsSpan(e * d, d), x);
    }

    // Full-batch Adam on the mean CE(q, softmax(W·x + b)), q uniform over the routed top-k, from (w, b), in place. With
    // validation rows, runs up to maxEpochs, checks every EpochsPerCheck epochs and returns the best epoch count (0 when
    // none beat the start); early stopping is the regulariser.
    private static int Refine(Features s, float[] w, float[] b, double learningRate, int[] rows, int maxEpochs, int[]? validRows)
    {
        int d = s.Width, e = s.Experts;
        var gw = new double[w.Length];
        var gb = new double[e];
        var mw = new double[w.Length];
        var vw = new double[w.Length];
        var mb = new double[e];
        var vb = new double[e];
        var scores = new float[e];
        var q = new float[e];
        var delta = new float[e];
        const double beta1 = 0.9, beta2 = 0.999, adamEps = 1e-8;
        double best = validRows is null ? 0 : ValidationScore(s, w, b, validRows);
        int bestEpoch = 0;
        var rowAccum = new float[w.Length];
        for (int epoch = 1; epoch <= maxEpochs; epoch++)
        {
            Array.Clear(gw);
            Array.Clear(gb);
            // Accumulate Σ (p − q)·xᵀ in float per block of rows, then into double: fast and in a fixed order.
            for (int start = 0; start < rows.Length; start += BlockTokens)
            {
                Array.Clear(rowAccum);
                int end = Math.Min(rows.Length, start + BlockTokens);
                for (int i = start; i < end; i++)
                {
                    int r = rows[i];
                    var x = s.Row(r);
                    Score(w, b, x, scores);
                    ElementOps.Softmax(scores);
                    Array.Clear(q);
                    foreach (int id in s.Routed(r)) q[id] = 1f / s.K;
                    for (int k = 0; k < e; k++)
                    {
                        delta[k] = scores[k] - q[k];
                        gb[k] += delta[k];
                        ElementOps.WeightedAdd(rowAccum.AsSpan(k * d, d), delta[k], x);
                    }
                }
                for (int i = 0; i < rowAccum.Length; i++) gw[i] += rowAccum[i];
            }
            double inv = 1.0 / rows.Length;
            double t1 = 1 - Math.Pow(beta1, epoch), t2 = 1 - Math.Pow(beta2, epoch);
            for (int i = 0; i < w.Length; i++)
            {
                double g = gw[i] * inv;
                mw[i] = beta1 * mw[i] + (1 - beta1) * g;
                vw[i] = beta2 * vw[i] + (1 - beta2) * g * g;
                w[i] -= (float)(learningRate * (mw[i] / t1) / (Math.Sqrt(vw[i] / t2) + adamEps));
            }
            for (int k = 0; k < e; k++)
            {
                double g = gb[k] * inv;
                mb[k] = beta1 * mb[k] + (1 - beta1) * g;
                vb[k] = beta2 * vb[k] + (1 - beta2) * g * g;
                b[k] -= (float)(learningRate * (mb[k] / t1) / (Math.Sqrt(vb[k] / t2) + adamEps));
            }
            if (validRows is not null && epoch % EpochsPerCheck == 0)
            {
                double score = ValidationScore(s, w, b, validRows);
                if (score > best + 1e-12) (best, bestEpoch) = (score, epoch);
            }
        }
        return validRows is null ? maxEpochs : bestEpoch;
    }

    // The normal equations of one (layer, target) pair over a set of rows: XᵀX with a trailing bias column and Xᵀ(Y − X·W0ᵀ).
    private sealed class Normal
    {
        private readonly int _n, _experts;
        private readonly double[] _xtx;
        private readonly double[] _xty;
        private readonly long _samples;

        public Normal(Features s, float[]? w0, int[] rows)
        {
            int d = s.Width, e = s.Experts, n = d + 1;
            _n = n;
            _experts = e;
            _samples = rows.Length;
            _xtx = new double[n * n];
            _xty = new double[n * e];
            var x = new float[n];
            var y = new float[e];
            var block = new float[n * n];
            var blockY = new float[n * e];
            for (int start = 0; start < rows.Length; start += BlockTokens)
            {
                Array.Clear(block);
                Array.Clear(blockY);
                int end = Math.Min(rows.Length, start + BlockTokens);
                for (int i = start; i < end; i++)
                {
                    int r = rows[i];
                    s.Row(r).CopyTo(x);
                    x[d] = 1f;
                    s.Target(r).CopyTo(y);
                    if (w0 is not null)
                        for (int k = 0; k < e; k++) y[k] -= ElementOps.Dot(w0.AsSpan(k * d, d), x.AsSpan(0, d));
                    for (int a = 0; a < n; a++)
                    {
                        ElementOps.WeightedAdd(block.AsSpan(a * n + a, n - a), x[a], x.AsSpan(a));
                        ElementOps.WeightedAdd(blockY.AsSpan(a * e, e), x[a], y);
                    }
                }
                for (int i = 0; i < block.Length; i++) _xtx[i] += block[i];
                for (int i = 0; i < blockY.Length; i++) _xty[i] += blockY[i];
            }
        }

        /// <summary>Solves (XᵀX + λ·samples·I) Δ = Xᵀ(Y − X·W0ᵀ) by Cholesky; returns W0 + Δ as [E, D] and the bias.</summary>
        public (float[] Weights, float[] Bias) Solve(double ridge, float[]? w0)
        {
            int n = _n, e = _experts, d = n - 1;
            var a = new double[n * n];
            for (int r = 0; r < n; r++)
                for (int c = r; c < n; c++) a[r * n + c] = a[c * n + r] = _xtx[r * n + c];
            double lambda = ridge * Math.Max(1, _samples);
            for (int i = 0; i < d; i++) a[i * n + i] += lambda; // the bias column is not shrunk
            a[(n - 1) * n + n - 1] += 1e-9 * Math.Max(1, _samples);
            Cholesky(a, n);
            var b = (double[])_xty.Clone();
            SolveCholesky(a, n, b, e);
            var w = new float[e * d];
            var bias = new float[e];
            for (int t = 0; t < e; t++)
            {
                for (int r = 0; r < d; r++) w[t * d + r] = (float)(b[r * e + t] + (w0?[t * d + r] ?? 0));
                bias[t] = (float)b[d * e + t];
            }
            return (w, bias);
        }

        private static void Cholesky(double[] a, int n)
        {
            for (int j = 0; j < n; j++)
            {
                double sum = a[j * n + j];
                for (int k = 0; k < j; k++) sum -= a[j * n + k] * a[j * n + k];
                if (sum <= 0) throw new InvalidOperationException("calibration statistics are not positive definite; give more text");
                double l = Math.Sqrt(sum);
                a[j * n + j] = l;
                for (int i = j + 1; i < n; i++)
                {
                    double s = a[i * n + j];
                    for (int k = 0; k < j; k++) s -= a[i * n + k] * a[j * n + k];
                    a[i * n + j] = s / l;
                }
            }
        }

        // L·Lᵀ·X = B for every column of B ([n, m] row-major), in place: forward then backward substitution.
        private static void SolveCholesky(double[] l, int n, double[] b, int m)
        {
            for (int i = 0; i < n; i++)
            {
                for (int k = 0; k < i; k++)
                {
                    double f = l[i * n + k];
                    for (int t = 0; t < m; t++) b[i * m + t] -= f * b[k * m + t];
                }
                for (int t = 0; t < m; t++) b[i * m + t] /= l[i * n + i];
            }
            for (int i = n - 1; i >= 0; i--)
            {
                for (int k = i + 1; k < n; k++)
                {
                    double f = l[k * n + i];
                    for (int t = 0; t < m; t++) b[i * m + t] -= f * b[k * m + t];
                }
                for (int t = 0; t < m; t++) b[i * m + t] /= l[i * n + i];
            }
        }
    }
}
