// The decoder shared by every MoE family: embedding → per layer (RMSNorm → GQA attention with RoPE → residual →
// RMSNorm → router → routed experts (+ shared expert) → residual) → final norm → lm_head. Families override what
// differs (q/k normalisation, routing, shared expert) in their own file, named after the HF model_type.
using Pregate.Core;
using Pregate.Formats;
using Pregate.Kernels;

namespace Pregate.Models;

/// <summary>An MoE decoder bound to a checkpoint's weights. Immutable after construction; per-sequence state lives in <see cref="InferenceState"/>.</summary>
public abstract class MoeModel
{
    protected sealed class Layer
    {
        public required float[] AttnNorm;      // [D]
        public required WeightMatrix Q;        // [H·hd, D]
        public required WeightMatrix K;        // [Hkv·hd, D]
        public required WeightMatrix V;        // [Hkv·hd, D]
        public required WeightMatrix O;        // [D, H·hd]
        public float[]? QBias, KBias, VBias;   // [H·hd], [Hkv·hd], [Hkv·hd]
        public float[]? QNorm, KNorm;          // [hd] per head or [H·hd]/[Hkv·hd] whole
        public required float[] FfnNorm;       // [D]
        public required WeightMatrix Router;   // [E, D]
        public ExpertWeights? Shared;          // shared expert: gate/up [Fs, D], down [D, Fs]
        public float[]? SharedGate;            // [D]
    }

    private readonly TensorView _embedding;    // [V, D]
    private readonly float[] _outputNorm;      // [D]
    private readonly WeightMatrix _output;     // [V, D]
    private readonly RopeMode _rope;
    private readonly float _attnScale;
    protected readonly Layer[] Layers;

    public ModelConfig Config { get; }
    public Checkpoint Checkpoint { get; }

    /// <summary>Where routed experts are computed; resident (the mapped file) unless the engine installs another runner.</summary>
    public IExpertRunner Experts { get; set; }

    public IForwardObserver? Observer { get; set; }

    protected MoeModel(Checkpoint ck)
    {
        Checkpoint = ck;
        Config = ck.Config;
        var c = Config;
        _embedding = ck.Get(TensorRole.TokenEmbedding);
        _outputNorm = Floats(ck.Get(TensorRole.OutputNorm));
        _output = WeightMatrix.FromTensor(c.TieWordEmbeddings ? _embedding : ck.Get(TensorRole.Output));
        _rope = ck.RopeAdjacentPairs ? RopeMode.Normal : RopeMode.Neox;
        _attnScale = 1f / MathF.Sqrt(c.HeadDim);
        Layers = new Layer[c.NumLayers];
        for (int i = 0; i < c.NumLayers; i++)
        {
            var l = new Layer
            {
                AttnNorm = Floats(ck.Get(TensorRole.AttnNorm, i)),
                Q = WeightMatrix.FromTensor(ck.Get(TensorRole.AttnQ, i)),
                K = WeightMatrix.FromTensor(ck.Get(TensorRole.AttnK, i)),
                V = WeightMatrix.FromTensor(ck.Get(TensorRole.AttnV, i)),
                O = WeightMatrix.FromTensor(ck.Get(TensorRole.AttnOutput, i)),
                FfnNorm = Floats(ck.Get(TensorRole.FfnNorm, i)),
                Router = WeightMatrix.FromTensor(ck.Get(TensorRole.Router, i)),
            };
            if (ck.TryGet(TensorRole.AttnQBias, i, out var qb)) l.QBias = Floats(qb);
            if (ck.TryGet(TensorRole.AttnKBias, i, out var kb)) l.KBias = Floats(kb);
            if (ck.TryGet(TensorRole.AttnVBias, i, out var vb)) l.VBias = Floats(vb);
            if (ck.TryGet(TensorRole.AttnQNorm, i, out var qn)) l.QNorm = Floats(qn);
            if (ck.TryGet(TensorRole.AttnKNorm, i, out var kn)) l.KNorm = Floats(kn);
            if (ck.TryGet(TensorRole.SharedGate, i, out var sg))
            {
                l.Shared = new ExpertWeights(WeightMatrix.FromTensor(sg),
                    WeightMatrix.FromTensor(ck.Get(TensorRole.SharedUp, i)), WeightMatrix.FromTensor(ck.Get(TensorRole.SharedDown, i)));
                l.SharedGate = Floats(ck.Get(TensorRole.SharedExpertGate, i));
            }
            Layers[i] = l;
        }
        Experts = new ResidentExperts(ck);
    }

