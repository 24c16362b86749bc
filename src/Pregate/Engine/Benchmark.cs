// The throughput protocol behind `pregate bench`, shared with the llama.cpp peer so both engines run the same loop: a
// seeded random prompt timed as one prefill, then decode steps fed from a fixed seeded token stream (teacher forcing:
// greedy decoding of a random-weight model repeats one token, so its routing and any cache would look perfect) or greedy.
// With a batch of N, N sequences each get their own prompt and stream: the prompts are prefilled one after the other (as
// the server does) and every decode step runs the N sequences together (one MoeModel.ForwardStep).
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using Pregate.Core;
using Pregate.Experts;
using Pregate.Kernels;
using Pregate.Models;
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

    /// <summary>
    /// Sequences decoding together: each has its own prompt of <see cref="PromptTokens"/> and decodes <see cref="GenTokens"/>
    /// tokens, every step over all of them at once. Sequence 0 is the one a batch of 1 runs.
    /// </summary>
    public int Batch { get; init; } = 1;

    /// <summary>Untimed passes run first (at least one) continue until this much time has gone by (JIT tiering settles).</summary>
    public TimeSpan WarmupTime { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        if (PromptTokens < 1) throw new ArgumentException($"prompt tokens must be at least 1, not {PromptTokens}");
        if (GenTokens < 1) throw new ArgumentException($"generated tokens must be at least 1, not {GenTokens}");
        if (Batch < 1) throw new ArgumentException($"the batch must hold at least 1 sequence, not {Batch}");
        if (Text is { } t && t.Count < (long)Batch * (PromptTokens + GenTokens))
            throw new ArgumentException(Batch == 1
                ? $"the text gives {t.Count} tokens; the benchmark needs {PromptTokens + GenTokens} (prompt + generated)"
                : $"the text gives {t.Count} tokens; the benchmark needs {(long)Batch * (PromptTokens + GenTokens)} ({Batch} sequences × (prompt + generated))");
        if (WarmupTime < TimeSpan.Zero) throw new ArgumentException("warm-up time must not be negative");
    }

    /// <summary>Tokens the KV cache of each sequence must hold: the prompt plus every decoded token.</summary>
    public int ContextNeeded => PromptTokens + GenTokens;

    /// <summary>
    /// Real text (token ids) to feed instead of random ids: the prompt is its first <see cref="PromptTokens"/> ids and the
    /// forced decode stream the next <see cref="GenTokens"/> (sequence b of a batch: the b-th such window). Null: seeded random ids.
    /// </summary>
    public IReadOnlyList<int>? Text { get; init; }

    /// <summary>
    /// The prompt of <paramref name="sequence"/>: the text's ids, or <see cref="PromptTokens"/> ids uniform in [0, vocab) from
    /// (Seed, "bench-prompt"), with the sequence number appended to the name after sequence 0.
    /// </summary>
    public int[] PromptIds(int vocabSize, int sequence = 0) =>
        Text is { } t ? t.Skip(TextStart(sequence)).Take(PromptTokens).ToArray() : Stream(PromptTokens, vocabSize, StreamName("bench-prompt", sequence));

    /// <summary>
    /// The forced decode stream of <paramref name="sequence"/>: the text's next ids, or <see cref="GenTokens"/> ids uniform in
    /// [0, vocab) from (Seed, "bench-decode"), with the sequence number appended to the name after sequence 0.
    /// </summary>
    public int[] ForcedIds(int vocabSize, int sequence = 0) =>
        Text is { } t ? t.Skip(TextStart(sequence) + PromptTokens).Take(GenTokens).ToArray() : Stream(GenTokens, vocabSize, StreamName("bench-decode", sequence));

    private int TextStart(int sequence) => checked(sequence * (PromptTokens + GenTokens));

    private static string StreamName(string name, int sequence) =>
        sequence == 0 ? name : name + "-" + sequence.ToString(System.Globalization.CultureInfo.InvariantCulture);

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

/// <summary>
/// An engine that can also decode several sequences together: <see cref="Benchmark.Run"/> needs it for a batch above 1.
/// </summary>
public interface IBatchedBenchmarkTarget : IBenchmarkTarget
{
    /// <summary>Forgets every sequence and starts <paramref name="sequences"/> empty ones.</summary>
    void Reset(int sequences);

    /// <summary>Runs <paramref name="tokens"/> from the current position of <paramref name="sequence"/>; writes the last position's logits [V].</summary>
    void Prefill(int sequence, ReadOnlySpan<int> tokens, Span<float> lastLogits);

    /// <summary>Runs tokens[b] at the next position of sequence b, all sequences in one step; writes their logits [B, V] row-major.</summary>
    void DecodeStep(ReadOnlySpan<int> tokens, Span<float> logits);
}

/// <summary>Timing of one measured pass: tokens of every sequence of the batch.</summary>
public sealed record BenchmarkTiming(int PromptTokens, int GenTokens, TimeSpan Prefill, TimeSpan Decode)
{
    public double PrefillTokensPerSecond => PromptTokens / Math.Max(Prefill.TotalSeconds, 1e-9);
    public double DecodeTokensPerSecond => GenTokens / Math.Max(Decode.TotalSeconds, 1e-9);
}

