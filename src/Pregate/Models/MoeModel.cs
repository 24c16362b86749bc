// The decoder shared by every MoE family: embedding → per layer (RMSNorm → GQA attention with RoPE → residual →
// RMSNorm → router → routed experts (+ shared expert) → residual) → final norm → lm_head. Families override what
// differs (q/k normalisation, routing, shared expert) in their own file, named after the HF model_type.
using System.Runtime.CompilerServices;
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
    private WeightMatrix _output;              // [V, D] (interleaved before the first CPU forward pass)
    private readonly RopeMode _rope;
    private readonly float _attnScale;
    protected readonly Layer[] Layers;

    public ModelConfig Config { get; }
    public Checkpoint Checkpoint { get; }

    /// <summary>
    /// Where routed experts are computed: unless the engine installs another runner, <see cref="ResidentExperts"/> (made on
    /// first use, with interleaved copies when <see cref="InterleaveWeights"/>).
    /// </summary>
    public IExpertRunner Experts
    {
        get => _experts ??= new ResidentExperts(Checkpoint, InterleaveWeights);
        set => _experts = value;
    }

    private IExpertRunner? _experts;

    /// <summary>
    /// Whether, in the resident mode (<see cref="Experts"/> left to <see cref="ResidentExperts"/>), the CPU forward pass
    /// copies the Q8_0 and Q4_0 matrices into <see cref="InterleavedWeights"/> (rows interleaved in groups of eight, as
    /// llama.cpp repacks them) before its first run: faster one-token products, the same bits, and the matrices' bytes held
    /// in process memory instead of the file's page cache (their mapped pages are dropped), so the model must fit in
    /// memory. On by default; set before the first forward pass. Runs with another expert runner (offloaded experts) copy
    /// nothing.
    /// </summary>
    public bool InterleaveWeights { get; init; } = true;

    private InterleavedWeights? _interleaved;
    private readonly Lock _interleaveLock = new();

    /// <summary>Bytes of the interleaved copies made so far (the resident runner's included), 0 before the first forward pass.</summary>
    public long InterleavedBytes => (_interleaved?.Bytes ?? 0) + ((_experts as ResidentExperts)?.InterleavedBytes ?? 0);

    public IForwardObserver? Observer { get; set; }

    /// <summary>Another device that runs every forward pass instead of the CPU kernels (null: the CPU).</summary>
    public IForwardBackend? Backend { get; set; }

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
        WeightBytesPerToken = BytesReadPerToken(ck);
    }

    private static long BytesReadPerToken(Checkpoint ck)
    {
        var c = ck.Config;
        long bytes = 0;
        foreach (var spec in ck.Specs)
        {
            if (spec.IsRoutedExpert) bytes += c.NumExpertsUsed * ck.GetExpert(spec.Role, spec.Layer, 0).ByteLength;
            else if (spec.Role == TensorRole.TokenEmbedding && !c.TieWordEmbeddings) bytes += ck.Get(spec.Role).RowBytes;
            else bytes += ck.Get(spec.Role, spec.Layer).ByteLength;
        }
        return bytes;
    }

    /// <summary>The model for <paramref name="ck"/>'s architecture (see <see cref="InterleaveWeights"/>).</summary>
    public static MoeModel Load(Checkpoint ck, bool interleaveWeights = true) => ck.Config.Architecture switch
    {
        Architecture.Mixtral => new Mixtral(ck) { InterleaveWeights = interleaveWeights },
        Architecture.Qwen2Moe => new Qwen2Moe(ck) { InterleaveWeights = interleaveWeights },
        Architecture.Qwen3Moe => new Qwen3Moe(ck) { InterleaveWeights = interleaveWeights },
        Architecture.Olmoe => new Olmoe(ck) { InterleaveWeights = interleaveWeights },
        _ => throw new ModelFormatException(ck.Path, $"unsupported architecture {ck.Config.Architecture}"),
    };

    /// <summary>
    /// Bytes the interleaved copies of <paramref name="ck"/> would hold (<see cref="InterleaveWeights"/>): its Q8_0 and Q4_0
    /// attention, shared-expert and output matrices, and with <paramref name="routedExperts"/> its routed experts (the
    /// resident mode); 0 where nothing can be interleaved (other types, or a CPU without the interleaved kernels).
    /// </summary>
    public static long InterleavableBytes(Checkpoint ck, bool routedExperts)
    {
        var c = ck.Config;
        long bytes = 0;
        void Add(in TensorView v)
        {
            var w = WeightMatrix.FromTensor(v);
            if (InterleavedWeights.CanInterleave(w)) bytes += w.RowBytes * w.Rows;
        }
        Add(c.TieWordEmbeddings ? ck.Get(TensorRole.TokenEmbedding) : ck.Get(TensorRole.Output));
        for (int i = 0; i < c.NumLayers; i++)
        {
            foreach (var role in (ReadOnlySpan<TensorRole>)[TensorRole.AttnQ, TensorRole.AttnK, TensorRole.AttnV, TensorRole.AttnOutput])
                Add(ck.Get(role, i));
            if (ck.TryGet(TensorRole.SharedGate, i, out var sg))
            {
                Add(sg);
                Add(ck.Get(TensorRole.SharedUp, i));
                Add(ck.Get(TensorRole.SharedDown, i));
            }
            if (!routedExperts) continue;
            for (int e = 0; e < c.NumExperts; e++)
            {
                Add(ck.GetExpert(TensorRole.ExpertGate, i, e));
                Add(ck.GetExpert(TensorRole.ExpertUp, i, e));
                Add(ck.GetExpert(TensorRole.ExpertDown, i, e));
            }
        }
        return bytes;
    }

    // Before the first CPU forward pass, in the resident mode (no other expert runner installed): the always-resident
    // matrices (attention, shared expert, lm_head) replaced by interleaved copies, their mapped pages released (read-only
    // file mappings). With experts offloaded the memory promise (resident weights + budget) is kept as it was: no copies.
    private void InterleaveOnce()
    {
        if (!InterleaveWeights || Volatile.Read(ref _interleaved) is not null) return;
        lock (_interleaveLock)
        {
            if (_interleaved is not null) return;
            var copies = new InterleavedWeights();
            if (_experts is not (null or ResidentExperts))
            {
                Volatile.Write(ref _interleaved, copies);
                return;
            }
            foreach (var l in Layers)
            {
                l.Q = copies.Add(l.Q, releaseSource: true);
                l.K = copies.Add(l.K, releaseSource: true);
                l.V = copies.Add(l.V, releaseSource: true);
                l.O = copies.Add(l.O, releaseSource: true);
                if (l.Shared is { } e)
                    l.Shared = new ExpertWeights(copies.Add(e.Gate, releaseSource: true), copies.Add(e.Up, releaseSource: true), copies.Add(e.Down, releaseSource: true));
            }
            _output = copies.Add(_output, releaseSource: true);
            Volatile.Write(ref _interleaved, copies);
        }
    }

    /// <summary>A fresh sequence state: KV cache for <paramref name="context"/> tokens, blocks of <paramref name="maxBatch"/> (≤ 0: default).</summary>
    public InferenceState CreateState(int context, int maxBatch = 0) => new(Config, context, maxBatch);

    /// <summary>Scratch for <see cref="ForwardStep"/> over up to <paramref name="maxSequences"/> sequences at once.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxSequences"/> &lt; 1.</exception>
    public DecodeBatch CreateDecodeBatch(int maxSequences) => new(Config, maxSequences);

    /// <summary>
    /// Weight bytes one decoded token reads: every resident tensor (attention, norms, routers, shared experts, lm_head),
    /// one embedding row, and k routed experts per layer.
    /// </summary>
    public long WeightBytesPerToken { get; }

    /// <summary>
    /// Runs <paramref name="token"/> at position <c>state.Position</c>, appends its keys and values to the cache and advances
    /// the position. Writes the next-token logits [V] into <paramref name="logits"/> unless it is empty.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The token is outside the vocabulary or the context is full.</exception>
    public void Forward(InferenceState s, int token, Span<float> logits, WorkerTeam? team = null) =>
        Forward(s, new ReadOnlySpan<int>(in token), logits, allPositions: false, team);

    /// <summary>
    /// Runs <paramref name="tokens"/> at positions <c>state.Position</c>… in blocks of <c>state.MaxBatch</c> (batched
    /// mat-muls, causal attention over the block, experts grouped by token), appends their keys and values to the cache
    /// and advances the position. Logits are bit-identical to running the tokens one at a time. Unless
    /// <paramref name="logits"/> is empty it receives the logits of every position ([tokens, V] row-major) when
    /// <paramref name="allPositions"/>, else those of the last token [V].
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A token is outside the vocabulary or the tokens do not fit the context.</exception>
    /// <exception cref="ArgumentException">No tokens, or <paramref name="logits"/> has the wrong length.</exception>
    public void Forward(InferenceState s, ReadOnlySpan<int> tokens, Span<float> logits, bool allPositions, WorkerTeam? team = null)
    {
        var c = Config;
        int n = tokens.Length, vocab = c.VocabSize;
        if (n == 0) throw new ArgumentException("no tokens given", nameof(tokens));
        foreach (int token in tokens)
            if ((uint)token >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokens), token, $"token id outside the vocabulary (0..{vocab - 1})");
        if (n > s.Context - s.Position)
            throw new ArgumentOutOfRangeException(nameof(s), s.Position, $"{n} tokens after position {s.Position} do not fit the context of {s.Context} tokens");
        long expected = allPositions ? (long)n * vocab : vocab;
        if (!logits.IsEmpty && logits.Length != expected) throw new ArgumentException($"logits hold {logits.Length} values, {expected} expected", nameof(logits));
        if (Backend is { } backend)
        {
            backend.Forward(s, s.Position, tokens, logits, allPositions);
            s.Position += n;
            return;
        }
        InterleaveOnce();
        for (int start = 0; start < n; start += s.MaxBatch)
        {
            int count = Math.Min(s.MaxBatch, n - start);
            var blockLogits = logits.IsEmpty ? default
                : allPositions ? logits.Slice(start * vocab, count * vocab)
                : start + count == n ? logits : default;
            ForwardBlock(s, tokens.Slice(start, count), blockLogits, allPositions, team);
        }
    }

    private void ForwardBlock(InferenceState s, ReadOnlySpan<int> tokens, Span<float> logits, bool allPositions, WorkerTeam? team)
    {
        var c = Config;
        int n = tokens.Length, p0 = s.Position, d = c.HiddenSize, hd = c.HeadDim;
        for (int t = 0; t < n; t++)
        {
            Embed(tokens[t], s.Hidden.AsSpan(t * d, d));
            Rope.CosSin(p0 + t, c.RopeTheta, hd, s.CosSin.AsSpan(t * hd, hd));
        }
        var hidden = s.Hidden.AsSpan(0, n * d);
        for (int i = 0; i < Layers.Length; i++)
        {
            var l = Layers[i];
            Attention(i, l, s, p0, n, team);
            FeedForward(i, l, s, n, p0, null, team);
        }
        s.Position = p0 + n;
        if (logits.IsEmpty) return;
        if (allPositions)
        {
            NormRows(s.Hidden, _outputNorm, s.Normed, n, d);
            s.HiddenAct.Load(s.Normed.AsSpan(0, n * d), n);
        }
        else
        {
            ElementOps.RmsNorm(hidden.Slice((n - 1) * d, d), _outputNorm, c.RmsNormEps, s.Normed.AsSpan(0, d));
            s.HiddenAct.Load(s.Normed.AsSpan(0, d));
        }
        MatMul.Run(_output, s.HiddenAct, logits, team);
    }

    /// <summary>
    /// One decode step of several sequences: sequence b runs <paramref name="tokens"/>[b] at its own position
    /// <c>states[b].Position</c>, appends its keys and values to its own cache and advances. Every weight product (q/k/v,
    /// o, router, shared expert, lm_head) runs once over the B rows, attention runs per (sequence, head) against each
    /// sequence's own cache, and the routed experts run through <see cref="IExpertRunner.RunBatch"/>, so each chosen expert
    /// computes all the rows routed to it at once. Row b of the logits is bit-identical to
    /// <see cref="Forward(InferenceState, int, Span{float}, WorkerTeam?)"/> of that token alone. Unless
    /// <paramref name="logits"/> is empty it receives [B, V] row-major. Allocates nothing.
    /// </summary>
    /// <exception cref="ArgumentException">No sequences, states and tokens of different counts, more than the batch holds,
    /// a state given twice, or <paramref name="logits"/> of the wrong length.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A token outside the vocabulary or a sequence whose context is full.</exception>
    public void ForwardStep(DecodeBatch batch, ReadOnlySpan<InferenceState> states, ReadOnlySpan<int> tokens, Span<float> logits, WorkerTeam? team = null)
    {
        ArgumentNullException.ThrowIfNull(batch);
        var c = Config;
        int n = states.Length, vocab = c.VocabSize, d = c.HiddenSize, hd = c.HeadDim;
        if (n == 0) throw new ArgumentException("no sequences given", nameof(states));
        if (tokens.Length != n) throw new ArgumentException($"{tokens.Length} tokens for {n} sequences", nameof(tokens));
        if (n > batch.MaxSequences) throw new ArgumentException($"{n} sequences exceed the batch of {batch.MaxSequences}", nameof(states));
        if (!logits.IsEmpty && logits.Length != (long)n * vocab) throw new ArgumentException($"logits hold {logits.Length} values, {(long)n * vocab} expected", nameof(logits));
        for (int b = 0; b < n; b++)
        {
            var st = states[b] ?? throw new ArgumentNullException(nameof(states), $"state {b} is null");
            if ((uint)tokens[b] >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(tokens), tokens[b], $"token id outside the vocabulary (0..{vocab - 1})");
            if (st.Position >= st.Context) throw new ArgumentOutOfRangeException(nameof(states), st.Position, $"sequence {b} has filled its context of {st.Context} tokens");
            for (int other = 0; other < b; other++)
                if (ReferenceEquals(states[other], st)) throw new ArgumentException($"sequences {other} and {b} share one state", nameof(states));
        }

        InterleaveOnce();
        var s = batch.Rows;
        for (int b = 0; b < n; b++)
        {
            batch.Positions[b] = states[b].Position;
            batch.ScoreStrides[b] = states[b].Context;
            Embed(tokens[b], s.Hidden.AsSpan(b * d, d));
            Rope.CosSin(states[b].Position, c.RopeTheta, hd, s.CosSin.AsSpan(b * hd, hd));
        }
        for (int i = 0; i < Layers.Length; i++)
        {
            var l = Layers[i];
            StepAttention(i, l, batch, states, n, team);
            FeedForward(i, l, s, n, 0, batch.Positions, team);
        }
        for (int b = 0; b < n; b++) states[b].Position = batch.Positions[b] + 1;
        if (logits.IsEmpty) return;
        NormRows(s.Hidden, _outputNorm, s.Normed, n, d);
        s.HiddenAct.Load(s.Normed.AsSpan(0, n * d), n);
        MatMul.Run(_output, s.HiddenAct, logits, team);
    }

    // The second half of a layer for n rows of s after attention: prefetch hook, FFN norm, router and top-k per row,
    // the routed experts over all rows, the shared expert, then the residual add. A row's position is positions[t], or
    // firstPosition + t without positions (one sequence).
    private void FeedForward(int layer, Layer l, InferenceState s, int n, int firstPosition, int[]? positions, WorkerTeam? team)
    {
        var c = Config;
        int d = c.HiddenSize, k = c.NumExpertsUsed, e = c.NumExperts;
        var hidden = s.Hidden.AsSpan(0, n * d);
        Experts.AfterAttention(layer, hidden, n, decodeStep: positions is not null);
        if (Observer is { } attnObserver)
            for (int t = 0; t < n; t++) attnObserver.OnTensor("attn_residual", layer, PositionOf(t), hidden.Slice(t * d, d));

        NormRows(s.Hidden, l.FfnNorm, s.Normed, n, d);
        s.HiddenAct.Load(s.Normed.AsSpan(0, n * d), n);
        MatMul.Run(l.Router, s.HiddenAct, s.RouterLogits.AsSpan(0, n * e), team);
        for (int t = 0; t < n; t++)
        {
            var ids = s.ExpertIds.AsSpan(t * k, k);
            var weights = s.ExpertWeights.AsSpan(t * k, k);
            var router = s.RouterLogits.AsSpan(t * e, e);
            Route(layer, router, ids, weights);
            Observer?.OnRouting(layer, PositionOf(t), router, ids, weights);
            Experts.ObserveRouting(layer, router);
        }
        var moeOut = s.MoeOut.AsSpan(0, n * d);
        moeOut.Clear();
        Experts.RunBatch(layer, s.ExpertIds.AsSpan(0, n * k), s.ExpertWeights.AsSpan(0, n * k), s.HiddenAct, moeOut, s.Expert, team);
        AddSharedExpert(l, s, n, team);
        if (Observer is { } moeObserver)
            for (int t = 0; t < n; t++) moeObserver.OnTensor("moe_out", layer, PositionOf(t), moeOut.Slice(t * d, d));
        ElementOps.Add(hidden, moeOut);

        int PositionOf(int t) => positions is null ? firstPosition + t : positions[t];
    }

    // Attention of a decode step: projections over the batch's rows, each row's k/v appended to its own sequence's cache,
    // then one job over (sequence, head) pairs, each reading its own cache and writing its own scores row.
    private unsafe void StepAttention(int layer, Layer l, DecodeBatch batch, ReadOnlySpan<InferenceState> states, int n, WorkerTeam? team)
    {
        var c = Config;
        var s = batch.Rows;
        int d = c.HiddenSize, hd = c.HeadDim, qDim = c.NumHeads * hd, kvDim = c.NumKvHeads * hd;
        NormRows(s.Hidden, l.AttnNorm, s.Normed, n, d);
        s.HiddenAct.Load(s.Normed.AsSpan(0, n * d), n);
        fixed (float* q = s.Q) fixed (float* k = s.K) fixed (float* v = s.V)
        {
            var tasks = s.AttentionTasks;
            tasks[0] = new MatMulTask(l.Q, s.HiddenAct, q);
            tasks[1] = new MatMulTask(l.K, s.HiddenAct, k);
            tasks[2] = new MatMulTask(l.V, s.HiddenAct, v);
            MatMul.Run(tasks, team);
        }
        for (int b = 0; b < n; b++)
        {
            var st = states[b];
            int pos = batch.Positions[b];
            FinishQkv(l, s.Q.AsSpan(b * qDim, qDim), s.K.AsSpan(b * kvDim, kvDim), s.V.AsSpan(b * kvDim, kvDim),
                s.CosSin.AsSpan(b * hd, hd), st.Keys[layer].AsSpan(pos * kvDim, kvDim), st.Values[layer].AsSpan(pos * kvDim, kvDim));
            // The caches and scores are pinned arrays (allocated pinned), so their addresses stay valid.
            batch.Keys[b] = (nint)Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(st.Keys[layer]));
            batch.Values[b] = (nint)Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(st.Values[layer]));
            batch.Scores[b] = (nint)Unsafe.AsPointer(ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(st.Scores));
        }
        fixed (float* q = s.Q) fixed (float* output = s.AttnOut)
        fixed (nint* keys = batch.Keys) fixed (nint* values = batch.Values) fixed (nint* scores = batch.Scores)
        fixed (int* positions = batch.Positions) fixed (int* strides = batch.ScoreStrides)
        {
            var job = new StepAttentionJob
            {
                Q = q, Output = output, Keys = keys, Values = values, Scores = scores, Positions = positions, ScoreStrides = strides,
                Heads = c.NumHeads, HeadDim = hd, KvDim = kvDim, Group = c.NumHeads / c.NumKvHeads, Scale = _attnScale,
            };
            int rows = n * c.NumHeads;
            if (team is null) job.Execute(0, rows);
            else team.Run(ref job, rows);
        }
        s.AttnAct.Load(s.AttnOut.AsSpan(0, n * qDim), n);
        var projected = s.Projected.AsSpan(0, n * d);
        MatMul.Run(l.O, s.AttnAct, projected, team);
        ElementOps.Add(s.Hidden.AsSpan(0, n * d), projected);
    }

    // Row r = (sequence r / H, head r % H): the same per-head attention as a one-token Forward, over that sequence's cache.
    private unsafe struct StepAttentionJob : IRowJob
    {
        public float* Q, Output;
        public nint* Keys, Values, Scores;
        public int* Positions, ScoreStrides;
        public int Heads, HeadDim, KvDim, Group;
        public float Scale;

        public readonly void Execute(int start, int end)
        {
            int qDim = Heads * HeadDim;
            for (int r = start; r < end; r++)
            {
                int b = r / Heads, h = r % Heads;
                AttendHead(Q + (long)b * qDim + h * HeadDim, (float*)Keys[b], (float*)Values[b],
                    (float*)Scores[b] + (long)h * ScoreStrides[b], Output + (long)b * qDim + h * HeadDim,
                    Positions[b], HeadDim, KvDim, h / Group * HeadDim, Scale);
            }
        }
    }

    // softmax(q·Kᵀ·scale) V of one head over positions 0..pos of a cache of rows [KvDim] (this head's kv slice at kvOff).
    private static unsafe void AttendHead(float* q, float* keys, float* values, float* scores, float* output, int pos, int hd, int kvDim, int kvOff, float scale)
    {
        for (int j = 0; j <= pos; j++)
            scores[j] = VecDot.F32(q, keys + (long)j * kvDim + kvOff, hd) * scale;
        var row = new Span<float>(scores, pos + 1);
        ElementOps.Softmax(row);
        var o = new Span<float>(output, hd);
        o.Clear();
        for (int j = 0; j <= pos; j++)
            ElementOps.WeightedAdd(o, row[j], new ReadOnlySpan<float>(values + (long)j * kvDim + kvOff, hd));
    }

    /// <summary>Chooses the experts of <paramref name="layer"/> from its router logits (overwritten freely).</summary>
    protected abstract void Route(int layer, Span<float> routerLogits, Span<int> ids, Span<float> weights);

    /// <summary>Normalises one token's projected q [H·hd] and k [Hkv·hd] before RoPE (Qwen3-MoE per head, OLMoE whole). Default: nothing.</summary>
    protected virtual void NormalizeQK(Layer l, Span<float> q, Span<float> k) { }

    // One token's projections after the mat-muls: biases, q/k norms, RoPE at its position (cosSin), then k and v into the
    // sequence's KV cache rows.
    private void FinishQkv(Layer l, Span<float> q, Span<float> k, Span<float> v, ReadOnlySpan<float> cosSin, Span<float> keyRow, Span<float> valueRow)
    {
        if (l.QBias is not null) ElementOps.Add(q, l.QBias);
        if (l.KBias is not null) ElementOps.Add(k, l.KBias);
        if (l.VBias is not null) ElementOps.Add(v, l.VBias);
        NormalizeQK(l, q, k);
        Rope.Apply(q, Config.NumHeads, Config.HeadDim, cosSin, _rope);
        Rope.Apply(k, Config.NumKvHeads, Config.HeadDim, cosSin, _rope);
        k.CopyTo(keyRow);
        v.CopyTo(valueRow);
    }

    /// <summary>
    /// Adds the shared expert's contribution for the block's <paramref name="tokens"/> tokens (inputs in state.HiddenAct)
    /// to state.MoeOut [tokens, D] (Qwen2-MoE). Default: nothing.
    /// </summary>
    protected virtual void AddSharedExpert(Layer l, InferenceState s, int tokens, WorkerTeam? team) { }

    // dst[t] = RMSNorm(x[t]) ⊙ weight for each of n rows of d values.
    private void NormRows(float[] x, float[] weight, float[] dst, int n, int d)
    {
        for (int t = 0; t < n; t++) ElementOps.RmsNorm(x.AsSpan(t * d, d), weight, Config.RmsNormEps, dst.AsSpan(t * d, d));
    }

    private unsafe void Attention(int layer, Layer l, InferenceState s, int p0, int n, WorkerTeam? team)
    {
        var c = Config;
        int d = c.HiddenSize, hd = c.HeadDim, qDim = c.NumHeads * hd, kvDim = c.NumKvHeads * hd;
        NormRows(s.Hidden, l.AttnNorm, s.Normed, n, d);
        s.HiddenAct.Load(s.Normed.AsSpan(0, n * d), n);
        if (Observer is { } inputObserver)
            for (int t = 0; t < n; t++) inputObserver.OnTensor("attn_input", layer, p0 + t, s.Normed.AsSpan(t * d, d));
        fixed (float* q = s.Q) fixed (float* k = s.K) fixed (float* v = s.V)
        {
            var tasks = s.AttentionTasks;
            tasks[0] = new MatMulTask(l.Q, s.HiddenAct, q);
            tasks[1] = new MatMulTask(l.K, s.HiddenAct, k);
            tasks[2] = new MatMulTask(l.V, s.HiddenAct, v);
            MatMul.Run(tasks, team);
        }
        for (int t = 0; t < n; t++)
        {
            FinishQkv(l, s.Q.AsSpan(t * qDim, qDim), s.K.AsSpan(t * kvDim, kvDim), s.V.AsSpan(t * kvDim, kvDim),
                s.CosSin.AsSpan(t * hd, hd), s.Keys[layer].AsSpan((p0 + t) * kvDim, kvDim), s.Values[layer].AsSpan((p0 + t) * kvDim, kvDim));
        }

        fixed (float* q = s.Q) fixed (float* keys = s.Keys[layer]) fixed (float* values = s.Values[layer])
        fixed (float* scores = s.Scores) fixed (float* output = s.AttnOut)
        {
            // One token: heads in parallel (a scores row per head). A block: tokens in parallel (a scores row per token).
            var job = new AttentionJob
            {
                Q = q, Keys = keys, Values = values, Scores = scores, Output = output, ScoreStride = s.Context,
                FirstPosition = p0, Heads = c.NumHeads, HeadDim = hd, KvDim = kvDim, Group = c.NumHeads / c.NumKvHeads,
                Scale = _attnScale, PerHead = n == 1,
            };
            int rows = n == 1 ? c.NumHeads : n;
            if (team is null) job.Execute(0, rows);
            else team.Run(ref job, rows);
        }
        s.AttnAct.Load(s.AttnOut.AsSpan(0, n * qDim), n);
        if (Observer is { } outputObserver)
            for (int t = 0; t < n; t++) outputObserver.OnTensor("attn_output", layer, p0 + t, s.AttnOut.AsSpan(t * qDim, qDim));
        var projected = s.Projected.AsSpan(0, n * d);
        MatMul.Run(l.O, s.AttnAct, projected, team);
        ElementOps.Add(s.Hidden.AsSpan(0, n * d), projected);
    }

    // softmax(q·Kᵀ/√hd) V for (token, head) pairs; token t sits at position FirstPosition + t and sees positions ≤ its own;
    // head h reads kv head h / (H/Hkv). Rows are heads of token 0 (PerHead) or tokens (all heads each).
    private unsafe struct AttentionJob : IRowJob
    {
        public float* Q, Keys, Values, Scores, Output;
        public int ScoreStride, FirstPosition, Heads, HeadDim, KvDim, Group;
        public float Scale;
        public bool PerHead;

        public readonly void Execute(int start, int end)
        {
            for (int r = start; r < end; r++)
            {
                if (PerHead) Head(0, r, Scores + (long)r * ScoreStride);
                else
                    for (int h = 0; h < Heads; h++) Head(r, h, Scores + (long)r * ScoreStride);
            }
        }

        private readonly void Head(int t, int h, float* scores)
        {
            int hd = HeadDim, qDim = Heads * hd;
            AttendHead(Q + (long)t * qDim + h * hd, Keys, Values, scores, Output + (long)t * qDim + h * hd,
                FirstPosition + t, hd, KvDim, h / Group * hd, Scale);
        }
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
