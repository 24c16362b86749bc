// The throughput protocol behind `pregate bench`, shared with the llama.cpp peer so both engines run the same loop: a
// seeded random prompt timed as one prefill, then decode steps fed from a fixed seeded token stream (teacher forcing:
// greedy decoding of a random-weight model repeats one token, so its routing and any cache would look perfect) or greedy.
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Pregate.Core;
using Pregate.Kernels;
using Pregate.Experts.Prediction;

namespace Pregate.Engine;

/// <summary>Where the decode phase takes its next token from.</summary>
public enum BenchmarkDecode
{
    /// <summary>A fixed seeded random token stream (the default).</summary>
    Forced,

    /// <summary>The argmax of the previous step's logits.</summary>
    Greedy,
}

/// <summary>What one benchmark pass runs. Validate before use.</summary>
public sealed record BenchmarkSettings
{
    /// <summary>Prompt tokens, run as one prefill.</summary>
    public int PromptTokens { get; init; } = 128;

    /// <summary>Decode steps after the prompt; each computes the logits of one new token.</summary>
    public int GenTokens { get; init; } = 64;

    public BenchmarkDecode Decode { get; init; } = BenchmarkDecode.Forced;

    /// <summary>Seed of the prompt and of the forced decode stream.</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>Untimed passes run first (at least one) continue until this much time has gone by (JIT tiering settles).</summary>
    public TimeSpan WarmupTime { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (PromptTokens < 1) throw new ArgumentException($"prompt tokens must be at least 1, not {PromptTokens}");
        if (GenTokens < 1) throw new ArgumentException($"generated tokens must be at least 1, not {GenTokens}");
        if (Text is { } t && t.Count < PromptTokens + GenTokens)
            throw new ArgumentException($"the text gives {t.Count} tokens; the benchmark needs {PromptTokens + GenTokens} (prompt + generated)");
        if (WarmupTime < TimeSpan.Zero) throw new ArgumentException("warm-up time must not be negative");
    }

    /// <summary>Tokens the KV cache must hold: the prompt plus every decoded token.</summary>
    public int ContextNeeded => PromptTokens + GenTokens;

    /// <summary>
    /// Real text (token ids) to feed instead of random ids: the prompt is its first <see cref="PromptTokens"/> ids and the
    /// forced decode stream the next <see cref="GenTokens"/>. Null: seeded random ids.
    /// </summary>
    public IReadOnlyList<int>? Text { get; init; }

    /// <summary>The prompt: the text's first ids, or <see cref="PromptTokens"/> ids uniform in [0, vocab) from (Seed, "bench-prompt").</summary>
    public int[] PromptIds(int vocabSize) => Text is { } t ? t.Take(PromptTokens).ToArray() : Stream(PromptTokens, vocabSize, "bench-prompt");

    /// <summary>The forced decode stream: the text's next ids, or <see cref="GenTokens"/> ids uniform in [0, vocab) from (Seed, "bench-decode").</summary>
    public int[] ForcedIds(int vocabSize) => Text is { } t ? t.Skip(PromptTokens).Take(GenTokens).ToArray() : Stream(GenTokens, vocabSize, "bench-decode");

    private int[] Stream(int count, int vocabSize, string name)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 1);
        var rng = new SeededRandom(Seed, name);
        var ids = new int[count];
        for (int i = 0; i < count; i++) ids[i] = (int)(rng.NextULong() % (ulong)vocabSize);
        return ids;
    }
}

/// <summary>An engine under test: a fresh sequence, a batched prefill and single-token decode steps.</summary>
public interface IBenchmarkTarget
{
    int VocabSize { get; }

    /// <summary>Forgets the sequence (empties the KV cache).</summary>
    void Reset();

    /// <summary>Runs <paramref name="tokens"/> from the current position; writes the last position's logits [V].</summary>
    void Prefill(ReadOnlySpan<int> tokens, Span<float> lastLogits);

    /// <summary>Runs one token at the next position; writes its logits [V].</summary>
    void Decode(int token, Span<float> logits);
}

/// <summary>Timing of one measured pass.</summary>
public sealed record BenchmarkTiming(int PromptTokens, int GenTokens, TimeSpan Prefill, TimeSpan Decode)
{
    public double PrefillTokensPerSecond => PromptTokens / Math.Max(Prefill.TotalSeconds, 1e-9);
    public double DecodeTokensPerSecond => GenTokens / Math.Max(Decode.TotalSeconds, 1e-9);
}

public static class Benchmark
{
    /// <summary>
    /// Warm-up passes (untimed, for at least <see cref="BenchmarkSettings.WarmupTime"/>), then one measured pass: reset,
    /// prefill of the prompt (timed), then <see cref="BenchmarkSettings.GenTokens"/> decode steps (timed together).
    /// Returns the measured pass's timing and the tokens fed to the decode steps.
    /// </summary>
    public static (BenchmarkTiming Timing, int[] DecodedTokens) Run(IBenchmarkTarget target, BenchmarkSettings settings)
    {
        settings.Validate();
        var prompt = settings.PromptIds(target.VocabSize);
        var forced = settings.ForcedIds(target.VocabSize);
        var logits = new float[target.VocabSize];
        var fed = new int[settings.GenTokens];
        var warmup = Stopwatch.StartNew();
        do Pass(target, settings, prompt, forced, logits, fed);
        while (warmup.Elapsed < settings.WarmupTime);
        return (Pass(target, settings, prompt, forced, logits, fed), fed);
    }