public static class Benchmark
{
    /// <summary>
    /// Warm-up passes (untimed, for at least <see cref="BenchmarkSettings.WarmupTime"/>), then one measured pass: reset,
    /// prefill of the prompt (timed), then <see cref="BenchmarkSettings.GenTokens"/> decode steps (timed together). With a
    /// batch of N the prefill times the N prompts one after the other and each decode step runs the N sequences together;
    /// the timing counts the tokens of every sequence. Returns the measured pass's timing and the tokens fed to the decode
    /// steps ([steps, N] row-major).
    /// </summary>
    /// <exception cref="ArgumentException">Invalid settings, or a batch above 1 for a target that is no <see cref="IBatchedBenchmarkTarget"/>.</exception>
    public static (BenchmarkTiming Timing, int[] DecodedTokens) Run(IBenchmarkTarget target, BenchmarkSettings settings)
    {
        ArgumentNullException.ThrowIfNull(target);
        settings.Validate();
        var workload = Workload.Of(target, settings);
        var warmup = Stopwatch.StartNew();
        do Pass(target, settings, workload);
        while (warmup.Elapsed < settings.WarmupTime);
        return (Pass(target, settings, workload), workload.Fed);
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
        int layers = session.Config.NumLayers, topK = session.Config.NumExpertsUsed;
        // A batch's sequences share positions, so its steps are numbered in the order the engine runs the tokens.
        IForwardObserver recorder = settings.Batch == 1 ? new RoutingRecorder(layers, topK) : new RunOrderRecorder(layers, topK);
        var previous = session.Model.Observer;
        session.Model.Observer = recorder;
        try
        {
            Pass(target, settings, Workload.Of(target, settings));
        }
        finally
        {
            session.Model.Observer = previous;
        }
        return recorder is RoutingRecorder r ? r.Trace : ((RunOrderRecorder)recorder).Trace;
    }

    // Routing by the order the engine runs tokens: the i-th routing of a layer belongs to the i-th token run (every token
    // passes each layer once, the layers in order), which is also how the offloaded runner numbers the oracle's steps.
    private sealed class RunOrderRecorder(int layerCount, int topK) : IForwardObserver
    {
        private readonly int[] _routed = new int[layerCount]; // [layer] routings seen

        public RoutingTrace Trace { get; } = new(layerCount, topK);

        public void OnTensor(string name, int layer, int position, ReadOnlySpan<float> values) { }

        public void OnRouting(int layer, int position, ReadOnlySpan<float> probs, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights)
        {
            int step = _routed[layer]++;
            if (step == Trace.StepCount) Trace.AddStep();
            Trace.Set(step, layer, ids);
        }
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

    // The token streams of a pass and its buffers: prompts[b], forced[b], logits [B, V], fed [steps, B], step tokens [B].
    private sealed record Workload(int[][] Prompts, int[][] Forced, float[] Logits, int[] Fed, int[] Step)
    {
        public static Workload Of(IBenchmarkTarget target, BenchmarkSettings settings)
        {
            int n = settings.Batch, vocab = target.VocabSize;
            if (n > 1 && target is not IBatchedBenchmarkTarget)
                throw new ArgumentException($"this engine decodes one sequence at a time; a batch of {n} needs {nameof(IBatchedBenchmarkTarget)}");
            return new Workload(
                Enumerable.Range(0, n).Select(b => settings.PromptIds(vocab, b)).ToArray(),
                Enumerable.Range(0, n).Select(b => settings.ForcedIds(vocab, b)).ToArray(),
                new float[checked(n * vocab)], new int[checked(settings.GenTokens * n)], new int[n]);
        }
    }

    private static BenchmarkTiming Pass(IBenchmarkTarget target, BenchmarkSettings settings, Workload w)
    {
        int n = settings.Batch, vocab = target.VocabSize;
        if (n == 1)
        {
            target.Reset();
            var clock = Stopwatch.StartNew();
            target.Prefill(w.Prompts[0], w.Logits);
            var prefill = clock.Elapsed;
            clock.Restart();
            for (int i = 0; i < settings.GenTokens; i++)
            {
                int next = settings.Decode == BenchmarkDecode.Forced ? w.Forced[0][i] : Sampler.ArgMax(w.Logits);
                w.Fed[i] = next;
                target.Decode(next, w.Logits);
            }
            return new BenchmarkTiming(w.Prompts[0].Length, settings.GenTokens, prefill, clock.Elapsed);
        }
        var batched = (IBatchedBenchmarkTarget)target;
        batched.Reset(n);
        var prefillClock = Stopwatch.StartNew();
        for (int b = 0; b < n; b++) batched.Prefill(b, w.Prompts[b], w.Logits.AsSpan(b * vocab, vocab));
        var prefillTime = prefillClock.Elapsed;
        var decodeClock = Stopwatch.StartNew();
        for (int i = 0; i < settings.GenTokens; i++)
        {
            for (int b = 0; b < n; b++)
                w.Step[b] = settings.Decode == BenchmarkDecode.Forced ? w.Forced[b][i] : Sampler.ArgMax(w.Logits.AsSpan(b * vocab, vocab));
            w.Step.CopyTo(w.Fed, i * n);
            batched.DecodeStep(w.Step, w.Logits);
        }
        return new BenchmarkTiming(w.Prompts.Sum(p => p.Length), settings.GenTokens * n, prefillTime, decodeClock.Elapsed);
    }
}

/// <summary>
/// A <see cref="ModelSession"/> under the benchmark: its state, team and expert runner as configured. A batch's sequence 0
/// is the session's state; the others get states of the same context, created with the first batch that needs them.
/// </summary>
public sealed class SessionBenchmarkTarget(ModelSession session) : IBatchedBenchmarkTarget
{
    private readonly List<InferenceState> _states = [session.State];
    private InferenceState[] _active = [session.State];
    private DecodeBatch? _batch;
    private readonly bool _offloaded = session.ExpertPlacement.Offloaded;
    private ExpertStats? _decodeStart;  // the expert counters at the first decode step since the last reset

