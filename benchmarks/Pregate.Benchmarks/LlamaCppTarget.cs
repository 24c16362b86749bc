// llama.cpp (through LLamaSharp) as a benchmark target: the prompt as one batch with logits for its last token only, then
// one token per decode call; CPU only, flash attention off, K/V cache in the type asked for.
using LLama;
using LLama.Common;
using LLama.Native;
using Pregate.Engine;

namespace Pregate.Benchmarks;

internal sealed class LlamaCppTarget : IBenchmarkTarget, IDisposable
{
    private readonly LLamaWeights _weights;
    private readonly LLamaContext _context;
    private readonly LLamaBatch _batch = new();
    private int _position;

    public LlamaCppTarget(string modelPath, int threads, int contextTokens, int promptTokens, GGMLType kvType)
    {
        var p = new ModelParams(modelPath)
        {
            ContextSize = (uint)contextTokens,
            BatchSize = (uint)promptTokens,
            UBatchSize = (uint)promptTokens,
            GpuLayerCount = 0,
            TypeK = kvType,
            TypeV = kvType,
            FlashAttention = false,
            Threads = threads,
            BatchThreads = threads,
        };
        _weights = LLamaWeights.LoadFromFile(p);
        _context = _weights.CreateContext(p);
        VocabSize = _weights.Vocab.Count;
    }

    public int VocabSize { get; }

    public void Reset()
    {
        _context.NativeHandle.MemoryClear();
        _position = 0;
    }

    public void Prefill(ReadOnlySpan<int> tokens, Span<float> lastLogits)
    {
        _batch.Clear();
        for (int i = 0; i < tokens.Length; i++) _batch.Add((LLamaToken)tokens[i], _position + i, LLamaSeqId.Zero, i == tokens.Length - 1);
        Decode(tokens.Length);
        _context.NativeHandle.GetLogitsIth(tokens.Length - 1).CopyTo(lastLogits);
    }

    public void Decode(int token, Span<float> logits)
    {
        _batch.Clear();
        _batch.Add((LLamaToken)token, _position, LLamaSeqId.Zero, true);
        Decode(1);
        _context.NativeHandle.GetLogitsIth(0).CopyTo(logits);
    }

    private void Decode(int tokens)
    {
        var rc = _context.NativeHandle.Decode(_batch);
        if (rc != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {rc}");
        _position += tokens;
    }

    public void Dispose()
    {
        _context.Dispose();
        _weights.Dispose();
    }
}
