// The seam between a model and its routed experts: the model routes, an IExpertRunner computes
// y += Σ_j w_j · E_{id_j}(x). Where an expert's bytes come from (the mapped file, a RAM slot, VRAM) is the runner's business;
// the math is always SwiGlu, so every runner gives bit-identical results. A block of tokens is grouped by expert so each
// expert runs once per layer on all its tokens (ExpertFlow's token scheduling).
using Pregate.Formats;
using Pregate.Kernels;

namespace Pregate.Models;

/// <summary>An expert's three matrices: gate [F, D], up [F, D], down [D, F].</summary>
public readonly record struct ExpertWeights(WeightMatrix Gate, WeightMatrix Up, WeightMatrix Down);

/// <summary>Runs the routed experts of one layer.</summary>
public interface IExpertRunner
{
    /// <summary>
    /// One token: y += Σ_j weights[j] · expert(layer, ids[j])(x), accumulated in the order of <paramref name="ids"/>.
    /// <paramref name="x"/> holds the layer's normed hidden state (one vector).
    /// </summary>
    void Run(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team);

    /// <summary>
    /// The router of <paramref name="layer"/> gave <paramref name="probabilities"/> (softmax over all experts) for the token
    /// whose <see cref="Run"/> follows; cache policies that rank experts by router score learn from it. Default: nothing.
    /// </summary>
    void ObserveRouting(int layer, ReadOnlySpan<float> probabilities) { }

    /// <summary>
    /// Layer <paramref name="layer"/>'s attention produced <paramref name="hidden"/> ([tokens, D], the residual stream) for
    /// the tokens whose experts run next: the earliest point to start fetching later layers' experts.
    /// <paramref name="decodeStep"/>: the rows are one new token of each of several sequences decoding together
    /// (<see cref="MoeModel.ForwardStep"/>), not a block of one sequence's prompt. Default: nothing.
    /// </summary>
    void AfterAttention(int layer, ReadOnlySpan<float> hidden, int tokens, bool decodeStep) { }

    /// <summary>
    /// A block of x.Tokens tokens routed to k = ids.Length / x.Tokens experts each: for every token t,
    /// y[t] += Σ_j weights[t·k + j] · expert(layer, ids[t·k + j])(x_t), accumulated in j order, so the result is
    /// bit-identical to calling <see cref="Run"/> token by token (which this default does). y is [tokens, D] row-major.
    /// </summary>
    /// <exception cref="ArgumentException">ids, weights or y do not match the number of tokens.</exception>
    void RunBatch(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team)
    {
        int tokens = x.Tokens, d = x.Cols, k = ExpertGrouping.ExpertsPerToken(ids, weights, x, y);
        if (tokens == 1)
        {
            Run(layer, ids, weights, x, y, scratch, team);
            return;
        }
        for (int t = 0; t < tokens; t++)
        {
            scratch.TokenInput.Load(x.Values(t));
            Run(layer, ids.Slice(t * k, k), weights.Slice(t * k, k), scratch.TokenInput, y.Slice(t * d, d), scratch, team);
        }
    }
}

/// <summary>SwiGLU feed-forward: down(silu(gate·x) ⊙ up·x) (Mixtral w2(silu(w1 x) ⊙ w3 x)).</summary>
public static unsafe class SwiGlu
{
    /// <summary>
    /// scratch.Out[t] = down(silu(gate·x_t) ⊙ (up·x_t)) for each of the x.Tokens vectors (at most scratch.MaxSlots, of at
    /// most scratch.Ffn gate rows).
    /// </summary>
    public static void Run(in ExpertWeights w, ActivationQ8 x, ExpertScratch scratch, WorkerTeam? team)
    {
        ReadOnlySpan<int> starts = [0, x.Tokens];
        RunGrouped(new ReadOnlySpan<ExpertWeights>(in w), starts, x, scratch, team);
    }

