// The calibrated pre-gate: per (layer i, lookahead a) a linear map from the normalised residual stream after layer i's
// attention to the router log-probabilities of layer i+a, fitted by ridge regression on the routing the model actually
// made (Pre-gated MoE's pre-gate function, trained post hoc instead of with the model). Stored as a safetensors sidecar.
using System.Globalization;
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Safetensors;
using Pregate.Kernels;

namespace Pregate.Experts.Prediction;

public sealed class LinearPregate : IExpertPredictor
{
    public const string FormatName = "pregate-predictor";
    public const int FormatVersion = 1;

    // [layer][ahead-1] → weights [E, D] and bias [E]; null where no target layer exists.
    private readonly float[]?[][] _weights;
    private readonly float[]?[][] _bias;
    private readonly int _hidden, _experts;
    private readonly float _eps;
    private readonly float[] _x;

    public int MaxLookahead { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }

    internal LinearPregate(int layers, int hidden, int experts, int lookahead, float eps, float[]?[][] weights, float[]?[][] bias, IReadOnlyDictionary<string, string> metadata)
    {
        _hidden = hidden;
        _experts = experts;
        _eps = eps;
        MaxLookahead = lookahead;
        _weights = weights;
        _bias = bias;
        _x = new float[hidden];
        Metadata = metadata;
        if (weights.Length != layers) throw new ArgumentException("one weight set per layer expected");
    }

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
        return true;
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
                tensors.Add(FloatTensor($"predictor.{l}.{a}.bias", [_experts], b));
            }
        SafetensorsWriter.WriteFile(path, tensors, Metadata);
    }

    private static TensorData FloatTensor(string name, long[] shape, float[] values) =>
        new(name, DType.F32, shape, s => s.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan())));

    /// <summary>Loads a predictor and checks it belongs to <paramref name="ck"/>.</summary>
    /// <exception cref="ModelFormatException">Not a predictor file, a different format version, or trained on another model.</exception>
    public static LinearPregate Load(string path, Checkpoint ck)
    {
        using var f = SafetensorsFile.Open(path);
        var m = f.Metadata;
        string Get(string key) => m.TryGetValue(key, out var v) ? v : throw new ModelFormatException(path, $"predictor metadata has no '{key}'");
        if (Get("format") != FormatName) throw new ModelFormatException(path, $"not a {FormatName} file");
        if (Get("version") != FormatVersion.ToString(CultureInfo.InvariantCulture))
            throw new ModelFormatException(path, $"predictor format version {Get("version")} is not supported (expected {FormatVersion}); run pregate calibrate again");
        string hash = ModelFingerprint.Of(ck);
        if (Get("model_hash") != hash)
            throw new ModelFormatException(path, $"the predictor was calibrated on a different model (hash {Get("model_hash")[..12]}…, this model {hash[..12]}…); run pregate calibrate for this model");
        var c = ck.Config;
        if (!int.TryParse(Get("lookahead"), CultureInfo.InvariantCulture, out int lookahead) || lookahead < 1 || lookahead > 4)
            throw new ModelFormatException(path, $"lookahead '{Get("lookahead")}' is invalid");
        var weights = new float[]?[c.NumLayers][];
        var bias = new float[]?[c.NumLayers][];
        for (int l = 0; l < c.NumLayers; l++)
        {
            weights[l] = new float[]?[lookahead];
            bias[l] = new float[]?[lookahead];
            for (int a = 1; a <= lookahead && l + a < c.NumLayers; a++)
            {
                weights[l][a - 1] = Read(f, path, $"predictor.{l}.{a}.weight", [c.NumExperts, c.HiddenSize]);
                bias[l][a - 1] = Read(f, path, $"predictor.{l}.{a}.bias", [c.NumExperts]);
            }
        }
        return new LinearPregate(c.NumLayers, c.HiddenSize, c.NumExperts, lookahead, c.RmsNormEps, weights, bias, m);
    }

    private static float[] Read(SafetensorsFile f, string path, string name, long[] shape)
    {
        var t = f.GetTensor(name);
        if (t.Type != DType.F32 || !t.Shape.AsSpan().SequenceEqual(shape))
            throw new ModelFormatException(path, $"tensor '{name}' should be f32 [{string.Join(", ", shape)}], is {DTypes.Name(t.Type)} [{string.Join(", ", t.Shape)}]");
        return t.AsSpan<float>().ToArray();
    }
}
