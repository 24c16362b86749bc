// `pregate calibrate`: records the routing a model makes on real text and fits the pre-gate (LinearPregate): per layer i
// and lookahead a a linear map from the normalised post-attention residual of layer i to the router of layer i+a, fitted
// as a correction to next-gate (PregateFit); then measures recall on a held-out split against next-gate.
using System.Globalization;
using Pregate.Experts.Prediction;
using Pregate.Kernels;
using Pregate.Models;

namespace Pregate.Engine;

public sealed record CalibrationOptions
{
    /// <summary>Layers ahead to predict (1 = the next layer; 2 also fits layer i → i+2).</summary>
    public int Lookahead { get; init; } = 1;
    /// <summary>Ridge strength relative to the number of samples; null = the best of a grid on a validation split of the training tokens.</summary>
    public double? Ridge { get; init; }
    /// <summary>Epochs of the cross-entropy refinement; null = the best count up to 200 on the validation split; 0 = ridge only.</summary>
    public int? RefineEpochs { get; init; }
    /// <summary>Fraction of the tokens (the end of the text) kept out of fitting to measure recall.</summary>
    public double HeldOutFraction { get; init; } = 0.1;
    /// <summary>Tokens per forward window (each window starts from an empty KV cache).</summary>
    public int Window { get; init; } = 256;
    /// <summary>At most this many tokens of the text are used.</summary>
    public int MaxTokens { get; init; } = 50_000;
    /// <summary>How the maps are fitted beyond the options above (prior, grids, learning rate).</summary>
    internal FitSettings Fit { get; init; } = new();
}

/// <summary>
/// Recall of a predictor on held-out tokens, per target layer 1… (index 0 = layer 1): the fraction of a layer's true
/// top-k experts found among the predictor's top k, k+1 and k+2 guesses.
/// </summary>
public sealed record PredictorRecall(string Predictor, double[] TopK, double[] TopKPlus1, double[] TopKPlus2)
{
    public double MeanTopK => TopK.Length == 0 ? 0 : TopK.Average();
    public double MeanTopKPlus1 => TopKPlus1.Length == 0 ? 0 : TopKPlus1.Average();
    public double MeanTopKPlus2 => TopKPlus2.Length == 0 ? 0 : TopKPlus2.Average();
}

/// <summary>What calibration measured: token counts, the chosen ridge strength and refinement epochs per fitted map ([layer][ahead-1], NaN/-1 where none), and held-out recall one layer ahead.</summary>
public sealed record CalibrationReport(int TrainTokens, int HeldOutTokens, int Lookahead, PredictorRecall Pregate, PredictorRecall NextGate)
{
    public double[][] Ridge { get; init; } = [];
    public int[][] Epochs { get; init; } = [];
}

