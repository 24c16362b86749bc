// The forward pass on one GPU (the IForwardBackend of `--backend cuda`): resident weights uploaded once; routed experts
// either all in VRAM or in a budgeted pool of VRAM slots filled from a pinned host copy on a dedicated copy stream, ordered
// by one event per slot, with the CPU engine's eviction policies and predictors. Tokens run one at a time (prefill too).
using Pregate.Core;
using Pregate.Cuda.Native;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Experts.Prediction;
using Pregate.Formats;
using Pregate.Kernels;
using Pregate.Models;

namespace Pregate.Cuda;

/// <summary>A weight matrix in device memory: Rows rows of RowStride bytes at Data, elements of Type.</summary>
public readonly record struct DeviceMatrix(ulong Data, DType Type, int Rows, int Cols, long RowStride);

/// <summary>Runs every forward pass of a model on the GPU. Thread-safe (one forward at a time).</summary>
public sealed unsafe class CudaEngine : IForwardBackend
{
    /// <summary>Weight types the kernels read.</summary>
    public static readonly DType[] SupportedTypes = [DType.F32, DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0];

    /// <summary>Alignment of each matrix inside an expert slot.</summary>
    public const int PartAlignment = 256;

    /// <summary>Device memory kept free beside an automatic expert budget.</summary>
    public const long AutomaticReserveBytes = 1L << 30;

    private sealed class Layer
    {
        public ulong AttnNorm, FfnNorm;                 // [D]
        public DeviceMatrix Q, K, V, O, Router;         // [H·hd, D], [Hkv·hd, D] ×2, [D, H·hd], [E, D]
        public ulong QBias, KBias, VBias;               // [H·hd], [Hkv·hd], [Hkv·hd] or 0
        public ulong QNorm, KNorm;                      // [hd] per head, [H·hd]/[Hkv·hd] whole, or 0
        public DeviceMatrix? SharedGate, SharedUp, SharedDown; // [Fs, D], [Fs, D], [D, Fs]
        public ulong SharedGateVector;                  // [D]
        public required DType[] PartTypes;              // gate, up, down of the routed experts
        public required long[] PartStrides;             // row bytes of gate, up, down
    }

    private sealed class Sequence
    {
        public required ulong[] Keys, Values;           // per layer [Context, Hkv·hd]
        public ulong Scores;                            // [H, Context]
        public ulong CosSin;                            // [Context, hd] from Rope.CosSin
        public int Context;
    }

    private readonly object _gate = new();
    private readonly CudaDevice _device;
    private readonly CudaDriver _cu;
    private readonly ModelConfig _c;
    private readonly List<ulong> _allocations = [];
    private readonly Dictionary<InferenceState, Sequence> _sequences = [];
    private readonly Layer[] _layers;
    private readonly DeviceMatrix _embedding, _output;   // [V, D]
    private readonly ulong _outputNorm;                  // [D]
    private readonly bool _neox, _renormalize;
    private readonly float _attnScale;

    // Routed experts: a device pointer per (layer, expert, part) in _table; all resident, or slots filled from _hostTier.
    private readonly long _slotBytes;
    private readonly long[] _partOffsets = new long[3];
    private readonly ulong _table;                       // [L, E, 3] device pointers
    private readonly ulong* _tableMirror;                // pinned host copy of _table (offloaded mode)
    private readonly ulong _slots;                       // [SlotCount, slotBytes] (offloaded) or [L·E, slotBytes] (resident)
    private readonly byte* _hostTier;                    // [L·E, slotBytes] pinned (offloaded mode)
    private readonly ExpertSlotTable? _slotTable;
    private readonly IntPtr[] _slotEvents = [];
    private readonly IExpertPredictor? _predictor;
    private readonly int _lookahead, _predictExtra;
    private readonly string _placement;

    // Activations of one token.
    private readonly ulong _hidden, _normed, _q, _attnOut, _projected, _moe, _routerLogits, _probs, _ids, _weights;
    private readonly ulong _gateAct, _upAct, _expertOut, _xq, _sharedGate, _sharedUp, _sharedOut, _gateLogit, _logits;
    private readonly byte* _hostScratch;                 // pinned: ids [k], probs [E], hidden [D], logits [V]
    private readonly float[] _predictScores;
    private readonly int[] _predictIds;
    private readonly float[] _predictValues;
    private bool _disposed;

