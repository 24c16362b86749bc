// The per-layer table of expert figures that `run --stats`, `logits --stats` and `bench` print: uses, hit rate, bytes
// read, stall, prefetches used, wasted and skipped by the gates, prediction recall and precision, each layer and the total.
using System.Globalization;
using Pregate.Engine;
using Pregate.Experts;

namespace Pregate.Cli;

internal static class ExpertStatsTable
{
    /// <summary>
    /// Writes one row per layer and a total row for <paramref name="s"/> (a stretch); nothing when the experts are resident.
    /// "skipped u/v/b": prefetches the gates turned down as unlikely, as evicting a more valuable expert, and for a busy disk.
    /// </summary>
    public static void Write(TextWriter o, ExpertPlacement placement, ExpertStats s)
    {
        if (!placement.Offloaded || s.Layers is not { Count: > 0 } layers) return;
        o.WriteLine("layer   uses  hit rate  misses   read/token  stall ms/tok  prefetched  used  wasted  wasted bytes  skipped u/v/b  recall  precision");
        foreach (var l in layers)
            o.WriteLine(Row(l.Layer.ToString(CultureInfo.InvariantCulture), l.Cache, s.Tokens, l.PredictionRecall, l.PredictionPrecision));
        o.WriteLine(Row("total", s.Cache, s.Tokens, s.PredictionRecall, s.PredictionPrecision));
    }

    private static string Row(string name, ExpertCacheStats c, long tokens, double? recall, double? precision)
    {
        long uses = c.Hits + c.Misses;
        double perToken = tokens == 0 ? 0 : (double)c.BytesRead / tokens;
        double stall = tokens == 0 ? 0 : c.Stall.TotalMilliseconds / tokens;
        return string.Create(CultureInfo.InvariantCulture,
            $"{name,-5} {uses,6} {c.HitRate * 100,8:0.0}% {c.Misses,7} {ByteSize.Format((long)perToken),12} {stall,13:0.000} {c.PrefetchLoads,11} {c.PrefetchHits,5} " +
            $"{c.PrefetchesWasted,7} {ByteSize.Format(c.PrefetchBytesWasted),13} {$"{c.PrefetchesSkippedUnlikely}/{c.PrefetchesSkippedValuable}/{c.PrefetchesSkippedBusy}",14} " +
            $"{Percent(recall),7} {Percent(precision),10}");
    }

    private static string Percent(double? v) => v is double d ? (d * 100).ToString("0.0", CultureInfo.InvariantCulture) + "%" : "-";
}