    /// <summary>The model for <paramref name="ck"/>'s architecture.</summary>
    public static MoeModel Load(Checkpoint ck) => ck.Config.Architecture switch
    {
        Architecture.Mixtral => new Mixtral(ck),
        Architecture.Qwen2Moe => new Qwen2Moe(ck),
        Architecture.Qwen3Moe => new Qwen3Moe(ck),
        Architecture.Olmoe => new Olmoe(ck),
        _ => throw new ModelFormatException(ck.Path, $"unsupported architecture {ck.Config.Architecture}"),
    };

    public InferenceState CreateState(int context) => new(Config, context);

    /// <summary>
    /// Runs <paramref name="token"/> at position <c>state.Position</c>, appends its keys and values to the cache and advances
    /// the position. Writes the next-token logits [V] into <paramref name="logits"/> unless it is empty.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The token is outside the vocabulary or the context is full.</exception>
    public void Forward(InferenceState s, int token, Span<float> logits, WorkerTeam? team = null)
    {
        var c = Config;
        if ((uint)token >= (uint)c.VocabSize) throw new ArgumentOutOfRangeException(nameof(token), token, $"token id outside the vocabulary (0..{c.VocabSize - 1})");
        if (s.Position >= s.Context) throw new ArgumentOutOfRangeException(nameof(s), s.Position, $"the context of {s.Context} tokens is full");
        int pos = s.Position;
        Embed(token, s.Hidden);
        Rope.CosSin(pos, c.RopeTheta, c.HeadDim, s.CosSin);
        for (int i = 0; i < Layers.Length; i++)
        {
            var l = Layers[i];
            Attention(i, l, s, pos, team);
            Observer?.OnTensor("attn_residual", i, pos, s.Hidden);

            ElementOps.RmsNorm(s.Hidden, l.FfnNorm, c.RmsNormEps, s.Normed);
            s.HiddenAct.Load(s.Normed);
            MatVec.Run(l.Router, s.HiddenAct, s.RouterLogits, team);
            Route(i, s.RouterLogits, s.ExpertIds, s.ExpertWeights);
            Observer?.OnRouting(i, pos, s.RouterLogits, s.ExpertIds, s.ExpertWeights);
            Experts.ObserveRouting(i, s.RouterLogits);
            s.MoeOut.AsSpan().Clear();
            Experts.Run(i, s.ExpertIds, s.ExpertWeights, s.HiddenAct, s.MoeOut, s.Expert, team);
            AddSharedExpert(l, s, team);
            Observer?.OnTensor("moe_out", i, pos, s.MoeOut);
            ElementOps.Add(s.Hidden, s.MoeOut);
        }
        s.Position = pos + 1;
        if (logits.IsEmpty) return;
        ElementOps.RmsNorm(s.Hidden, _outputNorm, c.RmsNormEps, s.Normed);
        s.HiddenAct.Load(s.Normed);
        MatVec.Run(_output, s.HiddenAct, logits, team);
    }

    /// <summary>Chooses the experts of <paramref name="layer"/> from its router logits (overwritten freely).</summary>
    protected abstract void Route(int layer, Span<float> routerLogits, Span<int> ids, Span<float> weights);

    /// <summary>Normalises the projected q [H·hd] and k [Hkv·hd] before RoPE (Qwen3-MoE per head, OLMoE whole). Default: nothing.</summary>
    protected virtual void NormalizeQK(Layer l, Span<float> q, Span<float> k) { }