    /// <summary>Opens device 0 (kernels cached in the default folder) and binds <paramref name="request"/>'s model.</summary>
    /// <exception cref="CudaException">No driver or device, no NVRTC, a kernel that does not compile, a weight type the kernels lack.</exception>
    /// <exception cref="ArgumentException">The expert budget holds fewer experts than one token uses.</exception>
    public static CudaEngine Create(BackendRequest request)
    {
        var device = new CudaDevice(new KernelCache(KernelCache.DefaultDirectory(Environment.GetEnvironmentVariable)));
        try { return new CudaEngine(device, request); }
        catch { device.Dispose(); throw; }
    }

    /// <summary>Uploads the model of <paramref name="request"/> to <paramref name="device"/> (which the engine then owns).</summary>
    public CudaEngine(CudaDevice device, BackendRequest request)
    {
        _device = device;
        _cu = device.Driver;
        var ck = request.Checkpoint;
        _c = ck.Config;
        var c = _c;
        device.MakeCurrent();
        try
        {
            _neox = !ck.RopeAdjacentPairs;
            _renormalize = c.Architecture == Architecture.Mixtral || c.NormTopKProb;
            _attnScale = 1f / MathF.Sqrt(c.HeadDim);
            _embedding = UploadMatrix(ck.Get(TensorRole.TokenEmbedding));
            _output = c.TieWordEmbeddings ? _embedding : UploadMatrix(ck.Get(TensorRole.Output));
            _outputNorm = UploadFloats(ck.Get(TensorRole.OutputNorm));
            _layers = new Layer[c.NumLayers];
            for (int i = 0; i < c.NumLayers; i++) _layers[i] = UploadLayer(ck, i);

            int d = c.HiddenSize, qDim = c.NumHeads * c.HeadDim, k = c.NumExpertsUsed, e = c.NumExperts;
            int ffn = Math.Max(c.ExpertFfn, 1), sharedFfn = Math.Max(c.SharedExpertFfn, 1);
            _hidden = Alloc(4L * d);
            _normed = Alloc(4L * d);
            _q = Alloc(4L * qDim);
            _attnOut = Alloc(4L * qDim);
            _projected = Alloc(4L * d);
            _moe = Alloc(4L * d);
            _routerLogits = Alloc(4L * e);
            _probs = Alloc(4L * e);
            _ids = Alloc(4L * k);
            _weights = Alloc(4L * k);
            _gateAct = Alloc(4L * k * ffn);
            _upAct = Alloc(4L * k * ffn);
            _expertOut = Alloc(4L * k * d);
            long maxInput = new[] { d, qDim, (long)k * ffn, sharedFfn }.Max();
            _xq = Alloc(DTypes.ByteCount(DType.Q8_0, (maxInput + 31) / 32 * 32));
            _sharedGate = Alloc(4L * sharedFfn);
            _sharedUp = Alloc(4L * sharedFfn);
            _sharedOut = Alloc(4L * d);
            _gateLogit = Alloc(4);
            _logits = Alloc(4L * c.VocabSize);
            _hostScratch = _cu.HostAlloc(4L * (k + e + d + c.VocabSize));
            _predictScores = new float[e];
            _predictIds = new int[e];
            _predictValues = new float[e];

            // Routed experts: slot layout gate | up | down, each part aligned.
            long offset = 0;
            for (int p = 0; p < 3; p++)
            {
                _partOffsets[p] = offset;
                offset = AlignUp(offset + MaxPartBytes(ck, p), PartAlignment);
            }
            _slotBytes = offset;
            long experts = (long)c.NumLayers * e, totalBytes = experts * _slotBytes;
            long budget = Budget(request.Options.ExpertMemory, totalBytes, request.Options.Context ?? Math.Min(c.MaxContext, EngineOptions.DefaultMaxContext));
            long slotCount = Math.Min(budget / _slotBytes, experts);
            if (slotCount < k)
                throw new ArgumentException($"CUDA backend: an expert memory of {ByteSize.Format(budget)} holds {slotCount} experts of {ByteSize.Format(_slotBytes)}; " +
                                            $"a token uses {k} per layer, so give at least {ByteSize.Format(k * _slotBytes)} or all");
            _table = Alloc(experts * 3 * sizeof(ulong));
            if (slotCount >= experts)
            {
                _slots = Alloc(totalBytes);
                var table = new ulong[experts * 3];
                for (int l = 0; l < c.NumLayers; l++)
                    for (int x = 0; x < e; x++)
                    {
                        long index = (long)l * e + x;
                        ulong slot = _slots + (ulong)(index * _slotBytes);
                        for (int p = 0; p < 3; p++)
                        {
                            var part = ck.GetExpert(PartRoles[p], l, x);
                            _cu.CopyToDevice(slot + (ulong)_partOffsets[p], (void*)part.Pointer, part.ByteLength, device.ComputeStream);
                            table[index * 3 + p] = slot + (ulong)_partOffsets[p];
                        }
                    }
                fixed (ulong* t = table) _cu.CopyToDevice(_table, t, table.Length * sizeof(ulong), device.ComputeStream);
                _placement = $"experts resident in VRAM ({ByteSize.Format(totalBytes)})";
            }
            else
            {
                _slots = Alloc(slotCount * _slotBytes);
                _hostTier = _cu.HostAlloc(totalBytes);
                for (int l = 0; l < c.NumLayers; l++)
                    for (int x = 0; x < e; x++)
                        for (int p = 0; p < 3; p++)
                        {
                            var part = ck.GetExpert(PartRoles[p], l, x);
                            part.Bytes.CopyTo(new Span<byte>(_hostTier + ((long)l * e + x) * _slotBytes + _partOffsets[p], checked((int)part.ByteLength)));
                        }
                _tableMirror = (ulong*)_cu.HostAlloc(experts * 3 * sizeof(ulong));
                new Span<ulong>(_tableMirror, checked((int)(experts * 3))).Clear();
                _slotTable = new ExpertSlotTable((int)slotCount, _slotBytes, EvictionPolicy.Create(request.Options.CachePolicy, c.NumLayers, e));
                _slotEvents = new IntPtr[slotCount];
                for (int s = 0; s < slotCount; s++) _slotEvents[s] = _cu.CreateEvent();
                _predictor = request.Predictor;
                _lookahead = request.Options.Lookahead;
                _predictExtra = request.Options.PredictExtra;
                _placement = $"experts offloaded: {slotCount} VRAM slots of {ByteSize.Format(_slotBytes)} ({ByteSize.Format(slotCount * _slotBytes)}), " +
                             $"pinned host copy {ByteSize.Format(totalBytes)}, policy {request.Options.CachePolicy.ToString().ToLowerInvariant()}, predictor {request.PredictorName}";
            }
            _cu.Synchronize(device.ComputeStream);
        }
        catch
        {
            FreeAll();
            throw;
        }
    }

