// Calibration for GPTQ: runs the unquantized model on a text and accumulates, for every weight matrix, the Gram matrix
// Σ x xᵀ of the inputs it sees (GPTQ's H up to a factor). Routed experts see only the tokens routed to them (gate/up their
// input rows, down their silu(gate·x) ⊙ up·x intermediate); optionally also the tokens where they rank in the router's top
// k + 2 (expert-balanced calibration, for rarely chosen experts). Attention, shared-expert and output matrices see all tokens;
// the output matrix also gets per-row Hessians weighted by the reference model's next-token probabilities.
// All activations come from the unquantized model in one pass (not layer by layer on the partly quantized model, as the GPTQ
// paper does): each layer's inputs are then the ones the reference model produces, the pass is a single forward run, and at
// the sizes Pregate targets the sequential variant's gain is small next to the per-expert token scarcity balancing addresses.
using System.Numerics.Tensors;
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Export;
using Pregate.Kernels;
using Pregate.Models;

namespace Pregate.Engine;

/// <summary>Calibration settings: how many tokens, in windows of what length, from which seed, and whether to balance experts.</summary>
public sealed record QuantCalibrationOptions
{
    public int Tokens { get; init; } = 4096;
    public int Window { get; init; } = 256;
    public ulong Seed { get; init; }

    /// <summary>Also feed each expert the tokens where it ranks in the router's top k + <see cref="BalanceExtra"/> but was not chosen.</summary>
    public bool ExpertBalanced { get; init; }
    public int BalanceExtra { get; init; } = 2;
}

/// <summary>
/// The input Gram matrices of every weight matrix of a model, from a calibration run. Arrays are [n, n] row-major doubles;
/// an expert that saw no token has none (null).
/// </summary>
public sealed class QuantCalibrationData
{
    internal QuantCalibrationData(ModelConfig c)
    {
        int d = c.HiddenSize, q = c.NumHeads * c.HeadDim, layers = c.NumLayers, e = c.NumExperts;
        AttnInput = Enumerable.Range(0, layers).Select(_ => new double[d * d]).ToArray();
        AttnOutput = Enumerable.Range(0, layers).Select(_ => new double[q * q]).ToArray();
        ExpertInput = Enumerable.Range(0, layers).Select(_ => new double[e][]).ToArray();
        ExpertMiddle = Enumerable.Range(0, layers).Select(_ => new double[e][]).ToArray();
        SharedInput = new double[layers][];
        SharedMiddle = new double[layers][];
        OutputInput = new double[d * d];
        RoutedTokens = new long[layers, e];
        CalibrationTokens = new long[layers, e];
    }

    public double[][] AttnInput { get; }      // [layer] [D, D]
    public double[][] AttnOutput { get; }     // [layer] [H·hd, H·hd]
    public double[][][] ExpertInput { get; }  // [layer][expert] [D, D] or null
    public double[][][] ExpertMiddle { get; } // [layer][expert] [F, F] or null
    public double[]?[] SharedInput { get; }   // [layer] [D, D] (shared expert) or null
    public double[]?[] SharedMiddle { get; }  // [layer] [Fs, Fs] or null
    public double[] OutputInput { get; }      // [D, D]

    /// <summary>Tokens the router sent to each expert ([layer, expert]).</summary>
    public long[,] RoutedTokens { get; }

    /// <summary>Tokens each expert was calibrated on (= routed, plus the balancing extras).</summary>
    public long[,] CalibrationTokens { get; }

    public int Tokens { get; internal set; }

    /// <summary>
    /// Per-row statistics of the output matrix (null when the model has no separate output matrix or it is larger than
    /// <see cref="OutputRowStatistics.MaxWork"/> allows).
    /// </summary>
    public OutputRowStatistics? OutputRows { get; internal set; }

    /// <summary>The Gram matrix of <paramref name="spec"/>'s input (expert <paramref name="expert"/> for routed experts); null when none was gathered.</summary>
    public double[]? For(TensorSpec spec, int expert) => spec.Role switch
    {
        TensorRole.AttnQ or TensorRole.AttnK or TensorRole.AttnV => AttnInput[spec.Layer],
        TensorRole.AttnOutput => AttnOutput[spec.Layer],
        TensorRole.ExpertGate or TensorRole.ExpertUp => ExpertInput[spec.Layer][expert],
        TensorRole.ExpertDown => ExpertMiddle[spec.Layer][expert],
        TensorRole.SharedGate or TensorRole.SharedUp => SharedInput[spec.Layer],
        TensorRole.SharedDown => SharedMiddle[spec.Layer],
        TensorRole.Output => OutputInput,
        _ => null,
    };

