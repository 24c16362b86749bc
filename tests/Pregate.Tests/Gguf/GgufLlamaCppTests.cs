// llama.cpp (through LLamaSharp) as an independent reader of files written by GgufWriter + GgufModelConfig:
// the model loads, and llama.cpp's parameter count, layer/head counts and vocabulary match what was written.
using LLama;
using LLama.Common;
using Pregate.Core;
using Pregate.Formats.Gguf;
using Xunit.Abstractions;

namespace Pregate.Tests.Gguf;

public sealed class GgufLlamaCppTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData(Architecture.Mixtral)]
    [InlineData(Architecture.Qwen2Moe)]
    [InlineData(Architecture.Qwen3Moe)]
    [InlineData(Architecture.Olmoe)]
    public void LlamaCppLoadsTheSyntheticModelWithTheSameParameterCount(Architecture arch)
    {
        ModelConfig c = GgufModelConfigTests.Config(arch);
        string path = _dir.File($"tiny-{arch}.gguf");
        long written = GgufModelConfigTests.WriteModel(path, c, seed: 7);

        using var weights = LLamaWeights.LoadFromFile(new ModelParams(path) { GpuLayerCount = 0});
        output.WriteLine($"{arch}: {new FileInfo(path).Length} bytes, {written} elements written, llama.cpp counts {weights.ParameterCount}; " +
                         $"layers {weights.NativeHandle.LayerCount}, heads {weights.NativeHandle.HeadCount}/{weights.NativeHandle.KVHeadCount}, " +
                         $"vocab {weights.Vocab.Count}, bos {weights.Vocab.BOS}, eos {weights.Vocab.EOS}");
        Assert.Equal(written, (long)weights.ParameterCount);
        Assert.Equal(c.HiddenSize, weights.EmbeddingSize);
        Assert.Equal(c.MaxContext, weights.ContextSize);
        Assert.Equal(c.NumLayers, weights.NativeHandle.LayerCount);
        Assert.Equal(c.NumHeads, weights.NativeHandle.HeadCount);
        Assert.Equal(c.NumKvHeads, weights.NativeHandle.KVHeadCount);
        Assert.Equal(c.VocabSize, weights.Vocab.Count);
        Assert.Equal(GgufVocab.EosId, (int?)weights.Vocab.EOS);
    }
}
