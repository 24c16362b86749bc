// Routed experts kept in the model files and brought into a byte-budgeted RAM slot cache by the expert loader (O_DIRECT
// reads), computed with the same SwiGLU kernels and accumulation order as the resident runner. Run-time correction as in
// ExpertFlow: experts already cached are computed first while the missing ones load (dvmazur/mixtral-offloading's cache);
// a miss may instead be computed in place from the memory map (--on-miss compute|auto, MissCostModel), or, when its routing
// weight is small, from a low-precision copy of the expert (--on-miss low-precision; HOBBIT, Tang et al. 2024).
using System.Diagnostics;
using System.Runtime.InteropServices;
using Pregate.Core;
using Pregate.Experts.Prediction;
using Pregate.Formats;
using Pregate.Kernels;
using Pregate.Models;

namespace Pregate.Experts;

/// <summary>Settings of an <see cref="OffloadedExperts"/> runner.</summary>
public sealed record OffloadOptions
{
    /// <summary>Bytes the slot pool may take; buys <c>floor(budget / slot bytes)</c> slots, at most one per expert.</summary>
    public required long BudgetBytes { get; init; }

    /// <summary>
    /// Which cached expert to evict. Score by default: layers run in a cycle, so LRU evicts exactly the experts the next
    /// token needs first and hits nothing once the cache holds fewer experts than one token uses (layers × top-k).
    /// </summary>
    public EvictionPolicyKind Policy { get; init; } = EvictionPolicyKind.Score;

    public ExpertLoaderOptions Loader { get; init; } = new();

    /// <summary>Guesses later layers' experts after each attention so their reads start early; null: load on demand only.</summary>
    public IExpertPredictor? Predictor { get; init; }

    /// <summary>How many layers ahead to prefetch (1 or 2; at most the predictor's reach).</summary>
    public int Lookahead { get; init; } = 1;

    /// <summary>Guesses beyond top-k to prefetch (top k + extra).</summary>
    public int PredictExtra { get; init; }

    /// <summary>What to do with an expert that is neither cached nor loading when its layer runs (see <see cref="MissPolicy"/>).</summary>
    public MissPolicy OnMiss { get; init; } = MissPolicy.Load;

    /// <summary>
    /// With <see cref="MissPolicy.LowPrecision"/>: a missed expert whose routing weight (after the model's normalisation) is
    /// below this is computed from its low-precision copy. 0 substitutes nothing; above 1 every missed expert.
    /// </summary>
    public float LowPrecisionBelow { get; init; } = MissPolicies.DefaultLowPrecisionBelow;
}

/// <summary>
/// An <see cref="IExpertRunner"/> that reads experts from the checkpoint's files into an <see cref="ExpertCache"/> instead of
/// through the memory map. For each layer it requests every routed expert at once, computes the cached ones while the rest
/// load, and accumulates <c>y += w_j · expert_j(x)</c> in the order of the ids, so its results are bit-identical to
/// <see cref="ResidentExperts"/>. With <see cref="MissPolicy.Load"/> the expert ranges are never read through the
/// checkpoint's memory map; with <see cref="MissPolicy.Compute"/> or <see cref="MissPolicy.Auto"/> a missed expert may be
/// computed in place from the map instead (the same pointers the resident runner uses, so the same bits), never entering
/// the cache, after the cached experts and while the loads run. With <see cref="MissPolicy.LowPrecision"/> a missed expert
/// whose routing weight is below <see cref="LowPrecisionBelow"/> is computed from its low-precision copy instead (the
/// smallest of the checkpoint's <see cref="Checkpoint.ExpertCopyTypes"/>, read with O_DIRECT into a buffer of its own when
/// its turn comes, never cached): in a block (prefill, a batched decode step) only
/// when every token routed to it in the block weighs it below the threshold. Only then may results differ. Construction
/// advises the kernel not to read ahead around the resident tensors (do it before the model reads any weight, as
/// <c>ModelSession</c> does). One sequence at a time: <see cref="Run"/> is not reentrant. Dispose to stop the I/O threads
/// and free the slots.
/// </summary>
public sealed class OffloadedExperts : IExpertRunner, IDisposable
{
    private static readonly TensorRole[] PartRoles = [TensorRole.ExpertGate, TensorRole.ExpertUp, TensorRole.ExpertDown];

    private readonly record struct MatrixShape(DType Type, int Rows, int Cols);