    /// <summary>Adds the shared expert's contribution to state.MoeOut (Qwen2-MoE). Default: nothing.</summary>
    protected virtual void AddSharedExpert(Layer l, InferenceState s, WorkerTeam? team) { }

    private void Attention(int layer, Layer l, InferenceState s, int pos, WorkerTeam? team)
    {
        var c = Config;
        int hd = c.HeadDim, kvDim = c.NumKvHeads * hd, group = c.NumHeads / c.NumKvHeads;
        ElementOps.RmsNorm(s.Hidden, l.AttnNorm, c.RmsNormEps, s.Normed);
        s.HiddenAct.Load(s.Normed);
        MatVec.Run(l.Q, s.HiddenAct, s.Q, team);
        MatVec.Run(l.K, s.HiddenAct, s.K, team);
        MatVec.Run(l.V, s.HiddenAct, s.V, team);
        if (l.QBias is not null) ElementOps.Add(s.Q, l.QBias);
        if (l.KBias is not null) ElementOps.Add(s.K, l.KBias);
        if (l.VBias is not null) ElementOps.Add(s.V, l.VBias);
        NormalizeQK(l, s.Q, s.K);
        Rope.Apply(s.Q, c.NumHeads, hd, s.CosSin, _rope);
        Rope.Apply(s.K, c.NumKvHeads, hd, s.CosSin, _rope);
        s.K.CopyTo(s.Keys[layer].AsSpan(pos * kvDim, kvDim));
        s.V.CopyTo(s.Values[layer].AsSpan(pos * kvDim, kvDim));

        // softmax(q·Kᵀ/√hd) V per head; head h reads kv head h / (H/Hkv).
        var keys = s.Keys[layer];
        var values = s.Values[layer];
        var scores = s.Scores.AsSpan(0, pos + 1);
        for (int h = 0; h < c.NumHeads; h++)
        {
            var q = s.Q.AsSpan(h * hd, hd);
            int kvOff = h / group * hd;
            for (int t = 0; t <= pos; t++)
                scores[t] = ElementOps.Dot(q, keys.AsSpan(t * kvDim + kvOff, hd)) * _attnScale;
            ElementOps.Softmax(scores);
            var o = s.AttnOut.AsSpan(h * hd, hd);
            o.Clear();
            for (int t = 0; t <= pos; t++)
                ElementOps.WeightedAdd(o, scores[t], values.AsSpan(t * kvDim + kvOff, hd));
        }
        s.AttnAct.Load(s.AttnOut);
        MatVec.Run(l.O, s.AttnAct, s.Projected, team);
        ElementOps.Add(s.Hidden, s.Projected);
    }

    private void Embed(int token, Span<float> dst)
    {
        long rowBytes = DTypes.ByteCount(_embedding.Type, Config.HiddenSize);
        unsafe
        {
            var row = new ReadOnlySpan<byte>((byte*)_embedding.Pointer + token * rowBytes, checked((int)rowBytes));
            Quantize.Dequantize(_embedding.Type, row, dst);
        }
    }

    /// <summary>A 1-D tensor (norm weights, biases) widened to float.</summary>
    protected static float[] Floats(TensorView t)
    {
        var dst = new float[t.ElementCount];
        Quantize.Dequantize(t.Type, t.Bytes, dst);
        return dst;
    }

    /// <summary>RMSNorm of each of <paramref name="heads"/> vectors of <paramref name="x"/> with one shared weight [hd], in place.</summary>
    protected void RmsNormPerHead(Span<float> x, int heads, ReadOnlySpan<float> weight)
    {
        int hd = weight.Length;
        for (int h = 0; h < heads; h++)
        {
            var v = x.Slice(h * hd, hd);
            ElementOps.RmsNorm(v, weight, Config.RmsNormEps, v);
        }
    }
}