    /// <summary>h += x xᵀ for h [n, n].</summary>
    internal static void AddOuter(double[] h, ReadOnlySpan<float> x, double[] scratch)
    {
        int n = x.Length;
        var xd = scratch.AsSpan(0, n);
        for (int i = 0; i < n; i++) xd[i] = x[i];
        for (int i = 0; i < n; i++)
        {
            if (xd[i] == 0) continue;
            var row = h.AsSpan(i * n, n);
            TensorPrimitives.MultiplyAdd(xd, xd[i], row, row);
        }
    }
}

/// <summary>
/// The output matrix's inputs x_t and the reference model's next-token probabilities p_t, for per-row Hessians
/// H_v = Σ_t p_t(v) x_t x_tᵀ. These are the diagonal blocks of the Fisher information of the next-token cross-entropy with
/// respect to the output matrix (the logits' curvature is diag(p_t) − p_t p_tᵀ; the rank-one part is left out), so the
/// expected loss increase ≈ ½ Σ_v (w_v − ŵ_v)ᵀ H_v (w_v − ŵ_v) / T: a row's error counts in the contexts where its token
/// is likely. Probabilities below <see cref="Threshold"/> are not stored; what they add up to per row is taken as that
/// multiple of the mean Gram matrix.
/// </summary>
public sealed class OutputRowStatistics
{
    /// <summary>Smallest probability stored per (position, token).</summary>
    public const float Threshold = 1e-3f;

    /// <summary>
    /// Largest V·D³ (about the work of one D×D factorisation per vocabulary row) for which calibration gathers these
    /// statistics; larger output matrices use the shared Gram matrix.
    /// </summary>
    public const double MaxWork = 1e11;

    private readonly int _d;
    private readonly List<float[]> _inputs = [];        // [T] [D]
    private readonly List<(int Token, int Position, float P)> _entries = [];
    private readonly double[] _mass;                    // [V] Σ_t p_t(v)
    private int[]? _offsets;                            // [V + 1] into _sorted, by token
    private (int Position, float P)[]? _sorted;