    private static readonly TensorRole[] PartRoles = [TensorRole.ExpertGate, TensorRole.ExpertUp, TensorRole.ExpertDown];

    /// <summary>Counters of the VRAM expert slots (all zero when every expert is resident).</summary>
    public SlotTableStats ExpertStats
    {
        get { lock (_gate) return _slotTable?.Stats ?? default; }
    }

    /// <summary>Bytes of one expert slot (gate, up and down, each aligned to <see cref="PartAlignment"/>).</summary>
    public long SlotBytes => _slotBytes;

    public string Describe() => $"backend: cuda, {_device.Describe()}, {_placement}; tokens run one at a time";

    private long Budget(ExpertMemory? asked, long totalBytes, int context)
    {
        if (asked is { } m) return m.IsResident ? totalBytes : m.BudgetBytes(totalBytes);
        var (free, _) = _cu.MemoryInfo();
        long kv = 2L * _c.NumLayers * context * _c.NumKvHeads * _c.HeadDim * sizeof(float);
        return Math.Max(0, free - kv - AutomaticReserveBytes);
    }

    private static long AlignUp(long value, long alignment) => (value + alignment - 1) / alignment * alignment;

    private static long MaxPartBytes(Checkpoint ck, int part)
    {
        long max = 0;
        for (int l = 0; l < ck.Config.NumLayers; l++)
            for (int e = 0; e < ck.Config.NumExperts; e++) max = Math.Max(max, ck.GetExpert(PartRoles[part], l, e).ByteLength);
        return max;
    }

