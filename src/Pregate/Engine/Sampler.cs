// Token sampling from logits, in llama.cpp's default order: repetition penalty → top-k → top-p → min-p → temperature → draw.
// Temperature 0 is greedy (argmax, lowest id on ties).
using Pregate.Core;

namespace Pregate.Engine;

/// <summary>Sampling settings. Disabled values: TopK ≤ 0, TopP ≥ 1, MinP ≤ 0, RepetitionPenalty = 1.</summary>
public sealed record SamplingOptions
{
    public float Temperature { get; init; } = 0.8f;
    public int TopK { get; init; } = 40;
    public float TopP { get; init; } = 0.95f;
    public float MinP { get; init; } = 0.05f;
    public float RepetitionPenalty { get; init; } = 1.0f;
    /// <summary>How many of the most recent tokens the repetition penalty looks at.</summary>
    public int RepetitionWindow { get; init; } = 64;
    public ulong Seed { get; init; }

    public static SamplingOptions Greedy { get; } = new() { Temperature = 0 };

    /// <summary>Throws <see cref="ArgumentException"/> naming the first out-of-range setting.</summary>
    public void Validate()
    {
        if (!(Temperature >= 0) || float.IsInfinity(Temperature)) throw new ArgumentException($"temperature must be ≥ 0, not {Temperature}");
        if (!(TopP > 0 && TopP <= 1)) throw new ArgumentException($"top-p must be in (0, 1], not {TopP}");
        if (!(MinP >= 0 && MinP < 1)) throw new ArgumentException($"min-p must be in [0, 1), not {MinP}");
        if (!(RepetitionPenalty > 0) || float.IsInfinity(RepetitionPenalty)) throw new ArgumentException($"repetition penalty must be > 0, not {RepetitionPenalty}");
        if (RepetitionWindow < 0) throw new ArgumentException($"repetition window must be ≥ 0, not {RepetitionWindow}");
    }
}

/// <summary>Draws tokens from logits. Holds its scratch buffers and random stream; one per generation.</summary>
public sealed class Sampler
{
    private readonly SamplingOptions _o;
    private readonly float[] _logits;
    private readonly int[] _ids;
    private readonly HashSet<int> _recent = new();
    private SeededRandom _rng;

    public Sampler(SamplingOptions options, int vocabSize)
    {
        options.Validate();
        _o = options;
        _logits = new float[vocabSize];
        _ids = new int[vocabSize];
        _rng = new SeededRandom(options.Seed, "sampler");
    }

    /// <summary>Argmax with ties to the lowest id.</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    /// <summary>Picks the next token given <paramref name="logits"/> and the tokens so far (prompt and generated).</summary>
    public int Sample(ReadOnlySpan<float> logits, IReadOnlyList<int> history)
    {
        if (logits.Length != _logits.Length) throw new ArgumentException($"expected {_logits.Length} logits, got {logits.Length}");
        var l = _logits.AsSpan();
        logits.CopyTo(l);
        if (_o.RepetitionPenalty != 1f) ApplyRepetitionPenalty(l, history);
        if (_o.Temperature == 0) return ArgMax(l);

        // Candidates sorted by logit, descending, cut to top-k.
        int n = l.Length;
        for (int i = 0; i < n; i++) _ids[i] = i;
        int k = _o.TopK > 0 ? Math.Min(_o.TopK, n) : n;
        var ids = _ids.AsSpan();
        if (k < n) SelectTop(l, ids, k);
        var cand = ids[..k];
        SortDescending(_logits, cand);

        // Softmax over the candidates (at temperature 1) for top-p and min-p, as llama.cpp does.
        float max = l[cand[0]];
        Span<double> p = k <= 4096 ? stackalloc double[k] : new double[k];
        double sum = 0;
        for (int i = 0; i < k; i++) { p[i] = Math.Exp(l[cand[i]] - max); sum += p[i]; }
        int keep = k;
        if (_o.TopP < 1)
        {
            double acc = 0;
            for (int i = 0; i < k; i++)
            {
                acc += p[i] / sum;
                if (acc >= _o.TopP) { keep = i + 1; break; }
            }
        }
        if (_o.MinP > 0)
        {
            // p_i ≥ min_p · p_max  ⇔  exp(l_i - max) ≥ min_p
            int m = 1;
            while (m < keep && p[m] >= _o.MinP) m++;
            keep = m;
        }

        // Temperature on the kept candidates, then one draw.
        double total = 0;
        for (int i = 0; i < keep; i++) { p[i] = Math.Exp((l[cand[i]] - max) / _o.Temperature); total += p[i]; }
        double u = _rng.NextDouble() * total;
        for (int i = 0; i < keep; i++)
        {
            u -= p[i];
            if (u < 0) return cand[i];
        }
        return cand[keep - 1];
    }

    // CTRL-style penalty (llama.cpp, HF): positive logits are divided, negative ones multiplied.
    private void ApplyRepetitionPenalty(Span<float> l, IReadOnlyList<int> history)
    {
        _recent.Clear();
        for (int i = Math.Max(0, history.Count - _o.RepetitionWindow); i < history.Count; i++) _recent.Add(history[i]);
        foreach (int t in _recent)
        {
            if ((uint)t >= (uint)l.Length) continue;
            l[t] = l[t] > 0 ? l[t] / _o.RepetitionPenalty : l[t] * _o.RepetitionPenalty;
        }
    }

    // Moves the k largest (ties: lower id first) to the front of ids, in no particular order (quickselect).
    private static void SelectTop(ReadOnlySpan<float> l, Span<int> ids, int k)
    {
        int lo = 0, hi = ids.Length - 1;
        while (lo < hi)
        {
            int pivot = ids[(lo + hi) >>> 1];
            int i = lo, j = hi;
            while (i <= j)
            {
                while (Before(l, ids[i], pivot)) i++;
                while (Before(l, pivot, ids[j])) j--;
                if (i <= j) { (ids[i], ids[j]) = (ids[j], ids[i]); i++; j--; }
            }
            if (k - 1 <= j) hi = j;
            else if (k - 1 >= i) lo = i;
            else return;
        }
    }

    private static void SortDescending(float[] l, Span<int> ids)
    {
        var arr = l;
        ids.Sort((a, b) => Before(arr, a, b) ? -1 : Before(arr, b, a) ? 1 : 0);
    }

    private static bool Before(ReadOnlySpan<float> l, int a, int b) => l[a] > l[b] || (l[a] == l[b] && a < b);
}