    /// <summary>Empty statistics for a [<paramref name="vocab"/>, <paramref name="hidden"/>] output matrix.</summary>
    public OutputRowStatistics(int vocab, int hidden)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vocab);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(hidden);
        _d = hidden;
        _mass = new double[vocab];
    }

    /// <summary>Positions added.</summary>
    public int Positions => _inputs.Count;

    /// <summary>(position, token) probabilities stored (those ≥ <see cref="Threshold"/>).</summary>
    public int StoredProbabilities => _entries.Count;

    /// <summary>Share of the total probability mass the stored probabilities hold.</summary>
    public double StoredMass
    {
        get
        {
            double stored = 0, total = 0;
            foreach (var e in _entries) stored += e.P;
            foreach (double m in _mass) total += m;
            return total > 0 ? stored / total : 0;
        }
    }

    /// <summary>Adds one position: the output matrix's input <paramref name="x"/> [D] and the next-token distribution [V].</summary>
    /// <exception cref="ArgumentException">Wrong lengths.</exception>
    public void Add(ReadOnlySpan<float> x, ReadOnlySpan<float> probabilities)
    {
        if (x.Length != _d) throw new ArgumentException($"{x.Length} inputs, {_d} expected", nameof(x));
        if (probabilities.Length != _mass.Length) throw new ArgumentException($"{probabilities.Length} probabilities, {_mass.Length} expected", nameof(probabilities));
        int t = _inputs.Count;
        _inputs.Add(x.ToArray());
        for (int v = 0; v < probabilities.Length; v++)
        {
            float p = probabilities[v];
            _mass[v] += p;
            if (p >= Threshold) _entries.Add((v, t, p));
        }
        _offsets = null;
    }

    /// <summary>
    /// H_v = Σ_stored p_t(v) x_t x_tᵀ + (m_v − Σ_stored p_t(v)) / T · <paramref name="gram"/> into <paramref name="h"/> [D, D]
    /// for v = <paramref name="row"/>, where m_v = Σ_t p_t(v) and <paramref name="gram"/> = Σ_t x_t x_tᵀ over the T positions.
    /// </summary>
    /// <exception cref="ArgumentException">Wrong lengths or row.</exception>
    public void RowHessian(int row, ReadOnlySpan<double> gram, Span<double> h)
    {
        int d = _d;
        if ((uint)row >= (uint)_mass.Length) throw new ArgumentException($"row {row} outside [0, {_mass.Length})", nameof(row));
        if (gram.Length != d * d || h.Length != d * d) throw new ArgumentException($"gram and h must hold {d}² values");
        if (_offsets is null) Sort();
        h.Clear();
        var xd = new double[d];
        double stored = 0;
        for (int k = _offsets![row]; k < _offsets[row + 1]; k++)
        {
            (int t, float p) = _sorted![k];
            stored += p;
            var x = _inputs[t];
            for (int i = 0; i < d; i++) xd[i] = x[i];
            for (int i = 0; i < d; i++)
            {
                if (xd[i] == 0) continue;
                var hr = h.Slice(i * d, d);
                TensorPrimitives.MultiplyAdd(xd, p * xd[i], hr, hr);
            }
        }
        double tail = Math.Max(0, _mass[row] - stored) / Math.Max(1, _inputs.Count);
        if (tail > 0) TensorPrimitives.MultiplyAdd(gram, tail, h, h);
    }

    // Stored probabilities grouped by token (counting sort, positions ascending within a token).
    private void Sort()
    {
        var offsets = new int[_mass.Length + 1];
        foreach (var e in _entries) offsets[e.Token + 1]++;
        for (int v = 0; v < _mass.Length; v++) offsets[v + 1] += offsets[v];
        var sorted = new (int, float)[_entries.Count];
        var fill = offsets.ToArray();
        foreach (var e in _entries) sorted[fill[e.Token]++] = (e.Position, e.P);
        (_offsets, _sorted) = (offsets, sorted);
    }
}

public static class QuantCalibration
{
    /// <summary>
    /// Runs the model of <paramref name="session"/> on up to <c>o.Tokens</c> tokens of <paramref name="text"/> (windows of
    /// <c>o.Window</c> tokens, each from an empty cache; when the text holds more windows than needed, a seeded choice of them)
    /// and gathers the input Gram matrices.
    /// </summary>
    /// <exception cref="ArgumentException">The text has fewer than two tokens, or the options are out of range.</exception>
    public static QuantCalibrationData Run(ModelSession session, string text, QuantCalibrationOptions o, IProgress<string>? progress = null)
    {
        if (o.Tokens < 2) throw new ArgumentException($"calibration needs at least 2 tokens, not {o.Tokens}");
        if (o.Window < 2) throw new ArgumentException($"the calibration window must be at least 2 tokens, not {o.Window}");
        var c = session.Config;
        var ids = session.Tokenizer.Encode(text, addBos: false).ToArray();
        if (ids.Length < 2) throw new ArgumentException("the calibration text is too short: it needs at least two tokens");
        int window = Math.Min(o.Window, session.State.Context);
        var windows = new List<int>();
        for (int start = 0; start < ids.Length; start += window) windows.Add(start);
        int needed = (o.Tokens + window - 1) / window;
        if (windows.Count > needed)
        {
            var rng = new SeededRandom(o.Seed, "calibration-windows");
            for (int i = windows.Count - 1; i > 0; i--)
            {
                int j = (int)(rng.NextULong() % (ulong)(i + 1));
                (windows[i], windows[j]) = (windows[j], windows[i]);
            }
            windows = windows.Take(needed).Order().ToList();
        }

        var data = new QuantCalibrationData(c);
        var recorder = new Recorder(session.Checkpoint, data, o);
        var model = session.Model;
        var (oldRunner, oldObserver) = (model.Experts, model.Observer);
        try
        {
            model.Experts = new RecordingRunner(oldRunner, recorder);
            model.Observer = recorder;
            int done = 0;
            foreach (int start in windows)
            {
                int count = Math.Min(Math.Min(window, ids.Length - start), o.Tokens - done);
                if (count < 1) break;
                session.State.Reset();
                model.Forward(session.State, ids.AsSpan(start, count), default, allPositions: false, session.Team);
                done += count;
                progress?.Report($"calibration: {done}/{Math.Min(o.Tokens, ids.Length)} tokens");
            }
            data.Tokens = done;
        }
        finally
        {
            model.Experts = oldRunner;
            model.Observer = oldObserver;
        }
        return data;
    }

