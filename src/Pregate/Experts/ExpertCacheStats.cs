// Counters of the expert cache and loader; subtract two snapshots for per-token figures.
namespace Pregate.Experts;

/// <summary>
/// A snapshot of expert cache/loader counters.
/// <list type="bullet">
/// <item><see cref="Hits"/>: acquires that found the expert resident and read; <see cref="Misses"/>: acquires that did not
/// (the expert was in flight or had to be loaded). <c>Hits + Misses</c> = successful acquires.</item>
/// <item><see cref="Loads"/>: expert reads completed (demand and prefetch); <see cref="BytesRead"/>: bytes transferred from
/// the files (4096-aligned ranges); <see cref="Evictions"/>: resident experts replaced.</item>
/// <item><see cref="PrefetchLoads"/>: reads issued by a prefetch; <see cref="PrefetchHits"/>: prefetch-issued experts that
/// were then acquired (ready or still in flight); <see cref="PrefetchesWasted"/>: prefetches evicted before use or
/// cancelled before their read started; <see cref="PrefetchesCancelled"/>: the cancelled part of those (no I/O spent).</item>
/// <item><see cref="Stall"/>: total time acquires waited for reads or free slots; <see cref="IoBusy"/>: total time at least
/// one read was in flight (divide by the wall time of the same stretch for the I/O busy fraction).</item>
/// <item><see cref="PrefetchBytesWasted"/>: bytes read by prefetches that were evicted before any use.</item>
/// <item>Prefetches the gates of <see cref="PrefetchGating"/> turned down, none read nor counted as wasted:
/// <see cref="PrefetchesSkippedUnlikely"/> (the guess's probability was below the threshold; the expert was neither
/// resident nor loading), <see cref="PrefetchesSkippedValuable"/> (every expert the prefetch could evict was expected to be
/// used more often than the guess was likely right) and <see cref="PrefetchesSkippedBusy"/> (demand loads and earlier
/// prefetches kept the disk until the prefetch's layer came without it).</item>
/// </list>
/// </summary>
public readonly record struct ExpertCacheStats(
    long Hits,
    long Misses,
    long Loads,
    long BytesRead,
    long Evictions,
    long PrefetchLoads,
    long PrefetchHits,
    long PrefetchesWasted,
    long PrefetchesCancelled,
    TimeSpan Stall,
    TimeSpan IoBusy = default,
    long PrefetchBytesWasted = 0,
    long PrefetchesSkippedUnlikely = 0,
    long PrefetchesSkippedValuable = 0,
    long PrefetchesSkippedBusy = 0)
{
    /// <summary>Hits / (hits + misses); 0 when nothing was acquired.</summary>
    public double HitRate => Hits + Misses == 0 ? 0 : (double)Hits / (Hits + Misses);

    /// <summary>
    /// Of the prefetch reads that were settled — used (<see cref="PrefetchHits"/>) or evicted unused (wasted minus cancelled) —
    /// the share used: PrefetchHits / (PrefetchHits + PrefetchesWasted − PrefetchesCancelled); null when none was settled.
    /// </summary>
    public double? PrefetchPrecision
    {
        get
        {
            long settled = PrefetchHits + PrefetchesWasted - PrefetchesCancelled;
            return settled <= 0 ? null : (double)PrefetchHits / settled;
        }
    }

    /// <summary>Prefetches the gates turned down, for every reason.</summary>
    public long PrefetchesSkipped => PrefetchesSkippedUnlikely + PrefetchesSkippedValuable + PrefetchesSkippedBusy;

    /// <summary>Counter-wise sum (e.g. the layers' figures added up).</summary>
    public static ExpertCacheStats operator +(ExpertCacheStats a, ExpertCacheStats b) => new(
        a.Hits + b.Hits, a.Misses + b.Misses, a.Loads + b.Loads, a.BytesRead + b.BytesRead, a.Evictions + b.Evictions,
        a.PrefetchLoads + b.PrefetchLoads, a.PrefetchHits + b.PrefetchHits, a.PrefetchesWasted + b.PrefetchesWasted,
        a.PrefetchesCancelled + b.PrefetchesCancelled, a.Stall + b.Stall, a.IoBusy + b.IoBusy, a.PrefetchBytesWasted + b.PrefetchBytesWasted,
        a.PrefetchesSkippedUnlikely + b.PrefetchesSkippedUnlikely, a.PrefetchesSkippedValuable + b.PrefetchesSkippedValuable,
        a.PrefetchesSkippedBusy + b.PrefetchesSkippedBusy);

    /// <summary>Counter-wise difference (e.g. the figures of one decode step).</summary>
    public static ExpertCacheStats operator -(ExpertCacheStats a, ExpertCacheStats b) => new(
        a.Hits - b.Hits, a.Misses - b.Misses, a.Loads - b.Loads, a.BytesRead - b.BytesRead, a.Evictions - b.Evictions,
        a.PrefetchLoads - b.PrefetchLoads, a.PrefetchHits - b.PrefetchHits, a.PrefetchesWasted - b.PrefetchesWasted,
        a.PrefetchesCancelled - b.PrefetchesCancelled, a.Stall - b.Stall, a.IoBusy - b.IoBusy, a.PrefetchBytesWasted - b.PrefetchBytesWasted,
        a.PrefetchesSkippedUnlikely - b.PrefetchesSkippedUnlikely, a.PrefetchesSkippedValuable - b.PrefetchesSkippedValuable,
        a.PrefetchesSkippedBusy - b.PrefetchesSkippedBusy);
}