    private ulong Alloc(long bytes)
    {
        ulong p = _cu.Alloc(bytes);
        _allocations.Add(p);
        return p;
    }

    private ulong UploadFloats(TensorView t)
    {
        var values = new float[t.ElementCount];
        Quantize.Dequantize(t.Type, t.Bytes, values);
        ulong p = Alloc(4L * values.Length);
        fixed (float* v = values) _cu.CopyToDevice(p, v, 4L * values.Length, _device.ComputeStream);
        _cu.Synchronize(_device.ComputeStream);
        return p;
    }

    private DeviceMatrix UploadMatrix(TensorView t)
    {
        var w = WeightMatrix.FromTensor(t);
        if (Array.IndexOf(SupportedTypes, w.Type) < 0)
            throw new CudaException($"CUDA backend: {t.Name} is {DTypes.Name(w.Type)}; the CUDA kernels read {string.Join(", ", SupportedTypes.Select(DTypes.Name))}");
        long bytes = w.RowStride * w.Rows;
        ulong p = Alloc(bytes);
        _cu.CopyToDevice(p, (void*)w.Data, bytes, _device.ComputeStream);
        return new DeviceMatrix(p, w.Type, w.Rows, w.Cols, w.RowStride);
    }

    private Layer UploadLayer(Checkpoint ck, int i)
    {
        var types = new DType[3];
        var strides = new long[3];
        for (int p = 0; p < 3; p++)
        {
            var w = WeightMatrix.FromTensor(ck.GetExpert(PartRoles[p], i, 0));
            if (Array.IndexOf(SupportedTypes, w.Type) < 0)
                throw new CudaException($"CUDA backend: the experts of layer {i} are {DTypes.Name(w.Type)}; the CUDA kernels read {string.Join(", ", SupportedTypes.Select(DTypes.Name))}");
            types[p] = w.Type;
            strides[p] = w.RowStride;
        }
        var l = new Layer
        {
            AttnNorm = UploadFloats(ck.Get(TensorRole.AttnNorm, i)),
            FfnNorm = UploadFloats(ck.Get(TensorRole.FfnNorm, i)),
            Q = UploadMatrix(ck.Get(TensorRole.AttnQ, i)),
            K = UploadMatrix(ck.Get(TensorRole.AttnK, i)),
            V = UploadMatrix(ck.Get(TensorRole.AttnV, i)),
            O = UploadMatrix(ck.Get(TensorRole.AttnOutput, i)),
            Router = UploadMatrix(ck.Get(TensorRole.Router, i)),
            PartTypes = types,
            PartStrides = strides,
        };
        if (ck.TryGet(TensorRole.AttnQBias, i, out var qb)) l.QBias = UploadFloats(qb);
        if (ck.TryGet(TensorRole.AttnKBias, i, out var kb)) l.KBias = UploadFloats(kb);
        if (ck.TryGet(TensorRole.AttnVBias, i, out var vb)) l.VBias = UploadFloats(vb);
        if (ck.TryGet(TensorRole.AttnQNorm, i, out var qn)) l.QNorm = UploadFloats(qn);
        if (ck.TryGet(TensorRole.AttnKNorm, i, out var kn)) l.KNorm = UploadFloats(kn);
        if (ck.TryGet(TensorRole.SharedGate, i, out var sg))
        {
            l.SharedGate = UploadMatrix(sg);
            l.SharedUp = UploadMatrix(ck.Get(TensorRole.SharedUp, i));
            l.SharedDown = UploadMatrix(ck.Get(TensorRole.SharedDown, i));
            l.SharedGateVector = UploadFloats(ck.Get(TensorRole.SharedExpertGate, i));
        }
        return l;
    }

