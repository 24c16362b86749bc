// llama.cpp (through LLamaSharp) as a benchmark target: the prompt as one batch with logits for its last token only, then
// one token per decode call; CPU only, flash attention off, K/V cache in the type asked for. Several sequences: one
// sequence id each (a K/V stream of their own, not unified), each prompt decoded on its own, then one llama_decode per step
// holding every sequence's token.
using LLama;
using LLama.Common;
using LLama.Extensions;
using LLama.Native;
using Pregate.Engine;

namespace Pregate.Benchmarks;

internal sealed class LlamaCppTarget : IBatchedBenchmarkTarget, IDisposable
{
    private readonly SafeLlamaModelHandle _model;
    private readonly SafeLLamaContextHandle _context;
    private readonly LLamaBatch _batch = new();
    private readonly int[] _positions;     // [sequence] the next position of each sequence
    private int _sequences = 1;

    /// <param name="contextTokens">Tokens each sequence's K/V cache holds.</param>
    /// <param name="sequences">Sequences decoding together at most.</param>
    /// <param name="repack">llama.cpp's default: copy weights into its CPU-optimized layouts (anonymous memory). Off, the
    /// weights stay in the memory map only, the way to run it under a memory cap smaller than the model.</param>
    public LlamaCppTarget(string modelPath, int threads, int contextTokens, int promptTokens, GGMLType kvType, bool repack = true, int sequences = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        _positions = new int[sequences];
        var p = new ModelParams(modelPath)
        {
            // Without a unified cache llama.cpp gives each sequence context / sequences tokens of its own.
            ContextSize = checked((uint)(contextTokens * sequences)),
            SeqMax = (uint)sequences,
            KVUnified = false,
            BatchSize = (uint)Math.Max(promptTokens, sequences),
            UBatchSize = (uint)Math.Max(promptTokens, sequences),
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

    public void Reset() => Reset(1);

    public void Reset(int sequences)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sequences, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(sequences, _positions.Length);
        _context.MemoryClear();
        Array.Clear(_positions);
        _sequences = sequences;
    }

    public void Prefill(ReadOnlySpan<int> tokens, Span<float> lastLogits) => Prefill(0, tokens, lastLogits);

    public void Prefill(int sequence, ReadOnlySpan<int> tokens, Span<float> lastLogits)
    {
        _batch.Clear();
        for (int i = 0; i < tokens.Length; i++) _batch.Add((LLamaToken)tokens[i], _positions[sequence] + i, (LLamaSeqId)sequence, i == tokens.Length - 1);
        Decode();
        _positions[sequence] += tokens.Length;
        _context.GetLogitsIth(tokens.Length - 1).CopyTo(lastLogits);
    }

    public void Decode(int token, Span<float> logits) => DecodeStep([token], logits);

    public void DecodeStep(ReadOnlySpan<int> tokens, Span<float> logits)
    {
        if (tokens.Length != _sequences) throw new ArgumentException($"{tokens.Length} tokens for {_sequences} sequences", nameof(tokens));
        _batch.Clear();
        for (int b = 0; b < tokens.Length; b++) _batch.Add((LLamaToken)tokens[b], _positions[b], (LLamaSeqId)b, true);
        Decode();
        int vocab = VocabSize;
        for (int b = 0; b < tokens.Length; b++)
        {
            _positions[b]++;
            _context.GetLogitsIth(b).CopyTo(logits.Slice(b * vocab, vocab));
        }
    }

    private void Decode()
    {
        var rc = _context.Decode(_batch);
        if (rc != DecodeResult.Ok) throw new InvalidOperationException($"llama.cpp decode failed: {rc}");
    }

    public void Dispose()
    {
        _context.Dispose();
        _model.Dispose();
    }
}
