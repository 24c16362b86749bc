// Shared pieces of the model tests: synthetic models on disk (cached per test run), token streams, error measures.
using System.Runtime.InteropServices;
using Pregate.Core;
using Pregate.Engine;
using Pregate.Formats.Synth;

namespace Pregate.Tests.Models;

internal static class ModelTestSupport
{
    private static readonly string Root = Path.Combine(Path.GetTempPath(), $"pregate-model-tests-{Environment.ProcessId}");
    private static readonly object Gate = new();

    /// <summary>A synthetic model file (GGUF) or folder (HF) for <paramref name="c"/>, written once per test process.</summary>
    public static string Synth(string name, ModelConfig c, DType type, bool gguf, ulong seed = 1)
    {
        string path = Path.Combine(Root, $"{name}-{DTypes.Name(type)}-s{seed}" + (gguf ? ".gguf" : "-hf"));
        lock (Gate)
        {
            if (gguf ? File.Exists(path) : Directory.Exists(path)) return path;
            var o = new SynthOptions(c, type, seed);
            if (gguf) SyntheticModel.WriteGguf(path, o);
            else SyntheticModel.WriteHf(path, o);
        }
        return path;
    }

    /// <summary>A fixed pseudo-random token stream (no special tokens at the end of the vocabulary).</summary>
    public static int[] Tokens(int count, int vocab, ulong seed)
    {
        var rng = new SeededRandom(seed, "tokens");
        var t = new int[count];
        for (int i = 0; i < count; i++) t[i] = (int)(rng.NextULong() % (ulong)(vocab - 1));
        return t;
    }

    /// <summary>max |a − b| over all rows divided by max |b|.</summary>
    public static double RelativeError(float[][] actual, float[][] reference)
    {
        double maxDiff = 0, maxRef = 0;
        for (int r = 0; r < reference.Length; r++)
            for (int i = 0; i < reference[r].Length; i++)
            {
                maxDiff = Math.Max(maxDiff, Math.Abs(actual[r][i] - reference[r][i]));
                maxRef = Math.Max(maxRef, Math.Abs(reference[r][i]));
            }
        return maxDiff / maxRef;
    }

    public static int ArgMax(float[] x) => Sampler.ArgMax(x);

    public static List<int> Greedy(ModelSession s, IReadOnlyList<int> prompt, int count)
    {
        var r = s.CreateGenerator().Generate(prompt, new GenerationOptions { MaxTokens = count, Sampling = SamplingOptions.Greedy, StopAtEos = false });
        return r.Tokens.ToList();
    }

    /// <summary>Feeds the tokens one at a time (the single-token path) after a reset; the logits after each.</summary>
    public static float[][] Decode(ModelSession session, int[] tokens)
    {
        session.State.Reset();
        var rows = new float[tokens.Length][];
        for (int i = 0; i < tokens.Length; i++)
        {
            rows[i] = new float[session.Config.VocabSize];
            session.Model.Forward(session.State, tokens[i], rows[i], session.Team);
        }
        return rows;
    }

    /// <summary>Every row of <paramref name="actual"/> has the bits of the same row of <paramref name="expected"/>.</summary>
    public static void AssertBitIdentical(float[][] expected, float[][] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int r = 0; r < expected.Length; r++)
            Assert.Equal(MemoryMarshal.Cast<float, int>(expected[r]).ToArray(), MemoryMarshal.Cast<float, int>(actual[r]).ToArray());
    }
}