    private Sequence SequenceFor(InferenceState state)
    {
        if (_sequences.TryGetValue(state, out var seq)) return seq;
        var c = _c;
        int ctx = state.Context, hd = c.HeadDim, kvDim = c.NumKvHeads * hd;
        seq = new Sequence { Keys = new ulong[c.NumLayers], Values = new ulong[c.NumLayers], Context = ctx };
        for (int i = 0; i < c.NumLayers; i++)
        {
            seq.Keys[i] = Alloc(4L * ctx * kvDim);
            seq.Values[i] = Alloc(4L * ctx * kvDim);
        }
        seq.Scores = Alloc(4L * c.NumHeads * ctx);
        var table = new float[(long)ctx * hd];
        for (int p = 0; p < ctx; p++) Rope.CosSin(p, c.RopeTheta, hd, table.AsSpan(p * hd, hd));
        seq.CosSin = Alloc(4L * table.Length);
        fixed (float* t = table) _cu.CopyToDevice(seq.CosSin, t, 4L * table.Length, _device.ComputeStream);
        _cu.Synchronize(_device.ComputeStream);
        _sequences[state] = seq;
        return seq;
    }

    public void Forward(InferenceState state, int firstPosition, ReadOnlySpan<int> tokens, Span<float> logits, bool allPositions)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _device.MakeCurrent();
            var seq = SequenceFor(state);
            int vocab = _c.VocabSize, n = tokens.Length;
            for (int t = 0; t < n; t++)
            {
                bool wanted = !logits.IsEmpty && (allPositions || t == n - 1);
                var dst = !wanted ? default : allPositions ? logits.Slice(t * vocab, vocab) : logits;
                Step(seq, tokens[t], firstPosition + t, dst, wanted);
            }
        }
    }

    // One token at `pos`: the data path of DESIGN.md, every step a kernel on the compute stream.
    private void Step(Sequence seq, int token, int pos, Span<float> logits, bool wantLogits)
    {
        var c = _c;
        int d = c.HiddenSize, hd = c.HeadDim, h = c.NumHeads, hkv = c.NumKvHeads, qDim = h * hd, kvDim = hkv * hd;
        int k = c.NumExpertsUsed, e = c.NumExperts, f = c.ExpertFfn;
        var dev = _device;
        dev.Args().Ptr(_hidden).Ptr(_embedding.Data).I64(_embedding.RowStride).I32((int)_embedding.Type).I32(token).I32(d)
            .Launch("embed_row", Launches.Elementwise(d));
        for (int i = 0; i < _layers.Length; i++)
        {
            var l = _layers[i];
            ulong kRow = seq.Keys[i] + (ulong)(4L * pos * kvDim), vRow = seq.Values[i] + (ulong)(4L * pos * kvDim);
            RmsNorm(_normed, _hidden, l.AttnNorm, 1, d);
            MatVec(l.Q, _normed, _q);
            MatVec(l.K, _normed, kRow);
            MatVec(l.V, _normed, vRow);
            if (l.QBias != 0) Add(_q, l.QBias, qDim);
            if (l.KBias != 0) Add(kRow, l.KBias, kvDim);
            if (l.VBias != 0) Add(vRow, l.VBias, kvDim);
            if (c.QkNorm == QkNormKind.PerHead)
            {
                RmsNorm(_q, _q, l.QNorm, h, hd);
                RmsNorm(kRow, kRow, l.KNorm, hkv, hd);
            }
            else if (c.QkNorm == QkNormKind.Full)
            {
                RmsNorm(_q, _q, l.QNorm, 1, qDim);
                RmsNorm(kRow, kRow, l.KNorm, 1, kvDim);
            }
            dev.Args().Ptr(_q).Ptr(seq.CosSin).I32(pos).I32(h).I32(hd).I32(_neox ? 1 : 0).Launch("rope", Launches.Rope(h, 1, hd));
            dev.Args().Ptr(kRow).Ptr(seq.CosSin).I32(pos).I32(hkv).I32(hd).I32(_neox ? 1 : 0).Launch("rope", Launches.Rope(hkv, 1, hd));
            dev.Args().Ptr(_attnOut).Ptr(_q).Ptr(seq.Keys[i]).Ptr(seq.Values[i]).Ptr(seq.Scores).I32(pos).I32(h).I32(hd).I32(kvDim)
                .I32(h / hkv).F32(_attnScale).I32(seq.Context).Launch("attention", Launches.Attention(h, 1));
            MatVec(l.O, _attnOut, _projected);
            Add(_hidden, _projected, d);

            RmsNorm(_normed, _hidden, l.FfnNorm, 1, d);
            MatVec(l.Router, _normed, _routerLogits);
            dev.Args().Ptr(_probs).Ptr(_ids).Ptr(_weights).Ptr(_routerLogits).I32(e).I32(k).I32(_renormalize ? 1 : 0)
                .Launch("softmax_topk", Launches.Router(1, e));
            if (_slotTable is not null) PlaceExperts(i);
            ExpertMatVec(l, i, 0, _normed, 0, _gateAct, f, d);
            ExpertMatVec(l, i, 1, _normed, 0, _upAct, f, d);
            dev.Args().Ptr(_gateAct).Ptr(_upAct).I64((long)k * f).Launch("silu_mul", Launches.Elementwise((long)k * f));
            ExpertMatVec(l, i, 2, _gateAct, f, _expertOut, d, f);
            dev.Args().Ptr(_moe).Ptr(_expertOut).Ptr(_weights).I32(k).I32(d).Launch("moe_combine", Launches.Elementwise(d));
            if (l.SharedGate is { } sharedGate)
            {
                MatVec(sharedGate, _normed, _sharedGate);
                MatVec(l.SharedUp!.Value, _normed, _sharedUp);
                dev.Args().Ptr(_sharedGate).Ptr(_sharedUp).I64(sharedGate.Rows).Launch("silu_mul", Launches.Elementwise(sharedGate.Rows));
                MatVec(l.SharedDown!.Value, _sharedGate, _sharedOut);
                dev.Args().Ptr(_gateLogit).Ptr(l.SharedGateVector).Ptr(_normed).I32(d).Launch("dot", Launches.PerRow(1));
                dev.Args().Ptr(_moe).Ptr(_sharedOut).Ptr(_gateLogit).I32(d).Launch("sigmoid_gated_add", Launches.Elementwise(d));
            }
            Add(_hidden, _moe, d);
        }
        if (!wantLogits) return;
        RmsNorm(_normed, _hidden, _outputNorm, 1, d);
        MatVec(_output, _normed, _logits);
        float* host = (float*)_hostScratch + k + e + d;
        _cu.CopyToHost(host, _logits, 4L * c.VocabSize, dev.ComputeStream);
        _cu.Synchronize(dev.ComputeStream);
        new ReadOnlySpan<float>(host, c.VocabSize).CopyTo(logits);
    }

    // Offloaded experts of layer i: read the routing back, make the chosen experts resident (demand copies), point the
    // layer's table at their slots, order the compute stream after their copies, then prefetch predicted experts.
    private void PlaceExperts(int layer)
    {
        var c = _c;
        int k = c.NumExpertsUsed, e = c.NumExperts, d = c.HiddenSize;
        var dev = _device;
        int* ids = (int*)_hostScratch;
        float* probs = (float*)_hostScratch + k;
        float* hidden = probs + e;
        _cu.CopyToHost(ids, _ids, 4L * k, dev.ComputeStream);
        _cu.CopyToHost(probs, _probs, 4L * e, dev.ComputeStream);
        _cu.CopyToHost(hidden, _hidden, 4L * d, dev.ComputeStream);
        _cu.Synchronize(dev.ComputeStream);
        var slots = _slotTable!;
        slots.ObserveRouting(layer, new ReadOnlySpan<float>(probs, e));
        var chosen = new HashSet<ExpertKey>();
        for (int j = 0; j < k; j++) chosen.Add(new ExpertKey(layer, ids[j]));
        for (int j = 0; j < k; j++)
        {
            var key = new ExpertKey(layer, ids[j]);
            int slot = slots.Use(key, chosen.Contains, out bool mustCopy);
            if (mustCopy) CopyIntoSlot(key, slot);
            ulong baseAddress = _slots + (ulong)(slot * _slotBytes);
            long index = ((long)layer * e + ids[j]) * 3;
            for (int p = 0; p < 3; p++) _tableMirror[index + p] = baseAddress + (ulong)_partOffsets[p];
            _cu.WaitEvent(dev.ComputeStream, _slotEvents[slot]);
        }
        long layerTable = (long)layer * e * 3;
        _cu.CopyToDevice(_table + (ulong)(layerTable * sizeof(ulong)), _tableMirror + layerTable, (long)e * 3 * sizeof(ulong), dev.ComputeStream);
        if (_predictor is null) return;
        var pinned = new HashSet<ExpertKey>(chosen);
        for (int ahead = 1; ahead <= _lookahead; ahead++)
        {
            if (layer + ahead >= c.NumLayers || !_predictor.Score(layer, ahead, new ReadOnlySpan<float>(hidden, d), _predictScores)) continue;
            int guesses = Math.Min(e, k + _predictExtra);
            ElementOps.TopK(_predictScores, guesses, _predictIds, _predictValues);
            for (int g = 0; g < guesses; g++)
            {
                var key = new ExpertKey(layer + ahead, _predictIds[g]);
                pinned.Add(key);
                if (slots.Prefetch(key, pinned.Contains) is int slot) CopyIntoSlot(key, slot);
            }
        }
    }

    // Copy engine: pinned host tier → VRAM slot on the copy stream; the slot's event marks its completion.
    private void CopyIntoSlot(ExpertKey key, int slot)
    {
        long index = (long)key.Layer * _c.NumExperts + key.Expert;
        _cu.CopyToDevice(_slots + (ulong)(slot * _slotBytes), _hostTier + index * _slotBytes, _slotBytes, _device.CopyStream);
        _cu.Record(_slotEvents[slot], _device.CopyStream);
        _slotTable!.CountCopy(_slotBytes);
    }

    private void RmsNorm(ulong dst, ulong x, ulong weight, int rows, int n) =>
        _device.Args().Ptr(dst).Ptr(x).Ptr(weight).I32(n).F32(_c.RmsNormEps).Launch("rms_norm_rows", Launches.PerRow(rows));

    private void Add(ulong y, ulong x, long n) => _device.Args().Ptr(y).Ptr(x).I64(n).Launch("add", Launches.Elementwise(n));

    private static bool NeedsQ8Input(DType type) => type is DType.Q8_0 or DType.Q4_0;

    private void QuantizeInput(ulong x, long values)
    {
        int blocks = checked((int)(values / 32));
        _device.Args().Ptr(_xq).Ptr(x).I32(blocks).Launch("quantize_q8_0", Launches.QuantizeQ8_0(blocks));
    }

    private void MatVec(in DeviceMatrix w, ulong x, ulong y)
    {
        if (NeedsQ8Input(w.Type)) QuantizeInput(x, w.Cols);
        _device.Args().Ptr(y).Ptr(w.Data).I64(w.RowStride).I32((int)w.Type).Ptr(x).Ptr(_xq).I32(w.Rows).I32(w.Cols)
            .Launch("matvec", Launches.MatVec(w.Rows, 1));
    }

    // Part p of the k chosen experts of layer i: y [k, rows] = W_{ids[j]} · x_j, x_j = x + j·inputStride floats.
    private void ExpertMatVec(Layer l, int layer, int part, ulong x, int inputStride, ulong y, int rows, int cols)
    {
        int k = _c.NumExpertsUsed;
        if (NeedsQ8Input(l.PartTypes[part])) QuantizeInput(x, inputStride == 0 ? cols : (long)k * inputStride);
        ulong table = _table + (ulong)((long)layer * _c.NumExperts * 3 * sizeof(ulong));
        _device.Args().Ptr(y).Ptr(table).Ptr(_ids).I32(part).I64(l.PartStrides[part]).I32((int)l.PartTypes[part]).Ptr(x).Ptr(_xq)
            .I32(inputStride).I32(rows).I32(cols).Launch("matvec_experts", Launches.MatVec(rows, k));
    }

    private void FreeAll()
    {
        foreach (ulong p in _allocations) _cu.Free(p);
        _allocations.Clear();
        foreach (var ev in _slotEvents) if (ev != 0) _cu.DestroyEvent(ev);
        if (_hostScratch != null) _cu.FreeHost(_hostScratch);
        if (_hostTier != null) _cu.FreeHost(_hostTier);
        if (_tableMirror != null) _cu.FreeHost(_tableMirror);
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            _device.MakeCurrent();
            _cu.Synchronize(_device.ComputeStream);
            _cu.Synchronize(_device.CopyStream);
            FreeAll();
            _device.Dispose();
        }
    }
}