    // Wraps the model's expert runner: sees each layer's routing and the inputs of its routed experts, then runs them as usual.
    private sealed class RecordingRunner(IExpertRunner inner, Recorder recorder) : IExpertRunner
    {
        public void Run(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team)
        {
            recorder.Experts(layer, ids, x);
            inner.Run(layer, ids, weights, x, y, scratch, team);
        }

        public void RunBatch(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team)
        {
            recorder.Experts(layer, ids, x);
            inner.RunBatch(layer, ids, weights, x, y, scratch, team);
        }

        public void ObserveRouting(int layer, ReadOnlySpan<float> probabilities)
        {
            recorder.Routing(probabilities);
            inner.ObserveRouting(layer, probabilities);
        }

        public void AfterAttention(int layer, ReadOnlySpan<float> hidden, int tokens, bool decodeStep) =>
            inner.AfterAttention(layer, hidden, tokens, decodeStep);
    }

    private sealed class Recorder : IForwardObserver
    {
        private readonly ModelConfig _c;
        private readonly QuantCalibrationData _data;
        private readonly QuantCalibrationOptions _o;
        private readonly float[][][] _gate, _up;        // [layer][expert] [F, D] floats, loaded on first use
        private readonly float[]?[] _sharedGate, _sharedUp; // [layer] [Fs, D]
        private readonly Checkpoint _ck;
        private readonly float[] _outputNorm;           // [D]
        private readonly float[]? _output;              // [V, D] or null when tied
        private readonly float[] _logits;               // [V]
        private readonly List<float[]> _probs = [];     // router probabilities of the block's tokens, in order
        private readonly Dictionary<int, float[]> _lastResidual = [];
        private readonly double[] _scratch;
        private readonly float[] _middle, _up1, _final;
        private readonly int[] _top;
        private readonly float[] _topValues;

        public Recorder(Checkpoint ck, QuantCalibrationData data, QuantCalibrationOptions o)
        {
            _ck = ck;
            _c = ck.Config;
            _data = data;
            _o = o;
            int layers = _c.NumLayers, e = _c.NumExperts, f = Math.Max(_c.ExpertFfn, _c.SharedExpertFfn);
            _gate = Enumerable.Range(0, layers).Select(_ => new float[e][]).ToArray();
            _up = Enumerable.Range(0, layers).Select(_ => new float[e][]).ToArray();
            _sharedGate = new float[layers][];
            _sharedUp = new float[layers][];
            _outputNorm = GgufExport.ReadMatrix(ck, ck.Specs.First(s => s.Role == TensorRole.OutputNorm), -1);
            if (ck.Specs.FirstOrDefault(s => s.Role == TensorRole.Output) is { } outSpec
                && (double)_c.VocabSize * _c.HiddenSize * _c.HiddenSize * _c.HiddenSize <= OutputRowStatistics.MaxWork)
            {
                _output = GgufExport.ReadMatrix(ck, outSpec, -1);
                data.OutputRows = new OutputRowStatistics(_c.VocabSize, _c.HiddenSize);
            }
            _logits = new float[_c.VocabSize];
            _scratch = new double[Math.Max(Math.Max(_c.HiddenSize, _c.NumHeads * _c.HeadDim), f)];
            _middle = new float[f];
            _up1 = new float[f];
            _final = new float[_c.HiddenSize];
            _top = new int[Math.Min(e, _c.NumExpertsUsed + o.BalanceExtra)];
            _topValues = new float[_top.Length];
        }

        public void OnTensor(string name, int layer, int position, ReadOnlySpan<float> values)
        {
            switch (name)
            {
                case "attn_input": QuantCalibrationData.AddOuter(_data.AttnInput[layer], values, _scratch); break;
                case "attn_output": QuantCalibrationData.AddOuter(_data.AttnOutput[layer], values, _scratch); break;
                case "attn_residual" when layer == _c.NumLayers - 1: _lastResidual[position] = values.ToArray(); break;
                case "moe_out" when layer == _c.NumLayers - 1 && _lastResidual.Remove(position, out var residual):
                    // The final hidden state is the residual after attention plus the MoE output; lm_head sees it normed.
                    for (int i = 0; i < residual.Length; i++) residual[i] += values[i];
                    ElementOps.RmsNorm(residual, _outputNorm, _c.RmsNormEps, _final);
                    QuantCalibrationData.AddOuter(_data.OutputInput, _final, _scratch);
                    if (_output is not null) OutputProbabilities();
                    break;
            }
        }

