// Which prefetches are worth their read when the disk is the bottleneck: a guess goes to disk only when it is likely
// enough, when it evicts nothing used more often than it is likely right, and behind the demand loads, a few at a time.
using System.Globalization;

namespace Pregate.Experts;

/// <summary>
/// The gates a prefetch passes before the <see cref="ExpertLoader"/> reads it (<see cref="ExpertLoaderOptions.Prefetch"/>).
/// A guess carries a probability: the calibrated chance that its layer routes to it (<see cref="Prediction.GuessCalibration"/>).
/// <list type="bullet">
/// <item>Confidence: a guess below <see cref="MinProbability"/> is neither read nor reserved.</item>
/// <item>Cache value (<see cref="ProtectValuable"/>): a prefetch evicts only an expert whose expected use — the decayed share
/// of its layer's passes that used it, <c>u ← 0.9·u + 0.1·[used]</c> per pass — is at most the guess's probability; the
/// eviction policy chooses among those. With a full cache and no such expert the prefetch is skipped.</item>
/// <item>Behind demand (<see cref="MaxWrongReads"/> &gt; 0): a prefetch read starts only while no demand load is waiting,
/// after the layer being entered has asked for its experts, with an I/O thread left free for the next demand load, and
/// only while the wrong guesses expected among the prefetch reads in flight, <c>Σ (1 − probability)</c> with this one,
/// stay within <see cref="MaxWrongReads"/> (one read always may start): sure guesses read in parallel, and a demand load
/// shares the disk with at most about <see cref="MaxWrongReads"/> wrong ones. A queued prefetch whose layer has come
/// without it is dropped, and one being read stops at its next 4 MiB piece.</item>
/// </list>
/// <see cref="Off"/> lets every guess through as soon as an I/O thread is free. The gates change only which experts are
/// read and when, never the results.
/// </summary>
public sealed record PrefetchGating
{
    /// <summary>No gate: every guess is prefetched and read as soon as an I/O thread is free.</summary>
    public static PrefetchGating Off { get; } = new();

    /// <summary>The engine's default: the three gates, with the threshold and read limit chosen by measurement (BENCHMARKS.md).</summary>
    public static PrefetchGating Default { get; } = new() { MinProbability = 0.7, ProtectValuable = true, MaxWrongReads = 1 };

    /// <summary>The least calibrated probability a guess needs to be prefetched, in [0, 1]; 0 prefetches every guess.</summary>
    public double MinProbability { get; init; }

    /// <summary>Prefetches evict only experts expected to be used less often than the guess is likely right.</summary>
    public bool ProtectValuable { get; init; }

    /// <summary>
    /// The wrong guesses expected among the prefetch reads in flight at most (a guess right with probability q counts
    /// 1 − q), the reads started only behind the demand loads; 0: every prefetch read as soon as an I/O thread is free.
    /// </summary>
    public int MaxWrongReads { get; init; }

    /// <summary>True when no gate is on.</summary>
    public bool IsOff => MinProbability == 0 && !ProtectValuable && MaxWrongReads == 0;

    /// <exception cref="ArgumentOutOfRangeException">A probability outside [0, 1] or a negative read limit.</exception>
    public void Validate()
    {
        if (!(MinProbability >= 0 && MinProbability <= 1))
            throw new ArgumentOutOfRangeException(nameof(MinProbability), MinProbability, "the prefetch probability threshold must lie in [0, 1]");
        ArgumentOutOfRangeException.ThrowIfNegative(MaxWrongReads);
    }

    /// <summary>E.g. "p ≥ 0.7, cache value, behind demand ≤ 1 wrong read" or "off".</summary>
    public override string ToString()
    {
        if (IsOff) return "off";
        var parts = new List<string>();
        if (MinProbability > 0) parts.Add(string.Create(CultureInfo.InvariantCulture, $"p ≥ {MinProbability:0.###}"));
        if (ProtectValuable) parts.Add("cache value");
        if (MaxWrongReads > 0) parts.Add(string.Create(CultureInfo.InvariantCulture, $"behind demand ≤ {MaxWrongReads} wrong read{(MaxWrongReads == 1 ? "" : "s")}"));
        return string.Join(", ", parts);
    }
}