    private readonly ExpertLoader _loader;
    private readonly MatrixShape[] _shapes;   // [(layer · E + expert) · 3 + part]: gate [F, D], up [F, D], down [D, F]
    private readonly int _expertCount;
    private readonly ExpertKey[] _keys;       // [k] the experts of the current layer
    private readonly bool[] _done;            // [k]
    private readonly float[][] _early;        // [k][D] outputs computed before their turn to be accumulated
    private readonly long _created;
    private long _tokens;
    private long _computedAheadOfTurn;
    private readonly IExpertPredictor? _predictor;
    private readonly int _lookahead, _guesses;
    private readonly float[] _scores;            // [E]
    private readonly int[] _guessIds;            // [k + extra]
    private readonly float[] _guessValues;
    private readonly bool[][] _predicted;        // [layer][E] guessed for this token's pass through that layer
    private readonly bool[] _hasPrediction;      // [layer]
    private long _predictionChecks, _predictionHits, _predictionGuesses;
    private readonly long[] _layerChecks, _layerHits, _layerGuesses; // [layer] the prediction counters per layer
    private long _blockFirstToken;               // tokens run before the current block (the predictor's token step)
    private ExpertKey[] _blockKeys = [];        // [distinct experts of a block]
    private bool[] _blockDone = [];
    private float[] _slotOut = [];              // [pairs, D] each (token, j) output of a block, grouped by expert
    private ActivationQ8? _groupInput;          // [tokens of one expert, D]
    private readonly MissCostModel _missCost;   // map ranges of every expert, and the auto policy's measurements
    private readonly bool[] _inPlace = [];      // [k] computed from the memory map in this call
    private readonly bool[] _inPlaceCold = [];  // [k] ... and its bytes were not all in the page cache
    private bool[] _blockInPlace = [];          // [distinct experts of a block]
    private ExpertKey[] _requests = [];         // the keys of a call that the loader serves
    private long _computedInPlace, _computedInPlaceBytes;
    private readonly MissCostModel? _lowCopies;      // map ranges of every expert's low-precision copy (LowPrecision only)
    private readonly ExpertLayout? _lowLayout;       // file ranges of the same copies
    private readonly MatrixShape[] _lowShapes = [];  // like _shapes, for the copies
    private readonly Dictionary<string, DirectFileReader> _lowReaders = new(StringComparer.Ordinal); // O_DIRECT readers of the copies' files
    private readonly nint _lowBuffer;                 // 4096-aligned native memory: the largest copy's three aligned ranges
    private readonly long _lowBufferBytes;
    private readonly bool[] _lowPrecision = [];      // [k] computed from its low-precision copy in this call
    private bool[] _blockLowPrecision = [];          // [distinct experts of a block]
    private float[] _groupWeight = [];               // [distinct experts of a block] the largest weight of its tokens
    private long _computedLowPrecision, _computedLowPrecisionBytes;
    private GuessCalibration? _calibration;     // how often guesses turn out right; created with the first prediction
    private int[][][] _loggedIds = [];          // [ahead - 1][target layer][token · guesses + rank] the block's guesses
    private float[][][] _loggedSoftmax = [];    // [ahead - 1][target layer][token · guesses + rank] their softmax probabilities
    private int[][] _loggedTokens = [];         // [ahead - 1][target layer] tokens of the block whose guesses are logged
    private int[] _routingCalls = [];           // [layer] routings seen since the layer's attention: the block's token
    private int[] _routedIds = [];              // [k]
    private float[] _routedValues = [];         // [k]

    /// <summary>Offloads the routed experts of <paramref name="ck"/> (see <see cref="LayoutOf"/>).</summary>
    /// <exception cref="ArgumentException">The budget buys fewer slots than the experts one layer uses (the message names the minimum).</exception>
    /// <exception cref="ModelFormatException">An expert lies outside its file.</exception>
    public OffloadedExperts(Checkpoint ck, OffloadOptions options) : this(ck, LayoutOf(ck), options)
    {
    }

