// `pregate bench --io`: the expert read rates of a model file, part by part (the layout the file has) against one read
// per expert (what an expert-major layout would give), several reads in flight as the loader issues them.
using System.Globalization;
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Formats;

namespace Pregate.Cli.Commands;

internal static class BenchIo
{
    /// <summary>Random experts per round and mode: at most this many, at most half the model's experts.</summary>
    private const int ExpertsPerRound = 64;

    /// <summary>Prints one line per round and a summary (min–median–max of each rate and of the speedup).</summary>
    /// <exception cref="UserException">The model cannot be opened.</exception>
    public static void Run(string modelPath, int rounds, ulong seed, TextWriter stdout, TextWriter stderr)
    {
        ExpertLayout layout;
        try
        {
            using var ck = Checkpoint.Open(modelPath);
            layout = OffloadedExperts.LayoutOf(ck);
        }
        catch (ModelFormatException e) { throw new UserException(e.Message); }
        int experts = Math.Min(ExpertsPerRound, layout.LayerCount * layout.ExpertCount / 2);
        int inFlight = new ExpertLoaderOptions().IoThreads;
        stderr.WriteLine(Invariant($"reading {experts} random experts per mode and round ({ByteSize.Format(layout.SlotBytes)} each at most), {inFlight} in flight, O_DIRECT where allowed"));
        var results = ExpertReadBenchmark.Run(layout, experts, inFlight, rounds, seed);
        for (int r = 0; r < results.Count; r++)
            stdout.WriteLine(Invariant($"round {r + 1}/{results.Count}: part reads {results[r].PartReadsBytesPerSecond / 1e9:0.000} GB/s, one read per expert {results[r].OneReadBytesPerSecond / 1e9:0.000} GB/s, speedup {results[r].Speedup:0.000}"));
        stdout.WriteLine($"part reads (current layout): {Range(results.Select(x => x.PartReadsBytesPerSecond / 1e9))} GB/s; " +
                         $"one read per expert (expert-major): {Range(results.Select(x => x.OneReadBytesPerSecond / 1e9))} GB/s; " +
                         $"speedup {Range(results.Select(x => x.Speedup))} (min–median–max)");
    }

    private static string Range(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return Invariant($"{v[0]:0.000}–{v[v.Length / 2]:0.000}–{v[^1]:0.000}");
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
