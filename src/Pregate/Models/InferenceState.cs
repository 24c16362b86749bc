// Per-session state of the forward pass: the KV cache and every activation buffer, allocated once so that a
// forward step allocates nothing (llama2.c's RunState). Activations hold a block of up to MaxBatch tokens (prefill runs
// the prompt in such blocks; decode uses the first row). Buffers the kernels write through pointers are pinned.
using Pregate.Core;
using Pregate.Kernels;

namespace Pregate.Models;

/// <summary>KV cache and scratch buffers for one sequence of up to <see cref="Context"/> tokens.</summary>
public sealed class InferenceState
{
    /// <summary>Tokens per forward block when the caller does not choose: enough to group tokens per expert in prefill.</summary>
    public const int DefaultMaxBatch = 128;

    public int Context { get; }

    /// <summary>Tokens one forward block holds; longer inputs run in several blocks.</summary>
    public int MaxBatch { get; }

    /// <summary>Tokens already in the KV cache; the next token goes to this position.</summary>
    public int Position { get; internal set; }

    internal readonly float[][] Keys;     // per layer [Context, Hkv·hd]
    internal readonly float[][] Values;   // per layer [Context, Hkv·hd]
    internal readonly float[] Hidden;     // [B, D] residual stream
    internal readonly float[] Normed;     // [B, D]
    internal readonly float[] Q;          // [B, H·hd]
    internal readonly float[] K;          // [B, Hkv·hd]
    internal readonly float[] V;          // [B, Hkv·hd]
    internal readonly float[] AttnOut;    // [B, H·hd]
    internal readonly float[] Scores;     // [max(B, H), Context]: one row per token (prefill) or per head (decode)
    internal readonly float[] CosSin;     // [B, hd]
    internal readonly float[] Projected;  // [B, D]
    internal readonly float[] MoeOut;     // [B, D]
    internal readonly float[] RouterLogits; // [B, E]
    internal readonly int[] ExpertIds;    // [B, k]
    internal readonly float[] ExpertWeights; // [B, k]
    internal readonly ActivationQ8 HiddenAct;  // input of q/k/v, router, experts: [B, D]
    internal readonly ActivationQ8 AttnAct;    // input of o_proj: [B, H·hd]
    internal readonly ExpertScratch Expert;
    internal readonly MatMulTask[] AttentionTasks = new MatMulTask[3];   // q, k, v projections as one job

    /// <summary>
    /// Allocates the cache for <paramref name="context"/> tokens and activations for blocks of <paramref name="maxBatch"/>
    /// tokens (≤ 0: min(context, <see cref="DefaultMaxBatch"/>)).
    /// </summary>
    public InferenceState(ModelConfig c, int context, int maxBatch = 0) : this(c, context, maxBatch, allocateCache: true)
    {
    }

    // allocateCache false: activations only (the rows of a DecodeBatch, whose sequences keep their own caches).
    private InferenceState(ModelConfig c, int context, int maxBatch, bool allocateCache)
    {
        if (context < 1) throw new ArgumentOutOfRangeException(nameof(context), context, "context must be at least 1 token");
        Context = context;
        MaxBatch = maxBatch > 0 ? Math.Min(maxBatch, context) : Math.Min(context, DefaultMaxBatch);
        int b = MaxBatch;
        int d = c.HiddenSize, q = c.NumHeads * c.HeadDim, kv = c.NumKvHeads * c.HeadDim;
        long cacheFloats = allocateCache ? (long)context * kv : 0;
        if (cacheFloats > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(context), context, "KV cache too large for one buffer per layer");
        long scoreFloats = allocateCache ? (long)Math.Max(b, c.NumHeads) * context : 0;
        if (scoreFloats > Array.MaxLength) throw new ArgumentOutOfRangeException(nameof(context), context, "attention scores too large for one buffer");
        Keys = new float[c.NumLayers][];
        Values = new float[c.NumLayers][];
        for (int i = 0; i < c.NumLayers; i++)
        {
            Keys[i] = Pinned(cacheFloats);
            Values[i] = Pinned(cacheFloats);
        }
        Hidden = Pinned((long)b * d);
        Normed = Pinned((long)b * d);
        Q = Pinned((long)b * q);
        K = Pinned((long)b * kv);
        V = Pinned((long)b * kv);
        AttnOut = Pinned((long)b * q);
        Scores = Pinned(scoreFloats);
        CosSin = Pinned((long)b * c.HeadDim);
        Projected = Pinned((long)b * d);
        MoeOut = Pinned((long)b * d);
        RouterLogits = Pinned((long)b * c.NumExperts);
        ExpertIds = new int[b * c.NumExpertsUsed];
        ExpertWeights = new float[b * c.NumExpertsUsed];
        HiddenAct = new ActivationQ8(d, b);
        AttnAct = new ActivationQ8(q, b);
        Expert = new ExpertScratch(d, Math.Max(c.ExpertFfn, c.SharedExpertFfn), b, c.NumExpertsUsed);
    }