    /// <summary>Offloads the routed experts of <paramref name="ck"/> described by <paramref name="layout"/> (from <see cref="LayoutOf"/>).</summary>
    /// <exception cref="ArgumentException">The layout does not fit the model, or the budget is below <see cref="MinimumBudgetBytes"/>, or
    /// <see cref="MissPolicy.LowPrecision"/> is asked for without usable copies (see <see cref="LowPrecisionCopyType"/>).</exception>
    /// <exception cref="ModelFormatException">A low-precision copy is malformed (the message names the tensor).</exception>
    public OffloadedExperts(Checkpoint ck, ExpertLayout layout, OffloadOptions options)
    {
        ArgumentNullException.ThrowIfNull(ck);
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentNullException.ThrowIfNull(options);
        var c = ck.Config;
        if (layout.LayerCount != c.NumLayers || layout.ExpertCount != c.NumExperts || layout.PartCount != PartRoles.Length)
            throw new ArgumentException($"The layout has {layout.LayerCount} layers × {layout.ExpertCount} experts of {layout.PartCount} parts; " +
                $"the model needs {c.NumLayers} × {c.NumExperts} of {PartRoles.Length}.", nameof(layout));
        int topK = c.NumExpertsUsed;
        int slots = SlotPool.SlotCountForBudget(options.BudgetBytes, layout.SlotBytes, topK, checked(c.NumLayers * c.NumExperts));
        _expertCount = c.NumExperts;
        _shapes = new MatrixShape[checked(c.NumLayers * c.NumExperts * PartRoles.Length)];
        var mapPointers = new nint[_shapes.Length];
        var mapLengths = new long[_shapes.Length];
        for (int l = 0; l < c.NumLayers; l++)
            for (int e = 0; e < c.NumExperts; e++)
                for (int p = 0; p < PartRoles.Length; p++)
                {
                    var v = ck.GetExpert(PartRoles[p], l, e);
                    int at = (l * c.NumExperts + e) * PartRoles.Length + p;
                    _shapes[at] = new MatrixShape(v.Type, checked((int)v.Shape[0]), checked((int)v.Shape[1]));
                    (mapPointers[at], mapLengths[at]) = (v.Pointer, v.ByteLength);
                }
        _missCost = new MissCostModel(c.NumLayers, c.NumExperts, PartRoles.Length, mapPointers, mapLengths);
        OnMiss = options.OnMiss;
        if (OnMiss == MissPolicy.LowPrecision)
        {
            if (!float.IsFinite(options.LowPrecisionBelow) || options.LowPrecisionBelow < 0)
                throw new ArgumentException($"the low-precision threshold must be a weight of at least 0, not {options.LowPrecisionBelow}", nameof(options));
            LowPrecisionBelow = options.LowPrecisionBelow;
            DType type = LowPrecisionCopyType(ck, layout.TotalBytes);
            LowPrecisionType = type;
            _lowShapes = new MatrixShape[_shapes.Length];
            var lowPointers = new nint[_shapes.Length];
            var lowLengths = new long[_shapes.Length];
            var lowExtents = new ExpertExtent[checked(c.NumLayers * c.NumExperts)];
            for (int l = 0; l < c.NumLayers; l++)
                for (int e = 0; e < c.NumExperts; e++)
                {
                    var parts = new ExpertPart[PartRoles.Length];
                    for (int p = 0; p < PartRoles.Length; p++)
                    {
                        var v = ck.GetExpertCopy(PartRoles[p], l, e, type);
                        int at = (l * c.NumExperts + e) * PartRoles.Length + p;
                        _lowShapes[at] = _shapes[at] with { Type = v.Type };
                        (lowPointers[at], lowLengths[at]) = (v.Pointer, v.ByteLength);
                        var (file, offset) = ck.Locate(v);
                        parts[p] = new ExpertPart(file, offset, v.ByteLength);
                    }
                    lowExtents[l * c.NumExperts + e] = new ExpertExtent(parts);
                }
            _lowCopies = new MissCostModel(c.NumLayers, c.NumExperts, PartRoles.Length, lowPointers, lowLengths);
            _lowLayout = new ExpertLayout(c.NumLayers, c.NumExperts, lowExtents);
            // Copies are read like full experts (O_DIRECT, not through the page cache, which a memory cap would charge and
            // reclaim under the reads) into one buffer of their own: they never take a cache slot.
            foreach (var extent in lowExtents)
                _lowBufferBytes = Math.Max(_lowBufferBytes, extent.Parts.Sum(part => DirectFileReader.CoveringLength(part.Offset, part.Length)));
            foreach (string file in _lowLayout.Files) _lowReaders[file] = new DirectFileReader(file, options.Loader.AllowDirectIo);
            unsafe { _lowBuffer = (nint)NativeMemory.AlignedAlloc((nuint)_lowBufferBytes, DirectFileReader.Alignment); }
        }
        DirectIo = options.Loader.AllowDirectIo && layout.Files.All(f =>
        {
            using var probe = new DirectFileReader(f, allowDirect: true);
            return probe.IsDirect;
        });
        BudgetBytes = options.BudgetBytes;
        Policy = options.Policy;
        ResidentWeightAdvice.Apply(ck);
        var pool = new SlotPool(layout.SlotBytes, slots);
        try
        {
            _loader = new ExpertLoader(layout, new ExpertCache(pool, EvictionPolicy.Create(options.Policy, c.NumLayers, c.NumExperts)), options.Loader);
        }
        catch
        {
            pool.Dispose();
            throw;
        }
        _keys = new ExpertKey[topK];
        _done = new bool[topK];
        _inPlace = new bool[topK];
        _inPlaceCold = new bool[topK];
        _lowPrecision = new bool[topK];
        _early = new float[topK][];
        for (int j = 0; j < topK; j++) _early[j] = new float[c.HiddenSize];
        _predictor = options.Predictor;
        if (_predictor is not null && (options.Lookahead < 1 || options.Lookahead > _predictor.MaxLookahead))
            throw new ArgumentException($"lookahead must be between 1 and {_predictor.MaxLookahead} for this predictor, not {options.Lookahead}", nameof(options));
        if (options.PredictExtra < 0 || topK + options.PredictExtra > c.NumExperts)
            throw new ArgumentException($"predict-extra must be between 0 and {c.NumExperts - topK}, not {options.PredictExtra}", nameof(options));
        _lookahead = options.Lookahead;
        _guesses = topK + options.PredictExtra;
        _scores = new float[c.NumExperts];
        _guessIds = new int[_guesses];
        _guessValues = new float[_guesses];
        _predicted = Enumerable.Range(0, c.NumLayers).Select(_ => new bool[c.NumExperts]).ToArray();
        _hasPrediction = new bool[c.NumLayers];
        _layerChecks = new long[c.NumLayers];
        _layerHits = new long[c.NumLayers];
        _layerGuesses = new long[c.NumLayers];
        _created = Stopwatch.GetTimestamp();
    }

