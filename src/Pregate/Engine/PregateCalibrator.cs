// `pregate calibrate`: records the routing a model makes on real text and fits the pre-gate (LinearPregate) by ridge
// regression — W = (XᵀX + λ·n·I)⁻¹ XᵀY with X the normalised post-attention residual stream of layer i (plus a bias
// column) and Y the router log-probabilities of layer i+a — then measures recall on a held-out split against next-gate.
using System.Globalization;
using Pregate.Experts.Prediction;
using Pregate.Kernels;
using Pregate.Models;

namespace Pregate.Engine;

public sealed record CalibrationOptions
{
    /// <summary>Layers ahead to predict (1 = the next layer; 2 also fits layer i → i+2).</summary>
    public int Lookahead { get; init; } = 1;
    /// <summary>Ridge strength relative to the number of samples.</summary>
    public double Ridge { get; init; } = 1e-3;
    /// <summary>Fraction of the tokens (the end of the text) kept out of fitting to measure recall.</summary>
    public double HeldOutFraction { get; init; } = 0.1;
    /// <summary>Tokens per forward window (each window starts from an empty KV cache).</summary>
    public int Window { get; init; } = 256;
    /// <summary>At most this many tokens of the text are used.</summary>
    public int MaxTokens { get; init; } = 50_000;
}

/// <summary>Recall of a predictor on held-out tokens: the fraction of the true top-k experts found in its top-k (and top-(k+1)) guesses.</summary>
public sealed record PredictorRecall(string Predictor, double[] TopK, double[] TopKPlus1)
{
    public double MeanTopK => TopK.Length == 0 ? 0 : TopK.Average();
    public double MeanTopKPlus1 => TopKPlus1.Length == 0 ? 0 : TopKPlus1.Average();
}

public sealed record CalibrationReport(int TrainTokens, int HeldOutTokens, int Lookahead, PredictorRecall Pregate, PredictorRecall NextGate);

