// Per-session state of the forward pass: the KV cache and every activation buffer, allocated once so that a
// forward step allocates nothing (llama2.c's RunState).
using Pregate.Core;
using Pregate.Kernels;

namespace Pregate.Models;

/// <summary>KV cache and scratch buffers for one sequence of up to <see cref="Context"/> tokens.</summary>
public sealed class InferenceState
{
    public int Context { get; }

    /// <summary>Tokens already in the KV cache; the next token goes to this position.</summary>
    public int Position { get; internal set; }

    internal readonly float[][] Keys;     // per layer [Context, Hkv·hd]
    internal readonly float[][] Values;   // per layer [Context, Hkv·hd]
    internal readonly float[] Hidden;     // [D] residual stream
    internal readonly float[] Normed;     // [D]
    internal readonly float[] Q;          // [H·hd]
    internal readonly float[] K;          // [Hkv·hd]
    internal readonly float[] V;          // [Hkv·hd]
    internal readonly float[] AttnOut;    // [H·hd]
    internal readonly float[] Scores;     // [Context]
    internal readonly float[] CosSin;     // [hd]
    internal readonly float[] Projected;  // [D]
    internal readonly float[] MoeOut;     // [D]
    internal readonly float[] RouterLogits; // [E]
    internal readonly int[] ExpertIds;    // [k]
    internal readonly float[] ExpertWeights; // [k]
    internal readonly ActivationQ8 HiddenAct;  // input of q/k/v, router, experts: [D]
    internal readonly ActivationQ8 AttnAct;    // input of o_proj: [H·hd]
    internal readonly ExpertScratch Expert;

    public InferenceState(ModelConfig c, int context)
    {
        if (context < 1) throw new ArgumentOutOfRangeException(nameof(context), context, "context must be at least 1 token");
        Context = context;
        int d = c.HiddenSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim;
        long cacheFloats = (long)context * kv;
        if (cacheFloats > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(context), context, "KV cache too large for one buffer per layer");
        Keys = new float[c.NumLayers][];
        Values = new float[c.NumLayers][];
        for (int i = 0; i < c.NumLayers; i++)
        {
            Keys[i] = new float[cacheFloats];
            Values[i] = new float[cacheFloats];
        }
        Hidden = new float[d];
        Normed = new float[d];
        Q = new float[q];
        K = new float[kv];
        V = new float[kv];
        AttnOut = new float[q];
        Scores = new float[context];
        CosSin = new float[c.HeadDim];
        Projected = new float[d];
        MoeOut = new float[d];
        RouterLogits = new float[c.NumExperts];
        ExpertIds = new int[c.NumExpertsUsed];
        ExpertWeights = new float[c.NumExpertsUsed];
        HiddenAct = new ActivationQ8(d);
        AttnAct = new ActivationQ8(q);
        Expert = new ExpertScratch(d, Math.Max(c.ExpertFfn, c.SharedExpertFfn));
    }

    /// <summary>Bytes of the KV cache.</summary>
    public long KvCacheBytes => 2L * Keys.Length * (Keys.Length == 0 ? 0 : Keys[0].LongLength) * sizeof(float);

    /// <summary>Forgets the sequence (the buffers are kept).</summary>
    public void Reset() => Position = 0;
}

/// <summary>Buffers one SwiGLU expert needs: gate and up activations [F], the down projection's input and its output [D].</summary>
public sealed class ExpertScratch
{
    internal readonly float[] Gate;
    internal readonly float[] Up;
    internal readonly float[] Out;
    internal readonly ActivationQ8 DownAct;

    public ExpertScratch(int hidden, int ffn)
    {
        Gate = new float[ffn];
        Up = new float[ffn];
        Out = new float[hidden];
        DownAct = new ActivationQ8(ffn);
    }
}