        // The reference model's next-token distribution at this position, softmax(W_out · x), for the output's row statistics.
        private void OutputProbabilities()
        {
            int d = _c.HiddenSize;
            for (int v = 0; v < _logits.Length; v++) _logits[v] = TensorPrimitives.Dot(_output.AsSpan(v * d, d), _final);
            ElementOps.Softmax(_logits);
            _data.OutputRows!.Add(_final, _logits);
        }

        public void OnRouting(int layer, int position, ReadOnlySpan<float> probs, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights) { }

        public void Routing(ReadOnlySpan<float> probabilities) => _probs.Add(probabilities.ToArray());

        public void Experts(int layer, ReadOnlySpan<int> ids, ActivationQ8 x)
        {
            int tokens = x.Tokens, k = ids.Length / tokens;
            for (int t = 0; t < tokens; t++)
            {
                var input = x.Values(t);
                var chosen = ids.Slice(t * k, k);
                foreach (int e in chosen)
                {
                    _data.RoutedTokens[layer, e]++;
                    Add(layer, e, input);
                }
                if (_o.ExpertBalanced && t < _probs.Count)
                {
                    ElementOps.TopK(_probs[t], _top.Length, _top, _topValues);
                    foreach (int e in _top)
                        if (!chosen.Contains(e)) Add(layer, e, input);
                }
                if (_c.SharedExpertFfn > 0) AddShared(layer, input);
            }
            _probs.Clear();
        }

        private void Add(int layer, int e, ReadOnlySpan<float> input)
        {
            _data.CalibrationTokens[layer, e]++;
            int d = _c.HiddenSize, f = _c.ExpertFfn;
            var hin = _data.ExpertInput[layer][e] ??= new double[d * d];
            var hmid = _data.ExpertMiddle[layer][e] ??= new double[f * f];
            QuantCalibrationData.AddOuter(hin, input, _scratch);
            var gate = _gate[layer][e] ??= Matrix(TensorRole.ExpertGate, layer, e);
            var up = _up[layer][e] ??= Matrix(TensorRole.ExpertUp, layer, e);
            SwiGluMiddle(gate, up, input, f, _middle.AsSpan(0, f));
            QuantCalibrationData.AddOuter(hmid, _middle.AsSpan(0, f), _scratch);
        }

        private void AddShared(int layer, ReadOnlySpan<float> input)
        {
            int d = _c.HiddenSize, fs = _c.SharedExpertFfn;
            var hin = _data.SharedInput[layer] ??= new double[d * d];
            var hmid = _data.SharedMiddle[layer] ??= new double[fs * fs];
            QuantCalibrationData.AddOuter(hin, input, _scratch);
            var gate = _sharedGate[layer] ??= Matrix(TensorRole.SharedGate, layer, -1);
            var up = _sharedUp[layer] ??= Matrix(TensorRole.SharedUp, layer, -1);
            SwiGluMiddle(gate, up, input, fs, _middle.AsSpan(0, fs));
            QuantCalibrationData.AddOuter(hmid, _middle.AsSpan(0, fs), _scratch);
        }

        // middle = silu(gate·x) ⊙ (up·x) in float, from the unquantized weights.
        private void SwiGluMiddle(float[] gate, float[] up, ReadOnlySpan<float> x, int f, Span<float> middle)
        {
            int d = x.Length;
            for (int r = 0; r < f; r++)
            {
                float g = TensorPrimitives.Dot(gate.AsSpan(r * d, d), x);
                _up1[r] = TensorPrimitives.Dot(up.AsSpan(r * d, d), x);
                middle[r] = g / (1 + MathF.Exp(-g)) * _up1[r];
            }
        }

        private float[] Matrix(TensorRole role, int layer, int expert) =>
            GgufExport.ReadMatrix(_ck, _ck.Specs.First(s => s.Role == role && s.Layer == layer), expert);
    }
}