    /// <summary>
    /// Runs one untimed pass (reset, prefill, decode) of <paramref name="settings"/> on <paramref name="session"/> with a
    /// <see cref="RoutingRecorder"/> attached and returns the routing of its tokens: what the oracle predictor replays in
    /// a later run of the same settings (the experts must be resident or the logits identical to resident, so that a
    /// greedy stream is the same).
    /// </summary>
    public static RoutingTrace RecordRouting(ModelSession session, BenchmarkSettings settings)
    {
        ArgumentNullException.ThrowIfNull(session);
        settings.Validate();
        var target = new SessionBenchmarkTarget(session);
        var recorder = new RoutingRecorder(session.Config.NumLayers, session.Config.NumExpertsUsed);
        var previous = session.Model.Observer;
        session.Model.Observer = recorder;
        try
        {
            Pass(target, settings, settings.PromptIds(target.VocabSize), settings.ForcedIds(target.VocabSize), new float[target.VocabSize], new int[settings.GenTokens]);
        }
        finally
        {
            session.Model.Observer = previous;
        }
        return recorder.Trace;
    }

    /// <summary>
    /// The read bandwidth a decode step can at best reach, in bytes per second: <paramref name="team"/>'s threads sum a
    /// buffer of <paramref name="bytes"/> (far beyond the last-level cache) with vector loads, split in chunks as a mat-vec
    /// splits rows; the best of <paramref name="passes"/> timed passes after one untimed pass. Throws
    /// <see cref="ArgumentOutOfRangeException"/> when bytes is under 1 MiB or passes under 1.
    /// </summary>
    public static unsafe double MeasureReadBandwidth(WorkerTeam team, long bytes = 256L << 20, int passes = 5)
    {
        ArgumentNullException.ThrowIfNull(team);
        ArgumentOutOfRangeException.ThrowIfLessThan(bytes, 1L << 20);
        ArgumentOutOfRangeException.ThrowIfLessThan(passes, 1);
        const int ChunkBytes = 64 * 1024;
        int chunks = checked((int)(bytes / ChunkBytes));
        byte* buffer = (byte*)NativeMemory.AlignedAlloc((nuint)chunks * ChunkBytes, 64);
        try
        {
            // Written first so every page is backed by memory (untouched pages would read as the shared zero page).
            new Span<byte>(buffer, chunks * ChunkBytes).Fill(1);
            var job = new ReadJob { Buffer = buffer, ChunkBytes = ChunkBytes };
            double best = 0;
            for (int pass = 0; pass <= passes; pass++)
            {
                long start = Stopwatch.GetTimestamp();
                team.Run(ref job, chunks, 1, 16);
                double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
                if (pass > 0) best = Math.Max(best, (double)chunks * ChunkBytes / Math.Max(seconds, 1e-9));
            }
            return best;
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    private unsafe struct ReadJob : IRowJob
    {
        public byte* Buffer;
        public int ChunkBytes;
        public float Sink;

        public void Execute(int start, int end)
        {
            var s0 = Vector256<float>.Zero;
            var s1 = Vector256<float>.Zero;
            var s2 = Vector256<float>.Zero;
            var s3 = Vector256<float>.Zero;
            float* p = (float*)(Buffer + (long)start * ChunkBytes);
            float* stop = (float*)(Buffer + (long)end * ChunkBytes);
            for (; p < stop; p += 32)
            {
                s0 += Vector256.Load(p);
                s1 += Vector256.Load(p + 8);
                s2 += Vector256.Load(p + 16);
                s3 += Vector256.Load(p + 24);
            }
            Volatile.Write(ref Sink, Vector256.Sum((s0 + s1) + (s2 + s3)));   // an observable result keeps the loads
        }
    }

    private static BenchmarkTiming Pass(IBenchmarkTarget target, BenchmarkSettings settings, int[] prompt, int[] forced, float[] logits, int[] fed)
    {
        target.Reset();
        var clock = Stopwatch.StartNew();
        target.Prefill(prompt, logits);
        var prefill = clock.Elapsed;
        clock.Restart();
        for (int i = 0; i < settings.GenTokens; i++)
        {
            int next = settings.Decode == BenchmarkDecode.Forced ? forced[i] : Sampler.ArgMax(logits);
            fed[i] = next;
            target.Decode(next, logits);
        }
        return new BenchmarkTiming(prompt.Length, settings.GenTokens, prefill, clock.Elapsed);
    }
}

/// <summary>A <see cref="ModelSession"/> under the benchmark: its state, team and expert runner as configured.</summary>
public sealed class SessionBenchmarkTarget(ModelSession session) : IBenchmarkTarget
{
    public int VocabSize => session.Config.VocabSize;

    public void Reset() => session.State.Reset();

    public void Prefill(ReadOnlySpan<int> tokens, Span<float> lastLogits) =>
        session.Model.Forward(session.State, tokens, lastLogits, allPositions: false, session.Team);

    public void Decode(int token, Span<float> logits) => session.Model.Forward(session.State, token, logits, session.Team);
}