    /// <summary>Activation buffers for blocks of <paramref name="rows"/> tokens and no KV cache.</summary>
    internal static InferenceState ActivationsOnly(ModelConfig c, int rows) => new(c, rows, rows, allocateCache: false);

    private static float[] Pinned(long n) => GC.AllocateArray<float>(checked((int)n), pinned: true);

    /// <summary>Bytes of the KV cache.</summary>
    public long KvCacheBytes => 2L * Keys.Length * (Keys.Length == 0 ? 0 : Keys[0].LongLength) * sizeof(float);

    /// <summary>Forgets the sequence (the buffers are kept).</summary>
    public void Reset() => Position = 0;
}

/// <summary>
/// Scratch of <see cref="MoeModel.ForwardStep"/>: activations for up to <see cref="MaxSequences"/> sequences decoding one
/// token each, and the per-sequence pointers of the batched attention. Create once (<see cref="MoeModel.CreateDecodeBatch"/>)
/// and reuse for every step; one step at a time.
/// </summary>
public sealed class DecodeBatch
{
    internal readonly InferenceState Rows;   // activations [B, …]; no KV cache of its own
    internal readonly nint[] Keys;           // [B] the layer's key cache of each sequence
    internal readonly nint[] Values;         // [B] the layer's value cache of each sequence
    internal readonly nint[] Scores;         // [B] each sequence's scores buffer [H, Context]
    internal readonly int[] Positions;       // [B] each sequence's position (before the step)
    internal readonly int[] ScoreStrides;    // [B] each sequence's context

    internal DecodeBatch(ModelConfig c, int maxSequences)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxSequences, 1);
        MaxSequences = maxSequences;
        Rows = InferenceState.ActivationsOnly(c, maxSequences);
        Keys = GC.AllocateArray<nint>(maxSequences, pinned: true);
        Values = GC.AllocateArray<nint>(maxSequences, pinned: true);
        Scores = GC.AllocateArray<nint>(maxSequences, pinned: true);
        Positions = GC.AllocateArray<int>(maxSequences, pinned: true);
        ScoreStrides = GC.AllocateArray<int>(maxSequences, pinned: true);
    }

    /// <summary>Sequences one step can decode.</summary>
    public int MaxSequences { get; }
}

/// <summary>
/// Buffers for SwiGLU experts over up to <see cref="MaxSlots"/> (token, expert) pairs at once: the gathered inputs [S, D],
/// gate and up activations [S, F], the down projection's input and its output [S, D], and the grouping of a block's
/// routed tokens by expert.
/// </summary>
public sealed class ExpertScratch
{
    internal readonly float[] Gate;          // [S, F]
    internal readonly float[] Up;            // [S, F]
    internal readonly float[] Out;           // [S, D]
    internal readonly ActivationQ8 DownAct;  // [S, F]
    internal readonly ActivationQ8 Gathered; // [S, D] inputs grouped by expert
    internal readonly ActivationQ8 TokenInput; // [1, D] one token's input (runners without a batched path)
    internal readonly ExpertGrouping Grouping;
    internal readonly MatMulTask[] Tasks;    // [2·S] the products of one grouped run

    /// <summary>Room for one token's single expert (<paramref name="hidden"/> D, <paramref name="ffn"/> F).</summary>
    public ExpertScratch(int hidden, int ffn) : this(hidden, ffn, 1, 1)
    {
    }

    /// <summary>Room for blocks of <paramref name="maxTokens"/> tokens routed to <paramref name="expertsPerToken"/> experts each.</summary>
    public ExpertScratch(int hidden, int ffn, int maxTokens, int expertsPerToken)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokens, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(expertsPerToken, 1);
        Hidden = hidden;
        Ffn = ffn;
        MaxTokens = maxTokens;
        MaxSlots = checked(maxTokens * expertsPerToken);
        Gate = GC.AllocateArray<float>(checked(MaxSlots * ffn), pinned: true);
        Up = GC.AllocateArray<float>(checked(MaxSlots * ffn), pinned: true);
        Out = GC.AllocateArray<float>(checked(MaxSlots * hidden), pinned: true);
        DownAct = new ActivationQ8(ffn, MaxSlots);
        Gathered = new ActivationQ8(hidden, MaxSlots);
        TokenInput = new ActivationQ8(hidden);
        Grouping = new ExpertGrouping(MaxSlots);
        Tasks = new MatMulTask[2 * MaxSlots];
    }

    public int Hidden { get; }
    public int Ffn { get; }

    /// <summary>Tokens per block.</summary>
    public int MaxTokens { get; }

    /// <summary>(token, expert) pairs computed at once.</summary>
    public int MaxSlots { get; }
}