    /// <summary>
    /// Prefetches the experts the predictor expects layers layer+1 … layer+lookahead to route the block to (each token's
    /// top k + extra guesses), and remembers the next layer's guesses to measure recall when it runs. Each guess goes to
    /// the loader with its calibrated probability (<see cref="GuessCalibration"/> over the softmax of the predictor's
    /// scores), which the loader's <see cref="PrefetchGating"/> weighs; the guesses are logged to calibrate against the
    /// routing the target layer then makes (<see cref="ObserveRouting"/>). Recall and precision (<see cref="Stats"/>) count a
    /// single token and every token of a <paramref name="decodeStep"/> (several sequences decoding together), each against
    /// its own guesses; the tokens of a prompt block (prefill) are not counted. Guesses that several tokens share are
    /// prefetched once (the loader reads a key that is resident or in flight no second time).
    /// </summary>
    public void AfterAttention(int layer, ReadOnlySpan<float> hidden, int tokens, bool decodeStep)
    {
        if (_predictor is null) return;
        var calibration = _calibration ??= CreateCalibration();
        if (layer == 0)
        {
            _blockFirstToken = Interlocked.Read(ref _tokens);
            foreach (int[] logged in _loggedTokens) Array.Clear(logged);
        }
        _routingCalls[layer] = 0;
        int d = hidden.Length / Math.Max(tokens, 1);
        for (int a = 1; a <= _lookahead; a++)
        {
            int target = layer + a;
            if (target >= _predicted.Length) break;
            if (a == 1)
            {
                Array.Clear(_predicted[target]);
                _hasPrediction[target] = tokens == 1 || decodeStep;
            }
            _loggedTokens[a - 1][target] = 0;
            if (_loggedIds[a - 1][target].Length < tokens * _guesses)
            {
                _loggedIds[a - 1][target] = new int[tokens * _guesses];
                _loggedSoftmax[a - 1][target] = new float[tokens * _guesses];
            }
            var ids = _loggedIds[a - 1][target];
            var softmax = _loggedSoftmax[a - 1][target];
            for (int t = 0; t < tokens; t++)
            {
                _predictor.BeginToken(_blockFirstToken + t);
                if (!_predictor.Score(layer, a, hidden.Slice(t * d, d), _scores)) break;
                ElementOps.TopK(_scores, _guesses, _guessIds, _guessValues);
                // p_j = exp(s_j − max) / Σ_e exp(s_e − max): the guess's share of the softmax over every expert.
                float max = _guessValues[0];
                double sum = 0;
                foreach (float score in _scores) sum += Math.Exp(score - max);
                for (int j = 0; j < _guesses; j++)
                {
                    int e = _guessIds[j];
                    float p = (float)(Math.Exp(_guessValues[j] - max) / sum);
                    if (a == 1) _predicted[target][e] = true;
                    ids[t * _guesses + j] = e;
                    softmax[t * _guesses + j] = p;
                    _loader.Prefetch(new ExpertKey(target, e), calibration.Probability(a, target, j, p));
                }
                _loggedTokens[a - 1][target] = t + 1;
            }
        }
    }

    private GuessCalibration CreateCalibration()
    {
        int layers = _predicted.Length;
        _loggedIds = new int[_lookahead][][];
        _loggedSoftmax = new float[_lookahead][][];
        _loggedTokens = new int[_lookahead][];
        for (int a = 0; a < _lookahead; a++)
        {
            _loggedIds[a] = Enumerable.Range(0, layers).Select(_ => Array.Empty<int>()).ToArray();
            _loggedSoftmax[a] = Enumerable.Range(0, layers).Select(_ => Array.Empty<float>()).ToArray();
            _loggedTokens[a] = new int[layers];
        }
        _routingCalls = new int[layers];
        _routedIds = new int[_keys.Length];
        _routedValues = new float[_keys.Length];
        return new GuessCalibration(_lookahead, layers, _guesses);
    }

    /// <summary>
    /// Where each routed expert's bytes lie: expert (l, e) has three parts, gate [F, D], up [F, D] and down [D, F], each the
    /// matrix's range in its file (GGUF: a slice of the stacked <c>ffn_*_exps</c> tensors; HF: the expert's own tensors, in
    /// whichever shard holds them).
    /// </summary>
    /// <exception cref="ModelFormatException">An expert lies outside its file.</exception>
    public static ExpertLayout LayoutOf(Checkpoint ck)
    {
        ArgumentNullException.ThrowIfNull(ck);
        var c = ck.Config;
        var extents = new ExpertExtent[checked(c.NumLayers * c.NumExperts)];
        for (int l = 0; l < c.NumLayers; l++)
            for (int e = 0; e < c.NumExperts; e++)
            {
                var parts = new ExpertPart[PartRoles.Length];
                for (int p = 0; p < parts.Length; p++)
                {
                    var v = ck.GetExpert(PartRoles[p], l, e);
                    var (file, offset) = ck.Locate(v);
                    parts[p] = new ExpertPart(file, offset, v.ByteLength);
                }
                extents[l * c.NumExperts + e] = new ExpertExtent(parts);
            }
        return new ExpertLayout(c.NumLayers, c.NumExperts, extents);
    }

