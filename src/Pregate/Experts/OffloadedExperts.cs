// Routed experts kept in the model files and brought into a byte-budgeted RAM slot cache by the expert loader (O_DIRECT
// reads), computed with the same SwiGLU kernels and accumulation order as the resident runner. Run-time correction as in
// ExpertFlow: experts already cached are computed first while the missing ones load (dvmazur/mixtral-offloading's cache).
using System.Diagnostics;
using Pregate.Core;
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
}

/// <summary>
/// An <see cref="IExpertRunner"/> that reads experts from the checkpoint's files into an <see cref="ExpertCache"/> instead of
/// through the memory map. For each layer it requests every routed expert at once, computes the cached ones while the rest
/// load, and accumulates <c>y += w_j · expert_j(x)</c> in the order of the ids, so its results are bit-identical to
/// <see cref="ResidentExperts"/>. The expert ranges are never read through the checkpoint's memory map: construction
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

    /// <summary>Offloads the routed experts of <paramref name="ck"/> (see <see cref="LayoutOf"/>).</summary>
    /// <exception cref="ArgumentException">The budget buys fewer slots than the experts one layer uses (the message names the minimum).</exception>
    /// <exception cref="ModelFormatException">An expert lies outside its file.</exception>
    public OffloadedExperts(Checkpoint ck, OffloadOptions options) : this(ck, LayoutOf(ck), options)
    {
    }

    /// <summary>Offloads the routed experts of <paramref name="ck"/> described by <paramref name="layout"/> (from <see cref="LayoutOf"/>).</summary>
    /// <exception cref="ArgumentException">The layout does not fit the model, or the budget is below <see cref="MinimumBudgetBytes"/>.</exception>
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
        for (int l = 0; l < c.NumLayers; l++)
            for (int e = 0; e < c.NumExperts; e++)
                for (int p = 0; p < PartRoles.Length; p++)
                {
                    var v = ck.GetExpert(PartRoles[p], l, e);
                    _shapes[(l * c.NumExperts + e) * PartRoles.Length + p] = new MatrixShape(v.Type, checked((int)v.Shape[0]), checked((int)v.Shape[1]));
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
        _early = new float[topK][];
        for (int j = 0; j < topK; j++) _early[j] = new float[c.HiddenSize];
        _created = Stopwatch.GetTimestamp();
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

    /// <summary>True when every expert file is read with O_DIRECT (bypassing the page cache).</summary>
    public bool DirectIo { get; }

    /// <summary>Counters since the runner was created; a token is counted each time layer 0 runs.</summary>
    public ExpertStats Stats => new(Interlocked.Read(ref _tokens), _loader.Stats, Stopwatch.GetElapsedTime(_created));

    /// <summary>Feeds the router's probabilities to the eviction policy (the score policy uses them).</summary>
    public void ObserveRouting(int layer, ReadOnlySpan<float> probabilities) => _loader.ObserveRouting(layer, probabilities);

    /// <summary>
    /// y += Σ_j weights[j] · expert(layer, ids[j])(x), accumulated in the order of <paramref name="ids"/>. Requests every
    /// expert, computes whichever is cached first and waits only when none is; outputs computed ahead of their turn wait
    /// in a buffer.
    /// </summary>
    /// <exception cref="ArgumentException">More ids than the model's top-k, or ids and weights of different lengths.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A layer or expert outside the model.</exception>
    /// <exception cref="ExpertLoadException">Reading an expert failed.</exception>
    public void Run(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team)
    {
        int n = ids.Length;
        if (n > _keys.Length) throw new ArgumentException($"{n} experts requested; the model routes to at most {_keys.Length}.", nameof(ids));
        if (weights.Length != n) throw new ArgumentException($"{n} ids but {weights.Length} weights.", nameof(weights));
        if (layer == 0) Interlocked.Increment(ref _tokens);
        _loader.BeginLayer(layer);
        var keys = _keys.AsSpan(0, n);
        for (int j = 0; j < n; j++) keys[j] = new ExpertKey(layer, ids[j]);
        _loader.Request(keys);

        var done = _done.AsSpan(0, n);
        done.Clear();
        int next = 0; // the next output to accumulate
        for (int left = n; left > 0; left--)
        {
            int j = -1;
            ExpertLease? lease = null;
            for (int i = next; i < n && j < 0; i++)
                if (!done[i] && _loader.TryAcquire(keys[i], out lease)) j = i;
            if (j < 0) lease = _loader.Acquire(keys[j = next]); // nothing cached: wait for the one needed first
            using (lease) SwiGlu.Run(WeightsOf(lease!), x, scratch, team);
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

    /// <summary>Experts computed before an earlier one of the same layer (cached while the earlier one loaded).</summary>
    internal long ComputedAheadOfTurn => _computedAheadOfTurn;

    public void Dispose() => _loader.Dispose();

    private ExpertWeights WeightsOf(ExpertLease lease)
    {
        int at = (lease.Key.Layer * _expertCount + lease.Key.Expert) * PartRoles.Length;
        return new ExpertWeights(Matrix(_shapes[at], lease.PartPointer(0)), Matrix(_shapes[at + 1], lease.PartPointer(1)),
            Matrix(_shapes[at + 2], lease.PartPointer(2)));
    }

    private static WeightMatrix Matrix(MatrixShape s, nint data) => new(s.Type, s.Rows, s.Cols, data);
}
