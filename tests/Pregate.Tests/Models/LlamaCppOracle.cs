// llama.cpp (through LLamaSharp) as the independent reference for the forward pass: all-position logits with exact
// settings (F32 K/V cache, no flash attention, CPU only) and a greedy continuation.
using LLama;
using LLama.Common;
using LLama.Native;

namespace Pregate.Tests.Models;

internal sealed class LlamaCppOracle : IDisposable
{
    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;
    private readonly int _vocab;

    public LlamaCppOracle(string ggufPath, int contextSize = 256)
    {
        var p = new ModelParams(ggufPath)
        {
            ContextSize = (uint)contextSize,
            BatchSize = (uint)contextSize,
            UBatchSize = (uint)contextSize,
            GpuLayerCount = 0,
            TypeK = GGMLType.GGML_TYPE_F32,
            TypeV = GGMLType.GGML_TYPE_F32,
            FlashAttention = false,
            Threads = 2,
            BatchThreads = 2,
        };
        _weights = LLamaWeights.LoadFromFile(p);
        _context = _weights.CreateContext(p);
        _vocab = _weights.Vocab.Count;
    }

    /// <summary>Logits after every token of <paramref name="tokens"/>, run as one batch from an empty cache.</summary>
    public float[][] Logits(IReadOnlyList<int> tokens)
    {
        _context.NativeHandle.MemoryClear();
        var batch = new LLamaBatch();
        for (int i = 0; i < tokens.Count; i++) batch.Add((LLamaToken)tokens[i], i, LLamaSeqId.Zero, true);
        var rc = _context.NativeHandle.Decode(batch);
        if (rc != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {rc}");
        var rows = new float[tokens.Count][];
        for (int i = 0; i < tokens.Count; i++) rows[i] = _context.NativeHandle.GetLogitsIth(i).ToArray();
        return rows;
    }

    /// <summary>Greedy continuation of <paramref name="prompt"/> for <paramref name="count"/> tokens (argmax, ties to the lowest id).</summary>
    public List<int> Greedy(IReadOnlyList<int> prompt, int count)
    {
        _context.NativeHandle.MemoryClear();
        var batch = new LLamaBatch();
        for (int i = 0; i < prompt.Count; i++) batch.Add((LLamaToken)prompt[i], i, LLamaSeqId.Zero, i == prompt.Count - 1);
        if (_context.NativeHandle.Decode(batch) != DecodeResult.Ok) throw new InvalidOperationException("llama.cpp decode failed");
        var output = new List<int>();
        int pos = prompt.Count;
        int last = batch.TokenCount - 1;
        for (int n = 0; n < count; n++)
        {
            var logits = _context.NativeHandle.GetLogitsIth(last);
            int next = ArgMax(logits);
            output.Add(next);
            batch.Clear();
            batch.Add((LLamaToken)next, pos++, LLamaSeqId.Zero, true);
            if (_context.NativeHandle.Decode(batch) != DecodeResult.Ok) throw new InvalidOperationException("llama.cpp decode failed");
            last = 0;
        }
        return output;
    }

    private static int ArgMax(ReadOnlySpan<float> x)
    {
        int best = 0;
        for (int i = 1; i < x.Length; i++) if (x[i] > x[best]) best = i;
        return best;
    }

    public int VocabSize => _vocab;

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }
}
