// The calibrated pre-gate: per (layer i, lookahead a) a map from the normalised residual stream after layer i's attention,
// and from layer i's own routing, to scores for the experts of layer i+a, fitted on the routing the model actually made
// (Pre-gated MoE's pre-gate function, trained post hoc instead of with the model). Stored as a safetensors sidecar.
using System.Globalization;
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Safetensors;
using Pregate.Kernels;

namespace Pregate.Experts.Prediction;

/// <summary>
/// Scores for the experts of layer i+a from h, the residual after layer i's attention:
/// <c>s = W·x + G·g + b</c> with <c>x = h / rms(h)</c>, W [E, D], b [E], and (format 2, when fitted with them)
/// G [E, E] over g, layer i's own routing recomputed from x: the router of layer i with its norm folded in
/// (<c>R·diag(γ)</c>, taken from the model) gives logits, g holds the softmax of the top-k of them renormalised, 0 elsewhere.
/// Format 1 files (no G) load as they are.
/// </summary>
public sealed class LinearPregate : IExpertPredictor
{
    public const string FormatName = "pregate-predictor";
    public const int FormatVersion = 2;

    // [layer][ahead-1] → weights [E, D], gate weights [E, E] (or null) and bias [E]; null where no target layer exists.
    private readonly float[]?[][] _weights;
    private readonly float[]?[][] _gateWeights;
    private readonly float[]?[][] _bias;
    // [layer] → the layer's router with its FFN norm folded in, [E, D] (each row less the mean row); null when no map uses gates.
    private readonly float[]?[] _routers;
    private readonly int _hidden, _experts, _k;
    private readonly float _eps;
    private readonly float[] _x, _logits, _gates;