public static class PregateCalibrator
{
    /// <summary>
    /// Fits a predictor on <paramref name="text"/> and returns it with its held-out recall (next layer). Keeps, per training
    /// token and layer, the normalised residual and the router's log-probabilities: about 4·(D + E)·layers bytes a token.
    /// </summary>
    /// <exception cref="ArgumentException">Too little text or invalid options.</exception>
    public static (LinearPregate Predictor, CalibrationReport Report) Calibrate(ModelSession s, string text, CalibrationOptions o, IProgress<string>? progress = null)
    {
        if (o.Lookahead < 1 || o.Lookahead > 2) throw new ArgumentException($"lookahead must be 1 or 2, not {o.Lookahead}");
        if (!(o.HeldOutFraction > 0 && o.HeldOutFraction < 0.5)) throw new ArgumentException($"held-out fraction must be in (0, 0.5), not {o.HeldOutFraction}");
        if (o.Ridge is double r && !(r > 0)) throw new ArgumentException($"ridge must be positive, not {r}");
        if (o.RefineEpochs is int ep && ep < 0) throw new ArgumentException($"refinement epochs must be 0 or more, not {ep}");
        var c = s.Config;
        int window = Math.Min(o.Window, s.State.Context);
        var ids = s.Tokenizer.Encode(text, addBos: false);
        if (ids.Count > o.MaxTokens) ids = ids.Take(o.MaxTokens).ToArray();
        int heldOut = (int)(ids.Count * o.HeldOutFraction);
        int train = ids.Count - heldOut;
        if (train < 256 || heldOut < 32)
            throw new ArgumentException($"the text gives {ids.Count} tokens; calibration needs at least {(int)Math.Ceiling(Math.Max(256 / (1 - o.HeldOutFraction), 32 / o.HeldOutFraction))} (thousands are better)");

        var trainSet = Record(s, ids.Take(train).ToArray(), window, keepRaw: false, progress, "recording routing");
        var heldSet = Record(s, ids.Skip(train).ToArray(), window, keepRaw: true, progress, "recording held-out routing");
        var fit = o.Fit with { Ridge = o.Ridge ?? o.Fit.Ridge, Epochs = o.RefineEpochs ?? o.Fit.Epochs };
        var predictor = Fit(s, trainSet, o.Lookahead, fit, progress, out var ridges, out var epochs);
        var meta = new Dictionary<string, string>
        {
            ["format"] = LinearPregate.FormatName,
            ["version"] = LinearPregate.FormatVersion.ToString(CultureInfo.InvariantCulture),
            ["model_hash"] = ModelFingerprint.Of(s.Checkpoint),
            ["architecture"] = c.ModelType,
            ["lookahead"] = o.Lookahead.ToString(CultureInfo.InvariantCulture),
            ["train_tokens"] = train.ToString(CultureInfo.InvariantCulture),
            ["fit"] = $"ridge toward {(fit.NextGatePrior ? "next-gate" : "zero")} on the residual{(fit.GateFeatures ? " and the layer's own routing" : "")}, cross-entropy refinement toward the routed top-k",
            ["ridge"] = string.Join(",", ridges.SelectMany(x => x).Where(x => !double.IsNaN(x)).Select(x => x.ToString("R", CultureInfo.InvariantCulture))),
            ["refine_epochs"] = string.Join(",", epochs.SelectMany(x => x).Where(x => x >= 0).Select(x => x.ToString(CultureInfo.InvariantCulture))),
        };

        var nextGate = new NextGatePredictor(s.Checkpoint, 1);
        var pr = Recall(predictor.With(meta), heldSet, "pregate");
        var nr = Recall(nextGate, heldSet, "next-gate");
        meta["recall_top_k"] = pr.MeanTopK.ToString("0.0000", CultureInfo.InvariantCulture);
        meta["recall_top_k_plus_1"] = pr.MeanTopKPlus1.ToString("0.0000", CultureInfo.InvariantCulture);
        meta["recall_top_k_plus_2"] = pr.MeanTopKPlus2.ToString("0.0000", CultureInfo.InvariantCulture);
        meta["next_gate_recall_top_k"] = nr.MeanTopK.ToString("0.0000", CultureInfo.InvariantCulture);
        meta["next_gate_recall_top_k_plus_1"] = nr.MeanTopKPlus1.ToString("0.0000", CultureInfo.InvariantCulture);
        meta["next_gate_recall_top_k_plus_2"] = nr.MeanTopKPlus2.ToString("0.0000", CultureInfo.InvariantCulture);
        meta["held_out_tokens"] = heldOut.ToString(CultureInfo.InvariantCulture);
        return (predictor.With(meta), new CalibrationReport(train, heldOut, o.Lookahead, pr, nr) { Ridge = ridges, Epochs = epochs });
    }

    /// <summary>Fits every (layer, lookahead) map of a predictor on recorded routing (in parallel; each map alone is deterministic).</summary>
    internal static LinearPregate Fit(ModelSession s, RoutingSamples samples, int lookahead, FitSettings fit, IProgress<string>? progress,
        out double[][] ridges, out int[][] epochs)
    {
        var c = s.Config;
        int layers = c.NumLayers;
        var routers = Enumerable.Range(0, layers).Select(l => LinearPregate.RouterMap(s.Checkpoint, l)).ToArray();
        var weights = new float[]?[layers][];
        var gateWeights = new float[]?[layers][];
        var bias = new float[]?[layers][];
        var chosenRidge = new double[layers][];
        var chosenEpochs = new int[layers][];
        var jobs = new List<(int Layer, int Ahead)>();
        for (int l = 0; l < layers; l++)
        {
            weights[l] = new float[]?[lookahead];
            gateWeights[l] = new float[]?[lookahead];
            bias[l] = new float[]?[lookahead];
            chosenRidge[l] = Enumerable.Repeat(double.NaN, lookahead).ToArray();
            chosenEpochs[l] = Enumerable.Repeat(-1, lookahead).ToArray();
            for (int a = 1; a <= lookahead && l + a < layers; a++) jobs.Add((l, a));
        }
        int done = 0;
        Parallel.ForEach(jobs, job =>
        {
            var (l, a) = job;
            var m = PregateFit.Fit(samples, l, l + a, routers[l + a], fit);
            weights[l][a - 1] = m.Weights;
            gateWeights[l][a - 1] = m.GateWeights;
            bias[l][a - 1] = m.Bias;
            chosenRidge[l][a - 1] = m.Ridge;
            chosenEpochs[l][a - 1] = m.Epochs;
            progress?.Report($"fitted layer {l} → {l + a} ({Interlocked.Increment(ref done)}/{jobs.Count}): ridge {m.Ridge:g3}, {m.Epochs} refinement epochs");
        });
        ridges = chosenRidge;
        epochs = chosenEpochs;
        var usedRouters = routers.Select((r, l) => gateWeights[l].Any(g => g is not null) ? r : null).ToArray();
        return new LinearPregate(layers, c.HiddenSize, c.NumExperts, c.NumExpertsUsed, lookahead, c.RmsNormEps, weights, gateWeights, bias, usedRouters, new Dictionary<string, string>());
    }