public static class PregateCalibrator
{
    /// <summary>Fits a predictor on <paramref name="text"/> and returns it with its held-out recall (next layer).</summary>
    /// <exception cref="ArgumentException">Too little text or invalid options.</exception>
    public static (LinearPregate Predictor, CalibrationReport Report) Calibrate(ModelSession s, string text, CalibrationOptions o, IProgress<string>? progress = null)
    {
        if (o.Lookahead < 1 || o.Lookahead > 2) throw new ArgumentException($"lookahead must be 1 or 2, not {o.Lookahead}");
        if (!(o.HeldOutFraction > 0 && o.HeldOutFraction < 0.5)) throw new ArgumentException($"held-out fraction must be in (0, 0.5), not {o.HeldOutFraction}");
        var c = s.Config;
        int window = Math.Min(o.Window, s.State.Context);
        var ids = s.Tokenizer.Encode(text, addBos: false);
        if (ids.Count > o.MaxTokens) ids = ids.Take(o.MaxTokens).ToArray();
        int heldOut = (int)(ids.Count * o.HeldOutFraction);
        int train = ids.Count - heldOut;
        if (train < 256 || heldOut < 32)
            throw new ArgumentException($"the text gives {ids.Count} tokens; calibration needs at least {(int)Math.Ceiling(Math.Max(256 / (1 - o.HeldOutFraction), 32 / o.HeldOutFraction))} (thousands are better)");

        int d = c.HiddenSize, e = c.NumExperts, layers = c.NumLayers, la = o.Lookahead;
        var fit = new RidgeAccumulator[layers];
        for (int l = 0; l < layers; l++) fit[l] = new RidgeAccumulator(d + 1, e, la);
        var rec = new Recorder(c.NumLayers, d, e, c.RmsNormEps);
        var previous = s.Model.Observer;
        try
        {
            s.Model.Observer = rec;
            rec.OnRouted = (layer, x, logProbs) =>
            {
                for (int a = 1; a <= la && layer - a >= 0; a++) fit[layer - a].AddTarget(a, x[layer - a], logProbs);
            };
            rec.OnInput = (layer, x) => fit[layer].AddInput(x);
            RunWindows(s, ids.Take(train).ToArray(), window, progress, "fitting");

            var weights = new float[]?[layers][];
            var bias = new float[]?[layers][];
            for (int l = 0; l < layers; l++)
            {
                weights[l] = new float[]?[la];
                bias[l] = new float[]?[la];
                for (int a = 1; a <= la && l + a < layers; a++)
                    (weights[l][a - 1], bias[l][a - 1]) = fit[l].Solve(a, o.Ridge);
            }
            var meta = new Dictionary<string, string>
            {
                ["format"] = LinearPregate.FormatName,
                ["version"] = LinearPregate.FormatVersion.ToString(CultureInfo.InvariantCulture),
                ["model_hash"] = ModelFingerprint.Of(s.Checkpoint),
                ["architecture"] = c.ModelType,
                ["lookahead"] = la.ToString(CultureInfo.InvariantCulture),
                ["train_tokens"] = train.ToString(CultureInfo.InvariantCulture),
                ["ridge"] = o.Ridge.ToString("R", CultureInfo.InvariantCulture),
            };
            var predictor = new LinearPregate(layers, d, e, la, c.RmsNormEps, weights, bias, meta);

            // Held-out recall of the fitted map and of next-gate, one layer ahead.
            var nextGate = new NextGatePredictor(s.Checkpoint, 1);
            var pre = new RecallCounter(layers, c.NumExpertsUsed, e);
            var ng = new RecallCounter(layers, c.NumExpertsUsed, e);
            rec.OnInput = null;
            rec.OnRouted = (layer, _, _) =>
            {
                if (layer == 0) return;
                pre.Add(layer, predictor, rec.Hidden[layer - 1], rec.LastIds);
                ng.Add(layer, nextGate, rec.Hidden[layer - 1], rec.LastIds);
            };
            RunWindows(s, ids.Skip(train).ToArray(), window, progress, "measuring recall");
            var pr = pre.Result("pregate");
            var nr = ng.Result("next-gate");
            var reportMeta = new Dictionary<string, string>(meta)
            {
                ["recall_top_k"] = pr.MeanTopK.ToString("0.0000", CultureInfo.InvariantCulture),
                ["recall_top_k_plus_1"] = pr.MeanTopKPlus1.ToString("0.0000", CultureInfo.InvariantCulture),
                ["next_gate_recall_top_k"] = nr.MeanTopK.ToString("0.0000", CultureInfo.InvariantCulture),
                ["held_out_tokens"] = heldOut.ToString(CultureInfo.InvariantCulture),
            };
            predictor = new LinearPregate(layers, d, e, la, c.RmsNormEps, weights, bias, reportMeta);
            return (predictor, new CalibrationReport(train, heldOut, la, pr, nr));
        }
        finally
        {
            s.Model.Observer = previous;
        }
    }

    private static void RunWindows(ModelSession s, int[] ids, int window, IProgress<string>? progress, string what)
    {
        for (int start = 0; start < ids.Length; start += window)
        {
            s.State.Reset();
            int end = Math.Min(ids.Length, start + window);
            for (int i = start; i < end; i++) s.Model.Forward(s.State, ids[i], default, s.Team);
            progress?.Report($"{what}: {end}/{ids.Length} tokens");
        }
    }

    // Keeps, for the current token, every layer's normalised post-attention state (with a trailing 1 for the bias).
    private sealed class Recorder(int layers, int hidden, int experts, float eps) : IForwardObserver
    {
        public readonly float[][] X = Enumerable.Range(0, layers).Select(_ => new float[hidden + 1]).ToArray();
        public readonly float[][] Hidden = Enumerable.Range(0, layers).Select(_ => new float[hidden]).ToArray();
        private readonly float[] _logProbs = new float[experts];
        public int[] LastIds = [];
        public Action<int, float[][], float[]>? OnRouted;
        public Action<int, float[]>? OnInput;

        public void OnTensor(string name, int layer, int position, ReadOnlySpan<float> values)
        {
            if (name != "attn_residual") return;
            values.CopyTo(Hidden[layer]);
            LinearPregate.Normalize(values, eps, X[layer].AsSpan(0, hidden));
            X[layer][hidden] = 1f;
            OnInput?.Invoke(layer, X[layer]);
        }