    public int MaxLookahead { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    internal LinearPregate(int layers, int hidden, int experts, int k, int lookahead, float eps, float[]?[][] weights, float[]?[][] gateWeights,
        float[]?[][] bias, float[]?[] routers, IReadOnlyDictionary<string, string> metadata)
    {
        if (weights.Length != layers || gateWeights.Length != layers || bias.Length != layers || routers.Length != layers)
            throw new ArgumentException("one weight set per layer expected");
        for (int l = 0; l < layers; l++)
            if (gateWeights[l].Any(g => g is not null) && routers[l] is null)
                throw new ArgumentException($"layer {l} has gate weights but no router");
        _hidden = hidden;
        _experts = experts;
        _k = k;
        _eps = eps;
        MaxLookahead = lookahead;
        _weights = weights;
        _gateWeights = gateWeights;
        _bias = bias;
        _routers = routers;
        _x = new float[hidden];
        _logits = new float[experts];
        _gates = new float[experts];
        Metadata = metadata;
    }

    /// <summary>The same maps with other metadata.</summary>
    internal LinearPregate With(IReadOnlyDictionary<string, string> metadata) =>
        new(_weights.Length, _hidden, _experts, _k, MaxLookahead, _eps, _weights, _gateWeights, _bias, _routers, metadata);

    /// <summary>Whether any map also reads the source layer's routing (format 2 gate weights).</summary>
    public bool UsesGateFeatures => _gateWeights.Any(l => l.Any(g => g is not null));

    /// <summary>x = h / rms(h): the scale-free input every fitted map takes.</summary>
    internal static void Normalize(ReadOnlySpan<float> hidden, float eps, Span<float> x) => ElementOps.RmsNorm(hidden, eps, x);

    public bool Score(int layer, int ahead, ReadOnlySpan<float> hidden, Span<float> scores)
    {
        if (ahead < 1 || ahead > MaxLookahead || layer + ahead >= _weights.Length) return false;
        var w = _weights[layer][ahead - 1];
        var b = _bias[layer][ahead - 1];
        if (w is null || b is null) return false;
        Normalize(hidden, _eps, _x);
        for (int e = 0; e < _experts; e++)
            scores[e] = b[e] + ElementOps.Dot(w.AsSpan(e * _hidden, _hidden), _x);
        if (_gateWeights[layer][ahead - 1] is float[] g)
        {
            var router = _routers[layer]!;
            for (int e = 0; e < _experts; e++) _logits[e] = ElementOps.Dot(router.AsSpan(e * _hidden, _hidden), _x);
            GateFeatures(_logits, _k, _gates);
            for (int e = 0; e < _experts; e++) scores[e] += ElementOps.Dot(g.AsSpan(e * _experts, _experts), _gates);
        }
        return true;
    }

    /// <summary>
    /// g[e] = p[e] / Σ_top-k p over the k largest <paramref name="logits"/> (p = their softmax), 0 elsewhere; ties go to
    /// the lower index (<see cref="ElementOps.TopK"/>). Any shift of the logits gives the same g.
    /// </summary>
    internal static void GateFeatures(ReadOnlySpan<float> logits, int k, Span<float> g)
    {
        Span<int> ids = stackalloc int[k];
        Span<float> vals = stackalloc float[k];
        ElementOps.TopK(logits, k, ids, vals);
        g.Clear();
        double sum = 0;
        for (int i = 0; i < k; i++) sum += Math.Exp(vals[i] - vals[0]);
        for (int i = 0; i < k; i++) g[ids[i]] = (float)(Math.Exp(vals[i] - vals[0]) / sum);
    }

    /// <summary>
    /// Layer <paramref name="layer"/>'s router as a map of x: <c>M[e, j] = R[e, j]·γ[j]</c> with R the router [E, D] and γ
    /// the FFN norm, each row less the mean row (next-gate's logits less their mean: same ranking, same softmax).
    /// </summary>
    public static float[] RouterMap(Checkpoint ck, int layer)
    {
        var c = ck.Config;
        int d = c.HiddenSize, e = c.NumExperts;
        var router = ck.Get(TensorRole.Router, layer);
        var norm = ck.Get(TensorRole.FfnNorm, layer);
        var w = new float[checked(e * d)];
        var g = new float[d];
        Quantize.Dequantize(router.Type, router.Bytes, w);
        Quantize.Dequantize(norm.Type, norm.Bytes, g);
        var mean = new double[d];
        for (int r = 0; r < e; r++)
            for (int j = 0; j < d; j++) mean[j] += (double)w[r * d + j] * g[j] / e;
        for (int r = 0; r < e; r++)
            for (int j = 0; j < d; j++) w[r * d + j] = (float)(w[r * d + j] * g[j] - mean[j]);
        return w;
    }

    /// <summary>Where the predictor of the model at <paramref name="modelPath"/> lives: next to a GGUF file, inside an HF folder.</summary>
    public static string DefaultPath(string modelPath) =>
        Directory.Exists(modelPath) ? Path.Combine(modelPath, "pregate.safetensors") : modelPath + ".pregate.safetensors";

    /// <summary>Writes the predictor (atomically) with its metadata.</summary>
    public void Save(string path)
    {
        var tensors = new List<TensorData>();
        for (int l = 0; l < _weights.Length; l++)
            for (int a = 1; a <= MaxLookahead; a++)
            {
                if (_weights[l][a - 1] is not float[] w || _bias[l][a - 1] is not float[] b) continue;
                tensors.Add(FloatTensor($"predictor.{l}.{a}.weight", [_experts, _hidden], w));
                if (_gateWeights[l][a - 1] is float[] g) tensors.Add(FloatTensor($"predictor.{l}.{a}.gate_weight", [_experts, _experts], g));
                tensors.Add(FloatTensor($"predictor.{l}.{a}.bias", [_experts], b));
            }
        SafetensorsWriter.WriteFile(path, tensors, Metadata);
    }

    private static TensorData FloatTensor(string name, long[] shape, float[] values) =>
        new(name, DType.F32, shape, s => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan())));

    /// <summary>Loads a predictor and checks it belongs to <paramref name="ck"/>.</summary>
    /// <remarks>Reads format 1 (W and b only) and format 2 (optional G per map, the router taken from <paramref name="ck"/>).</remarks>
    /// <exception cref="ModelFormatException">Not a predictor file, an unknown format version, trained on another model, or tensors of the wrong shape.</exception>
    public static LinearPregate Load(string path, Checkpoint ck)
    {
        using var f = SafetensorsFile.Open(path);
        var m = f.Metadata;
        string Get(string key) => m.TryGetValue(key, out var v) ? v : throw new ModelFormatException(path, $"predictor metadata has no '{key}'");
        if (Get("format") != FormatName) throw new ModelFormatException(path, $"not a {FormatName} file");
        if (!int.TryParse(Get("version"), NumberStyles.None, CultureInfo.InvariantCulture, out int version) || version < 1 || version > FormatVersion)
            throw new ModelFormatException(path, $"predictor format version {Get("version")} is not supported (this build reads 1 to {FormatVersion}); run pregate calibrate again");
        string hash = ModelFingerprint.Of(ck);
        if (Get("model_hash") != hash)
            throw new ModelFormatException(path, $"the predictor was calibrated on a different model (hash {Get("model_hash")[..12]}…, this model {hash[..12]}…); run pregate calibrate for this model");
        var c = ck.Config;
        if (!int.TryParse(Get("lookahead"), CultureInfo.InvariantCulture, out int lookahead) || lookahead < 1 || lookahead > 4)
            throw new ModelFormatException(path, $"lookahead '{Get("lookahead")}' is invalid");
        var weights = new float[]?[c.NumLayers][];
        var gateWeights = new float[]?[c.NumLayers][];
        var bias = new float[]?[c.NumLayers][];
        var routers = new float[]?[c.NumLayers];
        for (int l = 0; l < c.NumLayers; l++)
        {
            weights[l] = new float[]?[lookahead];
            gateWeights[l] = new float[]?[lookahead];
            bias[l] = new float[]?[lookahead];
            for (int a = 1; a <= lookahead && l + a < c.NumLayers; a++)
            {
                weights[l][a - 1] = Read(f, path, $"predictor.{l}.{a}.weight", [c.NumExperts, c.HiddenSize]);
                bias[l][a - 1] = Read(f, path, $"predictor.{l}.{a}.bias", [c.NumExperts]);
                string gate = $"predictor.{l}.{a}.gate_weight";
                if (f.Contains(gate))
                {
                    if (version < 2) throw new ModelFormatException(path, $"tensor '{gate}' needs format version 2, the file says {version}");
                    gateWeights[l][a - 1] = Read(f, path, gate, [c.NumExperts, c.NumExperts]);
                    routers[l] ??= RouterMap(ck, l);
                }
            }
        }
        return new LinearPregate(c.NumLayers, c.HiddenSize, c.NumExperts, c.NumExpertsUsed, lookahead, c.RmsNormEps, weights, gateWeights, bias, routers, m);
    }

    private static float[] Read(SafetensorsFile f, string path, string name, long[] shape)
    {
        var t = f.GetTensor(name);
        if (t.Type != DType.F32 || !t.Shape.AsSpan().SequenceEqual(shape))
            throw new ModelFormatException(path, $"tensor '{name}' should be f32 [{string.Join(", ", shape)}], is {DTypes.Name(t.Type)} [{string.Join(", ", t.Shape)}]");
        return t.AsSpan<float>().ToArray();
    }
}
