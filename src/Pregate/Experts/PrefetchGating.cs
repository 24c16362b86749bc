// Which prefetches are worth their read when the disk is the bottleneck: a guess goes to disk only when it is likely
// enough, when it evicts nothing used more often than it is likely right, and while no demand load needs the disk.
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
/// <item>Disk idle (<see cref="IdleReads"/> &gt; 0): a prefetch read starts only while no demand load is queued or being
/// read, after the layer being entered has asked for its experts, and at most <see cref="IdleReads"/> prefetch reads run
/// at once, so a demand load waits behind at most that many reads. A queued prefetch whose layer has come is dropped.</item>
/// </list>
/// <see cref="Off"/> lets every guess through as soon as an I/O thread is free. The gates change only which experts are
/// read and when, never the results.
/// </summary>
public sealed record PrefetchGating
{
    /// <summary>No gate: every guess is prefetched and read as soon as an I/O thread is free.</summary>
    public static PrefetchGating Off { get; } = new();

    /// <summary>The engine's default: the three gates, with the threshold and read limit chosen by measurement (BENCHMARKS.md).</summary>
    public static PrefetchGating Default { get; } = new() { MinProbability = 0.5, ProtectValuable = true, IdleReads = 1 };

    /// <summary>The least calibrated probability a guess needs to be prefetched, in [0, 1]; 0 prefetches every guess.</summary>
    public double MinProbability { get; init; }

    /// <summary>Prefetches evict only experts expected to be used less often than the guess is likely right.</summary>
    public bool ProtectValuable { get; init; }

    /// <summary>Prefetch reads at once while the disk has no demand load (at least 1); 0: prefetches read alongside demand loads.</summary>
    public int IdleReads { get; init; }

    /// <summary>True when no gate is on.</summary>
    public bool IsOff => MinProbability == 0 && !ProtectValuable && IdleReads == 0;

    /// <exception cref="ArgumentOutOfRangeException">A probability outside [0, 1] or a negative read limit.</exception>
    public void Validate()
    {
        if (!(MinProbability >= 0 && MinProbability <= 1))
            throw new ArgumentOutOfRangeException(nameof(MinProbability), MinProbability, "the prefetch probability threshold must lie in [0, 1]");
        ArgumentOutOfRangeException.ThrowIfNegative(IdleReads);
    }

    /// <summary>E.g. "p ≥ 0.5, cache value, 1 idle read" or "off".</summary>
    public override string ToString()
    {
        if (IsOff) return "off";
        var parts = new List<string>();
        if (MinProbability > 0) parts.Add(string.Create(CultureInfo.InvariantCulture, $"p ≥ {MinProbability:0.###}"));
        if (ProtectValuable) parts.Add("cache value");
        if (IdleReads > 0) parts.Add(string.Create(CultureInfo.InvariantCulture, $"{IdleReads} idle read{(IdleReads == 1 ? "" : "s")}"));
        return string.Join(", ", parts);
    }
}
