// llama.cpp (through LLamaSharp) as a benchmark target: the prompt as one batch with logits for its last token only, then
// one token per decode call; CPU only, flash attention off, K/V cache in the type asked for.
using LLama;
using LLama.Common;
using LLama.Extensions;
using LLama.Native;
using Pregate.Engine;

namespace Pregate.Benchmarks;

internal sealed class LlamaCppTarget : IBenchmarkTarget, IDisposable
{
    private readonly SafeLlamaModelHandle _model;
    private readonly SafeLLamaContextHandle _context;
    private readonly LLamaBatch _batch = new();
    private int _position;

    /// <param name="repack">llama.cpp's default: copy weights into its CPU-optimized layouts (anonymous memory). Off, the
    /// weights stay in the memory map only, the way to run it under a memory cap smaller than the model.</param>
    public LlamaCppTarget(string modelPath, int threads, int contextTokens, int promptTokens, GGMLType kvType, bool repack = true)
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
            LoadMode = LLamaLoadMode.MemoryMap,
            Threads = threads,
            BatchThreads = threads,
        };
        using (p.ToLlamaModelParams(out var modelParams))
        {
            modelParams.use_extra_bufts = repack;
            _model = SafeLlamaModelHandle.LoadFromFile(modelPath, modelParams);
        }
        p.ToLlamaContextParams(out var contextParams);
        _context = SafeLLamaContextHandle.Create(_model, contextParams);
        VocabSize = _model.Vocab.Count;
    }

    public int VocabSize { get; }

    public void Reset()
    {
        _context.MemoryClear();
        _position = 0;
    }

    public void Prefill(ReadOnlySpan<int> tokens, Span<float> lastLogits)
    {
        _batch.Clear();
        for (int i = 0; i < tokens.Length; i++) _batch.Add((LLamaToken)tokens[i], _position + i, LLamaSeqId.Zero, i == tokens.Length - 1);
        Decode(tokens.Length);
        _context.GetLogitsIth(tokens.Length - 1).CopyTo(lastLogits);
    }

    public void Decode(int token, Span<float> logits)
    {
        _batch.Clear();
        _batch.Add((LLamaToken)token, _position, LLamaSeqId.Zero, true);
        Decode(1);
        _context.GetLogitsIth(0).CopyTo(logits);
    }

    private void Decode(int tokens)
    {
        var rc = _context.Decode(_batch);
        if (rc != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {rc}");
        _position += tokens;
    }

    public void Dispose()
    {
        _context.Dispose();
        _model.Dispose();
    }
}