        public void OnRouting(int layer, int position, ReadOnlySpan<float> probs, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights)
        {
            for (int i = 0; i < probs.Length; i++) _logProbs[i] = MathF.Log(MathF.Max(probs[i], 1e-30f));
            LastIds = ids.ToArray();
            OnRouted?.Invoke(layer, X, _logProbs);
        }
    }

    // Sufficient statistics of one layer's regressions: XᵀX (shared by every lookahead) and XᵀY per lookahead.
    private sealed class RidgeAccumulator(int n, int targets, int lookahead)
    {
        private readonly double[] _xtx = new double[n * n];
        private readonly double[][] _xty = Enumerable.Range(0, lookahead).Select(_ => new double[n * targets]).ToArray();
        private long _samples;

        public void AddInput(float[] x)
        {
            _samples++;
            for (int r = 0; r < n; r++)
            {
                double xr = x[r];
                if (xr == 0) continue;
                var row = _xtx.AsSpan(r * n, n);
                for (int c = r; c < n; c++) row[c] += xr * x[c];
            }
        }

        public void AddTarget(int ahead, float[] x, float[] y)
        {
            var xty = _xty[ahead - 1];
            for (int r = 0; r < n; r++)
            {
                double xr = x[r];
                var row = xty.AsSpan(r * targets, targets);
                for (int t = 0; t < targets; t++) row[t] += xr * y[t];
            }
        }

        /// <summary>Solves (XᵀX + λ·samples·I) W = XᵀY by Cholesky; returns W as [targets, n-1] plus the bias column.</summary>
        public (float[] Weights, float[] Bias) Solve(int ahead, double ridge)
        {
            var a = new double[n * n];
            for (int r = 0; r < n; r++)
                for (int c = r; c < n; c++) a[r * n + c] = a[c * n + r] = _xtx[r * n + c];
            double lambda = ridge * Math.Max(1, _samples);
            for (int i = 0; i < n - 1; i++) a[i * n + i] += lambda; // the bias column is not shrunk
            a[(n - 1) * n + n - 1] += 1e-9 * Math.Max(1, _samples);
            Cholesky(a, n);
            var b = (double[])_xty[ahead - 1].Clone();
            SolveCholesky(a, n, b, targets);
            var w = new float[targets * (n - 1)];
            var bias = new float[targets];
            for (int t = 0; t < targets; t++)
            {
                for (int r = 0; r < n - 1; r++) w[t * (n - 1) + r] = (float)b[r * targets + t];
                bias[t] = (float)b[(n - 1) * targets + t];
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

    private sealed class RecallCounter(int layers, int k, int experts)
    {
        private readonly double[] _hitK = new double[layers], _hitK1 = new double[layers];
        private readonly long[] _n = new long[layers];
        private readonly float[] _scores = new float[experts];
        private readonly int[] _ids = new int[Math.Min(k + 1, experts)];
        private readonly float[] _vals = new float[Math.Min(k + 1, experts)];

        public void Add(int layer, IExpertPredictor p, float[] hidden, int[] truth)
        {
            if (!p.Score(layer - 1, 1, hidden, _scores)) return;
            ElementOps.TopK(_scores, _ids.Length, _ids, _vals);
            int inK = 0, inK1 = 0;
            foreach (int t in truth)
            {
                int at = Array.IndexOf(_ids, t);
                if (at >= 0 && at < k) inK++;
                if (at >= 0) inK1++;
            }
            _hitK[layer] += (double)inK / truth.Length;
            _hitK1[layer] += (double)inK1 / truth.Length;
            _n[layer]++;
        }

        public PredictorRecall Result(string name)
        {
            var ks = new List<double>();
            var k1 = new List<double>();
            for (int l = 1; l < layers; l++)
            {
                if (_n[l] == 0) continue;
                ks.Add(_hitK[l] / _n[l]);
                k1.Add(_hitK1[l] / _n[l]);
            }
            return new PredictorRecall(name, ks.ToArray(), k1.ToArray());
        }
    }
}
