// The throughput protocol behind `pregate bench`, shared with the llama.cpp peer so both engines run the same loop: a
// seeded random prompt timed as one prefill, then decode steps fed from a fixed seeded token stream (teacher forcing:
// greedy decoding of a random-weight model repeats one token, so its routing and any cache would look perfect) or greedy.
using System.Diagnostics;
using Pregate.Core;
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