    /// <summary>
    /// The copy <see cref="MissPolicy.LowPrecision"/> computes missed experts from: of the checkpoint's
    /// <see cref="Checkpoint.ExpertCopyTypes"/>, the one with the fewest bytes per weight (the first stored among equals),
    /// which must take fewer bytes than the main experts (<paramref name="expertBytes"/>, Σ over all experts; 0 skips the check).
    /// </summary>
    /// <exception cref="ArgumentException">The checkpoint has no copies, or none smaller than its experts (the message names the
    /// file and how to write one).</exception>
    /// <exception cref="ModelFormatException">The chosen copy is missing for some expert tensor, or has a wrong shape or type.</exception>
    public static DType LowPrecisionCopyType(Checkpoint ck, long expertBytes = 0)
    {
        ArgumentNullException.ThrowIfNull(ck);
        const string how = "pregate quantize --model ORIGINAL --out OUT.gguf --type MAIN --dual MAIN,LOW (e.g. --type q8_0 --dual q8_0,q4_0)";
        if (ck.ExpertCopyTypes.Count == 0)
            throw new ArgumentException($"--on-miss low-precision needs low-precision copies of the experts, and {ck.Path} has none; write a model with them: {how}");
        DType type = ck.ExpertCopyTypes.OrderBy(t => (double)DTypes.BlockBytes(t) / DTypes.BlockSize(t)).First();
        if (expertBytes > 0)
        {
            var c = ck.Config;
            long copyBytes = 0;
            for (int l = 0; l < c.NumLayers; l++)
                foreach (var role in PartRoles)
                    copyBytes += ck.GetExpertCopy(role, l, 0, type).ByteLength * c.NumExperts;
            if (copyBytes >= expertBytes)
                throw new ArgumentException($"the {DTypes.Name(type)} expert copies in {ck.Path} take {copyBytes} bytes, not fewer than the experts' {expertBytes}: " +
                                            $"low precision would read more, not less; write a model with smaller copies: {how}");
        }
        return type;
    }

