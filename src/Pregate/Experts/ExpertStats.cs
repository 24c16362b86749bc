// Figures of the routed experts over a run: tokens, cache hits and misses, bytes read, stall and I/O busy time, prediction
// recall and precision, in total and per layer. Subtract two snapshots for the figures of one stretch (a prompt, a decode loop).
namespace Pregate.Experts;

/// <summary>
/// A snapshot of an expert runner's counters: <see cref="Tokens"/> run through the model, the loader's
/// <see cref="Cache"/> counters, and <see cref="Elapsed"/> wall time since the runner was created. All zero for resident
/// experts (nothing is cached or read). <see cref="Layers"/> holds the same figures per layer (empty when resident).
/// </summary>
/// <param name="PredictionChecks">Experts decoded tokens routed to in layers that had a one-layer-ahead prediction.</param>
/// <param name="PredictionHits">The part of <paramref name="PredictionChecks"/> that had been guessed.</param>
/// <param name="PredictionGuesses">Experts guessed for those layers (top k + extra per token).</param>
public readonly record struct ExpertStats(long Tokens, ExpertCacheStats Cache, TimeSpan Elapsed, long PredictionChecks = 0, long PredictionHits = 0,
    long PredictionGuesses = 0, IReadOnlyList<ExpertLayerStats>? Layers = null)
{
    /// <summary>Cache hits / (hits + misses); 0 when no expert was used.</summary>
    public double HitRate => Cache.HitRate;

    /// <summary>Experts that had to be loaded when a layer needed them.</summary>
    public long Misses => Cache.Misses;

    /// <summary>Bytes read from the model files (4096-aligned ranges).</summary>
    public long BytesRead => Cache.BytesRead;

    /// <summary><see cref="BytesRead"/> / <see cref="Tokens"/>; 0 without tokens.</summary>
    public double BytesPerToken => Tokens == 0 ? 0 : (double)Cache.BytesRead / Tokens;

    /// <summary>Milliseconds per token that compute waited for expert reads; 0 without tokens.</summary>
    public double StallMsPerToken => Tokens == 0 ? 0 : Cache.Stall.TotalMilliseconds / Tokens;

    /// <summary>Fraction of <see cref="Elapsed"/> with at least one expert read in flight; 0 for an empty stretch.</summary>
    public double IoBusyFraction => Elapsed <= TimeSpan.Zero ? 0 : Math.Min(1, Cache.IoBusy / Elapsed);

    /// <summary>
    /// Of the experts a decoded token's layers routed to, the fraction the predictor had guessed one layer earlier
    /// (its top k + extra); null when no prediction was checked (no predictor, or prefill only).
    /// </summary>
    public double? PredictionRecall => PredictionChecks == 0 ? null : (double)PredictionHits / PredictionChecks;

    /// <summary>
    /// Of the experts guessed one layer ahead for decoded tokens, the fraction the layer then routed to
    /// (<see cref="PredictionHits"/> / <see cref="PredictionGuesses"/>); null when nothing was guessed.
    /// </summary>
    public double? PredictionPrecision => PredictionGuesses == 0 ? null : (double)PredictionHits / PredictionGuesses;

    /// <summary>Share of settled prefetch reads that were used (see <see cref="ExpertCacheStats.PrefetchPrecision"/>).</summary>
    public double? PrefetchPrecision => Cache.PrefetchPrecision;

    /// <summary>Missed experts computed in place from the memory map instead of loaded (<c>--on-miss compute|auto</c>); not cache hits or misses.</summary>
    public long ComputedInPlace { get; init; }

    /// <summary>Bytes of the experts counted in <see cref="ComputedInPlace"/> (read through the memory map, not by the loader).</summary>
    public long ComputedInPlaceBytes { get; init; }

    /// <summary>Missed experts computed from their low-precision copies (<c>--on-miss low-precision</c>); not cache hits or misses.</summary>
    public long ComputedLowPrecision { get; init; }

    /// <summary>Bytes of the low-precision copies counted in <see cref="ComputedLowPrecision"/> (read through the memory map).</summary>
    public long ComputedLowPrecisionBytes { get; init; }

    /// <summary>Routed-expert uses: cache hits and misses, experts computed in place and from low-precision copies.</summary>
    public long ExpertUses => Cache.Hits + Cache.Misses + ComputedInPlace + ComputedLowPrecision;

    /// <summary><see cref="ComputedLowPrecision"/> / <see cref="ExpertUses"/>; 0 when no expert was used.</summary>
    public double LowPrecisionShare => ExpertUses == 0 ? 0 : (double)ComputedLowPrecision / ExpertUses;

    /// <summary>
    /// Expert bytes per token from every source: (<see cref="BytesRead"/> + <see cref="ComputedInPlaceBytes"/> +
    /// <see cref="ComputedLowPrecisionBytes"/>) / <see cref="Tokens"/>, 0 without tokens. The bytes computed through the
    /// memory map count as read (an upper bound: pages already in the page cache cost no disk read).
    /// </summary>
    public double ExpertBytesPerToken => Tokens == 0 ? 0 : (double)(Cache.BytesRead + ComputedInPlaceBytes + ComputedLowPrecisionBytes) / Tokens;

    /// <summary>Counter-wise difference: the figures between snapshot <paramref name="b"/> and the later <paramref name="a"/>.</summary>
    public static ExpertStats operator -(ExpertStats a, ExpertStats b)
    {
        IReadOnlyList<ExpertLayerStats>? layers = a.Layers;
        if (a.Layers is { } la && b.Layers is { } lb && la.Count == lb.Count)
            layers = la.Select((l, i) => l - lb[i]).ToArray();
        return new(a.Tokens - b.Tokens, a.Cache - b.Cache, a.Elapsed - b.Elapsed, a.PredictionChecks - b.PredictionChecks,
            a.PredictionHits - b.PredictionHits, a.PredictionGuesses - b.PredictionGuesses, layers)
        {
            ComputedInPlace = a.ComputedInPlace - b.ComputedInPlace, ComputedInPlaceBytes = a.ComputedInPlaceBytes - b.ComputedInPlaceBytes,
            ComputedLowPrecision = a.ComputedLowPrecision - b.ComputedLowPrecision,
            ComputedLowPrecisionBytes = a.ComputedLowPrecisionBytes - b.ComputedLowPrecisionBytes,
        };
    }
}

/// <summary>
/// The figures of one layer's experts: cache counters (no evictions or I/O busy time, which belong to the whole cache) and
/// the one-layer-ahead predictions checked at this layer.
/// </summary>
public readonly record struct ExpertLayerStats(int Layer, ExpertCacheStats Cache, long PredictionChecks, long PredictionHits, long PredictionGuesses)
{
    /// <summary>Hits / uses of this layer's experts; 0 when none was used.</summary>
    public double HitRate => Cache.HitRate;

    /// <summary>PredictionHits / PredictionChecks; null when nothing was checked here.</summary>
    public double? PredictionRecall => PredictionChecks == 0 ? null : (double)PredictionHits / PredictionChecks;

    /// <summary>PredictionHits / PredictionGuesses; null when nothing was guessed for this layer.</summary>
    public double? PredictionPrecision => PredictionGuesses == 0 ? null : (double)PredictionHits / PredictionGuesses;

    /// <summary>Counter-wise difference of two snapshots of the same layer.</summary>
    public static ExpertLayerStats operator -(ExpertLayerStats a, ExpertLayerStats b) =>
        new(a.Layer, a.Cache - b.Cache, a.PredictionChecks - b.PredictionChecks, a.PredictionHits - b.PredictionHits, a.PredictionGuesses - b.PredictionGuesses);
}