    /// <summary>Runs <paramref name="ids"/> in windows (each from an empty cache) and records every layer's input and routing.</summary>
    internal static RoutingSamples Record(ModelSession s, int[] ids, int window, bool keepRaw, IProgress<string>? progress, string what)
    {
        var c = s.Config;
        var samples = new RoutingSamples(ids.Length, c.NumLayers, c.HiddenSize, c.NumExperts, c.NumExpertsUsed, keepRaw);
        var rec = new Recorder(samples, c.RmsNormEps);
        var previous = s.Model.Observer;
        try
        {
            s.Model.Observer = rec;
            for (int start = 0; start < ids.Length; start += window)
            {
                s.State.Reset();
                int end = Math.Min(ids.Length, start + window);
                rec.FirstRow = start;
                s.Model.Forward(s.State, ids.AsSpan(start, end - start), default, allPositions: false, s.Team);
                progress?.Report($"{what}: {end}/{ids.Length} tokens");
            }
        }
        finally
        {
            s.Model.Observer = previous;
        }
        return samples;
    }

    /// <summary>Held-out recall of <paramref name="p"/> one layer ahead, scored from the raw residual as the engine would.</summary>
    internal static PredictorRecall Recall(IExpertPredictor p, RoutingSamples held, string name)
    {
        int layers = held.Layers, k = held.K, guesses = Math.Min(k + 2, held.Experts);
        var scores = new float[held.Experts];
        var ids = new int[guesses];
        var vals = new float[guesses];
        var raw = held.Raw ?? throw new ArgumentException("the samples keep no raw residual", nameof(held));
        var recall = new double[3][];
        for (int j = 0; j < 3; j++) recall[j] = new double[layers - 1];
        var hits = new long[3];
        for (int l = 1; l < layers; l++)
        {
            Array.Clear(hits);
            for (int r = 0; r < held.Count; r++)
            {
                if (!p.Score(l - 1, 1, raw[l - 1].AsSpan(r * held.Hidden, held.Hidden), scores)) break;
                ElementOps.TopK(scores, guesses, ids, vals);
                PregateFit.CountHits(ids, held.Routed(l, r), k, hits);
            }
            for (int j = 0; j < 3; j++) recall[j][l - 1] = hits[j] / (double)(held.Count * k);
        }
        return new PredictorRecall(name, recall[0], recall[1], recall[2]);
    }

    // Stores each (layer, position) of the current window at row FirstRow + position.
    private sealed class Recorder(RoutingSamples samples, float eps) : IForwardObserver
    {
        public int FirstRow;

        public void OnTensor(string name, int layer, int position, ReadOnlySpan<float> values)
        {
            if (name != "attn_residual") return;
            int row = FirstRow + position, d = samples.Hidden;
            LinearPregate.Normalize(values, eps, samples.Inputs[layer].AsSpan(row * d, d));
            if (samples.Raw is { } raw) values.CopyTo(raw[layer].AsSpan(row * d, d));
        }

        public void OnRouting(int layer, int position, ReadOnlySpan<float> probs, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights)
        {
            int row = FirstRow + position, e = samples.Experts;
            var y = samples.Targets[layer].AsSpan(row * e, e);
            double mean = 0;
            for (int i = 0; i < e; i++) mean += y[i] = MathF.Log(MathF.Max(probs[i], 1e-30f));
            for (int i = 0; i < e; i++) y[i] -= (float)(mean / e);
            ids.CopyTo(samples.Chosen[layer].AsSpan(row * samples.K, samples.K));
        }
    }
}