    /// <summary>
    /// Several experts of one shape, each on its own group of inputs: vectors [starts[g], starts[g+1]) of
    /// <paramref name="x"/> go through experts[g], and scratch.Out[s] (a row of D) receives the output of vector s. The gate
    /// and up products of every expert run as one job on the team, then every down product as one job; each value is
    /// bit-identical to <see cref="Run"/> on that vector alone.
    /// </summary>
    /// <exception cref="ArgumentException">Shapes differ, the groups do not cover x, or the scratch is too small.</exception>
    public static void RunGrouped(ReadOnlySpan<ExpertWeights> experts, ReadOnlySpan<int> starts, ActivationQ8 x, ExpertScratch scratch, WorkerTeam? team)
    {
        if (experts.Length == 0) return;
        if (starts.Length != experts.Length + 1 || starts[0] != 0 || starts[^1] != x.Tokens)
            throw new ArgumentException($"{experts.Length} groups need {experts.Length + 1} starts from 0 to {x.Tokens}", nameof(starts));
        int f = experts[0].Gate.Rows, d = experts[0].Down.Rows, slots = x.Tokens;
        foreach (ref readonly var e in experts)
            if (e.Gate.Rows != f || e.Up.Rows != f || e.Down.Cols != f || e.Down.Rows != d)
                throw new ArgumentException("experts of one grouped run must share their shape", nameof(experts));
        if (slots > scratch.MaxSlots || f > scratch.Ffn || d > scratch.Hidden || experts.Length > scratch.MaxSlots)
            throw new ArgumentException($"{slots} vectors through [{f}, {d}] experts exceed the scratch ({scratch.MaxSlots} × [{scratch.Ffn}, {scratch.Hidden}])", nameof(scratch));

        var tasks = scratch.Tasks.AsSpan();
        fixed (float* gate = scratch.Gate) fixed (float* up = scratch.Up) fixed (float* output = scratch.Out)
        {
            for (int g = 0; g < experts.Length; g++)
            {
                int first = starts[g], count = starts[g + 1] - first;
                tasks[2 * g] = new MatMulTask(experts[g].Gate, x, first, count, gate + (long)first * f);
                tasks[2 * g + 1] = new MatMulTask(experts[g].Up, x, first, count, up + (long)first * f);
            }
            MatMul.Run(tasks[..(2 * experts.Length)], team);
            for (int s = 0; s < slots; s++) ElementOps.SiluMul(scratch.Gate.AsSpan(s * f, f), scratch.Up.AsSpan(s * f, f));
            scratch.DownAct.Load(scratch.Gate.AsSpan(0, slots * f), slots);
            for (int g = 0; g < experts.Length; g++)
            {
                int first = starts[g], count = starts[g + 1] - first;
                tasks[g] = new MatMulTask(experts[g].Down, scratch.DownAct, first, count, output + (long)first * d);
            }
            MatMul.Run(tasks[..experts.Length], team);
        }
    }
}

/// <summary>
/// The (token, j) pairs of a block grouped by expert: slots are numbered expert by expert (experts in ascending id, the
/// pairs of one expert in token order). Built once per layer; allocation-free after construction.
/// </summary>
public sealed class ExpertGrouping
{
    private readonly long[] _keys;
    private readonly int[] _slotOf;
    private readonly int[] _slotToken;
    private readonly int[] _experts;
    private readonly int[] _starts;

    public ExpertGrouping(int maxPairs)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPairs, 1);
        _keys = new long[maxPairs];
        _slotOf = new int[maxPairs];
        _slotToken = new int[maxPairs];
        _experts = new int[maxPairs];
        _starts = new int[maxPairs + 1];
    }

    /// <summary>Distinct experts of the block.</summary>
    public int Count { get; private set; }

    /// <summary>Pairs (= slots) of the block.</summary>
    public int Pairs { get; private set; }

    /// <summary>The distinct expert ids, ascending.</summary>
    public ReadOnlySpan<int> Experts => _experts.AsSpan(0, Count);

    /// <summary>First slot of each expert, and the total: Count + 1 values.</summary>
    public ReadOnlySpan<int> Starts => _starts.AsSpan(0, Count + 1);

    /// <summary>Slot of pair (t, j) at index t·k + j.</summary>
    public ReadOnlySpan<int> SlotOf => _slotOf.AsSpan(0, Pairs);

    /// <summary>The token of each slot.</summary>
    public ReadOnlySpan<int> SlotToken => _slotToken.AsSpan(0, Pairs);

    /// <summary>
    /// Groups <paramref name="ids"/> ([tokens, k] row-major, k = ids.Length / tokens). Throws
    /// <see cref="ArgumentException"/> when ids is not whole rows, is larger than the capacity, or holds a negative id.
    /// </summary>
    public void Build(ReadOnlySpan<int> ids, int tokens)
    {
        int n = ids.Length;
        if (tokens < 1 || n % tokens != 0) throw new ArgumentException($"{n} expert ids is not a whole number per token for {tokens} tokens", nameof(ids));
        if (n > _keys.Length) throw new ArgumentException($"{n} (token, expert) pairs exceed the capacity of {_keys.Length}", nameof(ids));
        int k = n / tokens;
        for (int i = 0; i < n; i++)
        {
            if (ids[i] < 0) throw new ArgumentException($"negative expert id {ids[i]}", nameof(ids));
            _keys[i] = ((long)ids[i] << 32) | (uint)i;
        }
        _keys.AsSpan(0, n).Sort();
        Pairs = n;
        Count = 0;
        for (int s = 0; s < n; s++)
        {
            int expert = (int)(_keys[s] >> 32), pair = (int)(uint)_keys[s];
            if (Count == 0 || _experts[Count - 1] != expert)
            {
                _experts[Count] = expert;
                _starts[Count] = s;
                Count++;
            }
            _slotOf[pair] = s;
            _slotToken[s] = pair / k;
        }
        _starts[Count] = n;
    }

    /// <summary>y[t] += Σ_j weights[t·k + j] · outputs[slot of (t, j)], in j order (rows of D = y.Length / tokens).</summary>
    public void Combine(ReadOnlySpan<float> weights, ReadOnlySpan<float> outputs, Span<float> y, int tokens)
    {
        int k = Pairs / tokens, d = y.Length / tokens;
        for (int t = 0; t < tokens; t++)
        {
            var row = y.Slice(t * d, d);
            for (int j = 0; j < k; j++)
                ElementOps.WeightedAdd(row, weights[t * k + j], outputs.Slice(_slotOf[t * k + j] * d, d));
        }
    }

    /// <summary>k for a block (ids.Length / x.Tokens), checking ids, weights and y against x.</summary>
    internal static int ExpertsPerToken(ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y)
    {
        int tokens = x.Tokens;
        if (tokens < 1 || ids.Length % tokens != 0 || ids.Length == 0) throw new ArgumentException($"{ids.Length} expert ids for {tokens} tokens", nameof(ids));
        if (weights.Length != ids.Length) throw new ArgumentException($"{weights.Length} weights for {ids.Length} expert ids", nameof(weights));
        if (y.Length != (long)tokens * x.Cols) throw new ArgumentException($"output has {y.Length} values, {tokens} × {x.Cols} expected", nameof(y));
        return ids.Length / tokens;
    }
}

