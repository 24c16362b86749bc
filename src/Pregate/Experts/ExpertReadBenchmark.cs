// Measures whether an expert-major file layout would load experts faster: random experts read as the loader reads them
// (one aligned read per part: three for GGUF's stacked gate/up/down tensors) against one contiguous read of the same size
// per expert (what storing each expert's matrices together would give), with several reads in flight, O_DIRECT.
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Pregate.Experts;

/// <summary>One round: bytes per second with each expert's parts read separately, and with one read per expert.</summary>
public readonly record struct ExpertReadRound(int Experts, long Bytes, double PartReadsBytesPerSecond, double OneReadBytesPerSecond)
{
    /// <summary>One read per expert / part reads: above 1 when an expert-major layout would load faster.</summary>
    public double Speedup => OneReadBytesPerSecond / PartReadsBytesPerSecond;
}

public static unsafe class ExpertReadBenchmark
{
    /// <summary>
    /// Runs <paramref name="rounds"/> rounds. Each draws 2 · <paramref name="expertsPerRound"/> distinct random experts
    /// (seeded) and reads half of them part by part (the loader's reads) and the other half with one read each of the same
    /// aligned size starting at the expert's first part, <paramref name="inFlight"/> experts at a time (like the loader's
    /// I/O threads). Which half goes first alternates between rounds. Disjoint experts keep the device's caches from
    /// favouring the second half; drop the page cache before a run for cold figures (O_DIRECT bypasses it anyway).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Non-positive counts, or more experts than the layout holds.</exception>
    /// <exception cref="IOException">A read failed; the message names the file.</exception>
    public static IReadOnlyList<ExpertReadRound> Run(ExpertLayout layout, int expertsPerRound, int inFlight, int rounds, ulong seed, bool allowDirect = true)
    {
        ArgumentNullException.ThrowIfNull(layout);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(expertsPerRound);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(inFlight);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rounds);
        int total = checked(layout.LayerCount * layout.ExpertCount);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(2 * expertsPerRound, total, nameof(expertsPerRound));
        var readers = layout.Files.ToDictionary(f => f, f => new DirectFileReader(f, allowDirect), StringComparer.Ordinal);
        var buffers = new nint[inFlight];
        try
        {
            for (int i = 0; i < inFlight; i++) buffers[i] = (nint)NativeMemory.AlignedAlloc((nuint)DirectFileReader.AlignUp(layout.SlotBytes), DirectFileReader.Alignment);
            var rng = new Random(unchecked((int)seed ^ (int)(seed >> 32)));
            var results = new List<ExpertReadRound>();
            for (int r = 0; r < rounds; r++)
            {
                var keys = Enumerable.Range(0, total).OrderBy(_ => rng.Next()).Take(2 * expertsPerRound)
                    .Select(i => new ExpertKey(i / layout.ExpertCount, i % layout.ExpertCount)).ToArray();
                var (partKeys, oneKeys) = r % 2 == 0 ? (keys[..expertsPerRound], keys[expertsPerRound..]) : (keys[expertsPerRound..], keys[..expertsPerRound]);
                double partRate = 0, oneRate = 0;
                long bytes = 0;
                foreach (bool oneRead in r % 2 == 0 ? new[] { false, true } : [true, false])
                {
                    var (b, seconds) = ReadAll(layout, readers, buffers, oneRead ? oneKeys : partKeys, oneRead);
                    if (oneRead) oneRate = b / seconds;
                    else (partRate, bytes) = (b / seconds, b);
                }
                results.Add(new ExpertReadRound(expertsPerRound, bytes, partRate, oneRate));
            }
            return results;
        }
        finally
        {
            foreach (nint b in buffers) if (b != 0) NativeMemory.AlignedFree((void*)b);
            foreach (DirectFileReader reader in readers.Values) reader.Dispose();
        }
    }

    // Reads the experts with buffers.Length threads; returns the bytes moved and the wall time.
    private static (long Bytes, double Seconds) ReadAll(ExpertLayout layout, Dictionary<string, DirectFileReader> readers, nint[] buffers, ExpertKey[] keys, bool oneRead)
    {
        int next = -1;
        long bytes = 0;
        long capacity = DirectFileReader.AlignUp(layout.SlotBytes);
        Exception? failure = null;
        long start = Stopwatch.GetTimestamp();
        var threads = buffers.Select(buffer => new Thread(() =>
        {
            byte* slot = (byte*)buffer;
            for (int i = Interlocked.Increment(ref next); i < keys.Length && Volatile.Read(ref failure) is null; i = Interlocked.Increment(ref next))
            {
                try
                {
                    ExpertReadPlan plan = layout.Plan(keys[i]);
                    long moved = 0;
                    if (oneRead)
                    {
                        long size = plan.Regions.Sum(x => x.AlignedLength);
                        DirectFileReader reader = readers[plan.Regions[0].Path];
                        long offset = Math.Min(plan.Regions[0].FileOffset, DirectFileReader.AlignDown(reader.Length - size));
                        moved = reader.ReadCovering(Math.Max(0, offset), size, slot, capacity);
                    }
                    else
                    {
                        foreach (ExpertReadPlan.Region region in plan.Regions)
                            moved += readers[region.Path].ReadCovering(region.DataStart, region.DataEnd - region.DataStart, slot + region.SlotOffset, capacity - region.SlotOffset);
                    }
                    Interlocked.Add(ref bytes, moved);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    Interlocked.CompareExchange(ref failure, e, null);
                }
            }
        }) { IsBackground = true, Name = "pregate-read-bench" }).ToList();
        foreach (Thread t in threads) t.Start();
        foreach (Thread t in threads) t.Join();
        if (failure is not null) throw failure;
        return (bytes, Stopwatch.GetElapsedTime(start).TotalSeconds);
    }
}