    /// <summary>The smallest budget a model with this layout accepts: <paramref name="topK"/> slots (one layer's experts at once).</summary>
    public static long MinimumBudgetBytes(ExpertLayout layout, int topK)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(topK);
        return checked(topK * DirectFileReader.AlignUp(layout.SlotBytes));
    }

    public ExpertLayout Layout => _loader.Layout;

    /// <summary>The budget the runner was given.</summary>
    public long BudgetBytes { get; }

    /// <summary>Experts the cache holds at once.</summary>
    public int SlotCount => _loader.SlotCount;

    /// <summary>Bytes of one slot (the largest expert, its reads aligned to 4096 bytes).</summary>
    public long SlotBytes => DirectFileReader.AlignUp(_loader.Layout.SlotBytes);

    public EvictionPolicyKind Policy { get; }

    /// <summary>What a miss does: load into a slot, compute from the memory map, or choose by cost (<see cref="MissCostModel"/>).</summary>
    public MissPolicy OnMiss { get; }

    /// <summary>With <see cref="MissPolicy.LowPrecision"/>: missed experts weighted below this are computed from their copies.</summary>
    public float LowPrecisionBelow { get; }

    /// <summary>The type of the copies <see cref="MissPolicy.LowPrecision"/> computes from; null under the other policies.</summary>
    public DType? LowPrecisionType { get; }

    /// <summary>True when every expert file is read with O_DIRECT (bypassing the page cache).</summary>
    public bool DirectIo { get; }

    /// <summary>Counters since the runner was created; a token is counted each time layer 0 runs.</summary>
    public ExpertStats Stats
    {
        get
        {
            var perLayer = _loader.LayerStats();
            var layers = new ExpertLayerStats[perLayer.Length];
            for (int l = 0; l < layers.Length; l++) layers[l] = new ExpertLayerStats(l, perLayer[l], _layerChecks[l], _layerHits[l], _layerGuesses[l]);
            return new(Interlocked.Read(ref _tokens), _loader.Stats, Stopwatch.GetElapsedTime(_created), _predictionChecks, _predictionHits,
                _predictionGuesses, layers)
            {
                ComputedInPlace = _computedInPlace, ComputedInPlaceBytes = _computedInPlaceBytes,
                ComputedLowPrecision = _computedLowPrecision, ComputedLowPrecisionBytes = _computedLowPrecisionBytes,
            };
        }
    }

    /// <summary>True when expert (<paramref name="layer"/>, <paramref name="expert"/>) is in the cache and loaded (not in flight).</summary>
    public bool IsResident(int layer, int expert) => _loader.IsResident(new ExpertKey(layer, expert));

    /// <summary>
    /// True when the predictor guessed <paramref name="expert"/> (among its top k + extra) for the current token's pass
    /// through <paramref name="layer"/>, one layer ahead; false without a predictor. Read it on the forward pass's thread.
    /// </summary>
    public bool IsPredicted(int layer, int expert) => _predictor is not null && _predicted[layer][expert];

    /// <summary>
    /// Feeds the router's probabilities to the eviction policy (the score policy uses them), and scores the guesses made
    /// for this token of the block against the layer's top k (the model's routing: top k of the same probabilities).
    /// </summary>
    public void ObserveRouting(int layer, ReadOnlySpan<float> probabilities)
    {
        _loader.ObserveRouting(layer, probabilities);
        if (_calibration is not { } calibration) return;
        int t = _routingCalls[layer]++;
        bool routedKnown = false;
        for (int a = 1; a <= _lookahead; a++)
        {
            if (t >= _loggedTokens[a - 1][layer]) continue;
            if (!routedKnown) ElementOps.TopK(probabilities, _routedIds.Length, _routedIds, _routedValues);
            routedKnown = true;
            for (int j = 0; j < _guesses; j++)
            {
                int at = t * _guesses + j;
                calibration.Observe(a, layer, j, _loggedSoftmax[a - 1][layer][at], Array.IndexOf(_routedIds, _loggedIds[a - 1][layer][at]) >= 0);
            }
        }
    }

    /// <summary>
    /// y += Σ_j weights[j] · expert(layer, ids[j])(x), accumulated in the order of <paramref name="ids"/>. Requests every
    /// expert, computes whichever is cached first and waits only when none is; outputs computed ahead of their turn wait
    /// in a buffer.
    /// </summary>
    /// <exception cref="ArgumentException">More ids than the model's top-k, or ids and weights of different lengths.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A layer or expert outside the model.</exception>
    /// <exception cref="ExpertLoadException">Reading an expert failed, or its file shrank under it (the message names the file).</exception>
    public void Run(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team)
    {
        int n = ids.Length;
        if (n > _keys.Length) throw new ArgumentException($"{n} experts requested; the model routes to at most {_keys.Length}.", nameof(ids));
        if (weights.Length != n) throw new ArgumentException($"{n} ids but {weights.Length} weights.", nameof(weights));
        if (layer == 0) Interlocked.Increment(ref _tokens);
        _loader.BeginLayer(layer);
        var keys = _keys.AsSpan(0, n);
        for (int j = 0; j < n; j++) keys[j] = new ExpertKey(layer, ids[j]);
        var inPlace = _inPlace.AsSpan(0, n);
        var inPlaceCold = _inPlaceCold.AsSpan(0, n);
        var low = _lowPrecision.AsSpan(0, n);
        DecideMisses(keys, weights, inPlace, low, inPlaceCold, [], 1);
        _loader.Request(LoaderKeys(keys, inPlace, n));
        if (_hasPrediction[layer])
        {
            _hasPrediction[layer] = false;
            int hits = 0, guesses = 0;
            foreach (int id in ids) if (_predicted[layer][id]) hits++;
            foreach (bool guessed in _predicted[layer]) if (guessed) guesses++;
            _predictionChecks += n;
            _predictionHits += hits;
            _predictionGuesses += guesses;
            _layerChecks[layer] += n;
            _layerHits[layer] += hits;
            _layerGuesses[layer] += guesses;
        }

        var done = _done.AsSpan(0, n);
        done.Clear();
        int next = 0; // the next output to accumulate
        for (int left = n; left > 0; left--)
        {
            int j = -1;
            ExpertLease? lease = null;
            for (int i = next; i < n && j < 0; i++)
                if (!done[i] && !inPlace[i] && _loader.TryAcquire(keys[i], out lease)) j = i;
            for (int i = next; i < n && j < 0; i++)
                if (!done[i] && inPlace[i]) j = i; // nothing cached: compute from the map while loads go on
            long start = Stopwatch.GetTimestamp();
            if (j >= 0 && inPlace[j])
            {
                SwiGlu.Run(MapWeightsOf(keys[j], low[j]), x, scratch, team);
                CountInPlace(keys[j], low[j], Stopwatch.GetElapsedTime(start), inPlaceCold[j]);
            }
            else
            {
                if (j < 0) lease = _loader.Acquire(keys[j = next]); // nothing cached: wait for the one needed first
                start = Stopwatch.GetTimestamp();
                using (lease) SwiGlu.Run(WeightsOf(lease!), x, scratch, team);
                if (OnMiss == MissPolicy.Auto) _missCost.ObserveCompute(_missCost.BytesOf(keys[j]), Stopwatch.GetElapsedTime(start).TotalSeconds, cold: false);
            }
            done[j] = true;
            var output = scratch.Out.AsSpan(0, y.Length);
            if (j != next)
            {
                _computedAheadOfTurn++;
                output.CopyTo(_early[j]);
                continue;
            }
            ElementOps.WeightedAdd(y, weights[next++], output);
            for (; next < n && done[next]; next++) ElementOps.WeightedAdd(y, weights[next], _early[next].AsSpan(0, y.Length));
        }
    }

    /// <summary>
    /// A block of tokens (prefill): groups the (token, j) pairs by expert, requests the block's experts, computes each expert
    /// once over all its tokens — cached experts first, then the rest as they load — and combines per token in j order with
    /// the same kernels as <see cref="ResidentExperts.RunBatch"/>, so results stay bit-identical.
    /// </summary>
    public void RunBatch(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team)
    {
        int tokens = x.Tokens;
        if (tokens == 1)
        {
            Run(layer, ids, weights, x, y, scratch, team);
            return;
        }
        int topK = ExpertGrouping.ExpertsPerToken(ids, weights, x, y);
        if (layer == 0) Interlocked.Add(ref _tokens, tokens);
        if (_hasPrediction[layer]) CountStepPredictions(layer, ids, topK, tokens);
        _loader.BeginLayer(layer);
        var g = scratch.Grouping;
        g.Build(ids, tokens);
        int d = x.Cols, count = g.Count;
        if (_blockKeys.Length < count) _blockKeys = new ExpertKey[_expertCount];
        if (_blockDone.Length < count) _blockDone = new bool[_expertCount];
        if (_blockInPlace.Length < count) _blockInPlace = new bool[_expertCount];
        if (_blockLowPrecision.Length < count) _blockLowPrecision = new bool[_expertCount];
        if (_groupWeight.Length < count) _groupWeight = new float[_expertCount];
        if (_slotOut.Length < g.Pairs * d) _slotOut = new float[g.Pairs * d];
        if (_groupInput is null || _groupInput.MaxTokens < tokens || _groupInput.MaxCols < d) _groupInput = new ActivationQ8(d, tokens);
        var keys = _blockKeys.AsSpan(0, count);
        var done = _blockDone.AsSpan(0, count);
        done.Clear();
        for (int i = 0; i < count; i++) keys[i] = new ExpertKey(layer, g.Experts[i]);
        var inPlace = _blockInPlace.AsSpan(0, count);
        var low = _blockLowPrecision.AsSpan(0, count);
        var groupWeight = _groupWeight.AsSpan(0, count);
        if (OnMiss == MissPolicy.LowPrecision) LargestWeights(g, weights, groupWeight);
        DecideMisses(keys, groupWeight, inPlace, low, [], g.Starts, tokens);
        _loader.Request(LoaderKeys(keys, inPlace, SlotCount)); // more would wait for slots this block is still using
        // Pass 0: cached experts; 1: experts computed from the map (while loads go on); 2: the rest, waiting for each.
        for (int pass = 0; pass < 3; pass++)
            for (int i = 0; i < count; i++)
            {
                if (done[i] || inPlace[i] != (pass == 1)) continue;
                ExpertLease? lease = null;
                if (pass == 0 && !_loader.TryAcquire(keys[i], out lease)) continue;
                if (pass == 2) lease = _loader.Acquire(keys[i]);
                int first = g.Starts[i], n = g.Starts[i + 1] - first;
                _groupInput.LoadRows(x.Values(), d, g.SlotToken.Slice(first, n));
                if (lease is null)
                {
                    SwiGlu.Run(MapWeightsOf(keys[i], low[i]), _groupInput, scratch, team);
                    CountInPlace(keys[i], low[i], TimeSpan.Zero, cold: false);
                }
                else
                {
                    using (lease) SwiGlu.Run(WeightsOf(lease), _groupInput, scratch, team);
                }
                scratch.Out.AsSpan(0, n * d).CopyTo(_slotOut.AsSpan(first * d, n * d));
                done[i] = true;
            }
        g.Combine(weights, _slotOut.AsSpan(0, g.Pairs * d), y, tokens);
    }

    // A decode step of several sequences: each token's routed experts against the guesses made for that token one layer
    // ahead (logged by AfterAttention); a token the predictor gave no guesses counts its experts as missed.
    private void CountStepPredictions(int layer, ReadOnlySpan<int> ids, int topK, int tokens)
    {
        _hasPrediction[layer] = false;
        int logged = _loggedTokens[0][layer];
        var guessed = _loggedIds[0][layer];
        long hits = 0, guesses = 0;
        for (int t = 0; t < tokens; t++)
        {
            if (t >= logged) continue;
            var own = guessed.AsSpan(t * _guesses, _guesses);
            foreach (int id in ids.Slice(t * topK, topK)) if (own.Contains(id)) hits++;
            guesses += _guesses;
        }
        long checks = (long)tokens * topK;
        _predictionChecks += checks;
        _predictionHits += hits;
        _predictionGuesses += guesses;
        _layerChecks[layer] += checks;
        _layerHits[layer] += hits;
        _layerGuesses[layer] += guesses;
    }

    /// <summary>Experts computed before an earlier one of the same layer (cached while the earlier one loaded).</summary>
    internal long ComputedAheadOfTurn => _computedAheadOfTurn;

    public void Dispose()
    {
        _loader.Dispose();
        foreach (var reader in _lowReaders.Values) reader.Dispose();
        _lowReaders.Clear();
        unsafe { if (_lowBuffer != 0) NativeMemory.AlignedFree((void*)_lowBuffer); }
    }

    // Marks the keys that are neither cached nor loading as computed in place (compute), or as the cost model says (auto),
    // or, when their routing weight is below the threshold, as computed in place from their low-precision copy (low-precision);
    // advises the kernel to read those not already in the page cache. starts: a block's grouping starts ([] = one token
    // each); weights: each key's routing weight (in a block the largest of its tokens'), read by low-precision only.
    private void DecideMisses(ReadOnlySpan<ExpertKey> keys, ReadOnlySpan<float> weights, Span<bool> inPlace, Span<bool> low, Span<bool> cold,
        ReadOnlySpan<int> starts, int blockTokens)
    {
        inPlace.Clear();
        low.Clear();
        cold.Clear();
        if (OnMiss == MissPolicy.Load) return;
        if (OnMiss == MissPolicy.LowPrecision)
        {
            for (int i = 0; i < keys.Length; i++)
            {
                if (!(weights[i] < LowPrecisionBelow) || _loader.IsResidentOrLoading(keys[i])) continue;
                inPlace[i] = low[i] = true;
            }
            return;
        }
        long token = Interlocked.Read(ref _tokens) - blockTokens; // the block's first token (layer 0 has counted it)
        if (OnMiss == MissPolicy.Auto && keys.Length > 0 && keys[0].Layer == 0) _missCost.ObserveLoader(_loader.Stats);
        for (int i = 0; i < keys.Length; i++)
        {
            if (OnMiss == MissPolicy.Auto) _missCost.ObserveUse(keys[i], starts.IsEmpty ? 1 : starts[i + 1] - starts[i], blockTokens, token);
            if (_loader.IsResidentOrLoading(keys[i])) continue;
            bool pageCached = false;
            inPlace[i] = OnMiss == MissPolicy.Compute || !_loader.TryPeekVictim(out ExpertKey? victim) ||
                         _missCost.PreferCompute(keys[i], victim, token, out pageCached);
            if (!inPlace[i] || pageCached) continue;
            _missCost.AdviseWillNeed(keys[i]);
            if (!cold.IsEmpty) cold[i] = true;
        }
    }

    // The keys the loader serves (those not computed in place), at most max of them, in a reused buffer.
    private ReadOnlySpan<ExpertKey> LoaderKeys(ReadOnlySpan<ExpertKey> keys, ReadOnlySpan<bool> inPlace, int max)
    {
        if (_requests.Length < keys.Length) _requests = new ExpertKey[Math.Max(keys.Length, _expertCount)];
        int n = 0;
        for (int i = 0; i < keys.Length && n < max; i++)
            if (!inPlace[i]) _requests[n++] = keys[i];
        return _requests.AsSpan(0, n);
    }

    // groupWeight[i] = the largest routing weight of the (token, j) pairs of the block's i-th expert.
    private static void LargestWeights(ExpertGrouping g, ReadOnlySpan<float> weights, Span<float> groupWeight)
    {
        groupWeight.Fill(float.NegativeInfinity);
        var slotOf = g.SlotOf;
        var starts = g.Starts;
        for (int pair = 0; pair < slotOf.Length; pair++)
        {
            int at = starts.BinarySearch(slotOf[pair]);
            int i = at >= 0 ? at : ~at - 1; // the group whose slots [starts[i], starts[i+1]) hold the pair
            groupWeight[i] = MathF.Max(groupWeight[i], weights[pair]);
        }
    }

    private void CountInPlace(ExpertKey key, bool lowPrecision, TimeSpan elapsed, bool cold)
    {
        if (lowPrecision)
        {
            _computedLowPrecision++;
            _computedLowPrecisionBytes += _lowCopies!.BytesOf(key);
            return;
        }
        long bytes = _missCost.BytesOf(key);
        _computedInPlace++;
        _computedInPlaceBytes += bytes;
        if (OnMiss == MissPolicy.Auto && elapsed > TimeSpan.Zero) _missCost.ObserveCompute(bytes, elapsed.TotalSeconds, cold);
    }

    // The expert's matrices where the checkpoint maps them (the resident runner's pointers), or its low-precision copy read
    // into the copy buffer. Touching a mapped page past the end of a file that shrank would kill the process (SIGBUS), so the
    // file's current length is checked first (one fstat per file; a file truncated between this check and the compute is
    // not caught).
    private ExpertWeights MapWeightsOf(ExpertKey key, bool lowPrecision)
    {
        if (lowPrecision) return ReadCopy(key);
        var (layout, map, shapes) = (_loader.Layout, _missCost, _shapes);
        foreach (ExpertPart part in layout.Extent(key).Parts)
        {
            long length = _loader.CurrentLength(part.Path);
            if (part.Offset + part.Length > length)
                throw new ExpertLoadException(key, new IOException(
                    $"'{part.Path}' now ends at byte {length}, before the expert's bytes [{part.Offset}, {part.Offset + part.Length}): " +
                    "the file was truncated while the model was open"));
        }
        int at = (key.Layer * _expertCount + key.Expert) * PartRoles.Length;
        return new ExpertWeights(Matrix(shapes[at], map.Part(key, 0).Pointer), Matrix(shapes[at + 1], map.Part(key, 1).Pointer),
            Matrix(shapes[at + 2], map.Part(key, 2).Pointer));
    }

    // Reads the three parts of key's low-precision copy into the copy buffer (each at a 4096-aligned place) and points at
    // them there. One buffer serves every copy: the runner computes one expert at a time.
    private unsafe ExpertWeights ReadCopy(ExpertKey key)
    {
        var pointers = stackalloc nint[PartRoles.Length];
        long at = 0;
        var parts = _lowLayout!.Extent(key).Parts;
        for (int p = 0; p < parts.Count; p++)
        {
            ExpertPart part = parts[p];
            try
            {
                _lowReaders[part.Path].ReadCovering(part.Offset, part.Length, (byte*)_lowBuffer + at, _lowBufferBytes - at);
            }
            catch (IOException e)
            {
                throw new ExpertLoadException(key, e);
            }
            pointers[p] = _lowBuffer + (nint)(at + part.Offset - DirectFileReader.AlignDown(part.Offset));
            at += DirectFileReader.CoveringLength(part.Offset, part.Length);
        }
        int first = (key.Layer * _expertCount + key.Expert) * PartRoles.Length;
        return new ExpertWeights(Matrix(_lowShapes[first], pointers[0]), Matrix(_lowShapes[first + 1], pointers[1]), Matrix(_lowShapes[first + 2], pointers[2]));
    }

    private ExpertWeights WeightsOf(ExpertLease lease)
    {
        int at = (lease.Key.Layer * _expertCount + lease.Key.Expert) * PartRoles.Length;
        return new ExpertWeights(Matrix(_shapes[at], lease.PartPointer(0)), Matrix(_shapes[at + 1], lease.PartPointer(1)),
            Matrix(_shapes[at + 2], lease.PartPointer(2)));
    }

    private static WeightMatrix Matrix(MatrixShape s, nint data) => new(s.Type, s.Rows, s.Cols, data);
}