/// <summary>
/// Every routed expert in memory (the resident mode): read in place from the checkpoint's memory map, or, with
/// <c>interleave</c>, from copies whose rows are interleaved for faster one-token products (the same bits; the mapped pages
/// of the copied experts are released).
/// </summary>
public sealed class ResidentExperts : IExpertRunner
{
    private readonly ExpertWeights[][] _experts; // [layer][expert]
    private readonly InterleavedWeights? _interleaved;

    public ResidentExperts(Checkpoint ck, bool interleave = false)
    {
        var c = ck.Config;
        if (interleave) _interleaved = new InterleavedWeights();
        _experts = new ExpertWeights[c.NumLayers][];
        for (int l = 0; l < c.NumLayers; l++)
        {
            _experts[l] = new ExpertWeights[c.NumExperts];
            for (int e = 0; e < c.NumExperts; e++)
                _experts[l][e] = new ExpertWeights(
                    Place(WeightMatrix.FromTensor(ck.GetExpert(TensorRole.ExpertGate, l, e))),
                    Place(WeightMatrix.FromTensor(ck.GetExpert(TensorRole.ExpertUp, l, e))),
                    Place(WeightMatrix.FromTensor(ck.GetExpert(TensorRole.ExpertDown, l, e))));
        }
    }

    /// <summary>Bytes of the interleaved copies (0 without them).</summary>
    public long InterleavedBytes => _interleaved?.Bytes ?? 0;

    private WeightMatrix Place(in WeightMatrix w) => _interleaved?.Add(w, releaseSource: true) ?? w;

    public void Run(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team)
    {
        if (x.Tokens != 1) throw new ArgumentException($"Run takes one token, got {x.Tokens}; use RunBatch", nameof(x));
        RunBatch(layer, ids, weights, x, y, scratch, team);
    }

    /// <summary>Groups the block's tokens by expert and runs each chosen expert once on all its tokens.</summary>
    public void RunBatch(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team)
    {
        int tokens = x.Tokens;
        ExpertGrouping.ExpertsPerToken(ids, weights, x, y);
        var row = _experts[layer];
        var grouping = scratch.Grouping;
        grouping.Build(ids, tokens);
        scratch.Gathered.LoadRows(x.Values(), x.Cols, grouping.SlotToken);
        const int StackExperts = 64;
        Span<ExpertWeights> chosen = grouping.Count > StackExperts ? new ExpertWeights[grouping.Count] : stackalloc ExpertWeights[StackExperts];
        for (int g = 0; g < grouping.Count; g++) chosen[g] = row[grouping.Experts[g]];
        SwiGlu.RunGrouped(chosen[..grouping.Count], grouping.Starts, scratch.Gathered, scratch, team);
        grouping.Combine(weights, scratch.Out, y, tokens);
    }
}