    public int VocabSize => session.Config.VocabSize;

    /// <summary>
    /// The expert figures from the first decode step since the last reset until now: read right after
    /// <see cref="Benchmark.Run"/> (which resets before each pass and prefills before decoding), those of the measured
    /// pass's decode loop. All zero when the experts are resident or nothing was decoded.
    /// </summary>
    public DecodeExpertFigures DecodeExperts => _decodeStart is { } start ? DecodeExpertFigures.Of(session.ExpertStats - start) : default;

    public void Reset() => Reset(1);

    /// <exception cref="ArgumentOutOfRangeException"><paramref name="sequences"/> below 1.</exception>
    /// <exception cref="ArgumentException">Several sequences on a session whose forward pass runs on another backend (batched
    /// decode steps run on the CPU engine).</exception>
    public void Reset(int sequences)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        if (sequences > 1 && session.Model.Backend is not null)
            throw new ArgumentException("a batch of several sequences runs on the CPU engine only, not on this session's backend");
        while (_states.Count < sequences) _states.Add(session.Model.CreateState(session.State.Context));
        if (sequences > 1 && (_batch is null || _batch.MaxSequences < sequences)) _batch = session.Model.CreateDecodeBatch(sequences);
        _active = _states.GetRange(0, sequences).ToArray();
        foreach (var state in _active) state.Reset();
        _decodeStart = null;
    }

    public void Prefill(ReadOnlySpan<int> tokens, Span<float> lastLogits) => Prefill(0, tokens, lastLogits);

    public void Prefill(int sequence, ReadOnlySpan<int> tokens, Span<float> lastLogits) =>
        session.Model.Forward(_active[sequence], tokens, lastLogits, allPositions: false, session.Team);

    public void Decode(int token, Span<float> logits)
    {
        MarkDecodeStart();
        session.Model.Forward(session.State, token, logits, session.Team);
    }

    public void DecodeStep(ReadOnlySpan<int> tokens, Span<float> logits)
    {
        if (_active.Length == 1 && tokens.Length == 1)
        {
            Decode(tokens[0], logits);
            return;
        }
        MarkDecodeStart();
        session.Model.ForwardStep(_batch!, _active, tokens, logits, session.Team);
    }

    // One snapshot per pass, before its first decode step, rather than two around every step in the timed loop.
    private void MarkDecodeStart()
    {
        if (_offloaded && _decodeStart is null) _decodeStart = session.ExpertStats;
    }
}

/// <summary>
/// Expert figures of decode steps alone (prefill excluded): tokens, bytes read, compute's stall on reads, time with a read
/// in flight, and the wall time of the steps.
/// </summary>
public readonly record struct DecodeExpertFigures(long Tokens, long BytesRead, TimeSpan Stall, TimeSpan IoBusy, TimeSpan Elapsed)
{
    public double BytesPerToken => Tokens == 0 ? 0 : (double)BytesRead / Tokens;
    public double StallMsPerToken => Tokens == 0 ? 0 : Stall.TotalMilliseconds / Tokens;
    public double IoBusyFraction => Elapsed <= TimeSpan.Zero ? 0 : Math.Min(1, IoBusy / Elapsed);

    /// <summary>Bytes read per second of decode: what the steps asked of the disk.</summary>
    public double BytesPerSecond => Elapsed <= TimeSpan.Zero ? 0 : BytesRead / Elapsed.TotalSeconds;

    /// <summary>The figures of one stretch of decode steps (the difference of two snapshots).</summary>
    public static DecodeExpertFigures Of(ExpertStats stretch) =>
        new(stretch.Tokens, stretch.BytesRead, stretch.Cache.Stall, stretch.Cache.IoBusy, stretch.Elapsed);

    /// <summary>Figures of two stretches together.</summary>
    public static DecodeExpertFigures operator +(DecodeExpertFigures a, DecodeExpertFigures b) =>
        new(a.Tokens + b.Tokens, a.BytesRead + b.BytesRead, a.Stall + b.Stall, a.IoBusy + b.IoBusy, a.Elapsed + b.Elapsed);
}
