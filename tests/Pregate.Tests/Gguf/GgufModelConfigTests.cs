// GgufModelConfig: ModelConfig -> GGUF metadata -> ModelConfig for the four MoE architectures, the fallbacks
// (vocab size, head dim, expert widths), and the errors for unsupported or incomplete metadata.
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Gguf;
using Xunit.Abstractions;

namespace Pregate.Tests.Gguf;

public sealed class GgufModelConfigTests(ITestOutputHelper output) : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    internal static readonly string[] NormalTokens = ["▁the", "▁a", "ing", "▁cat", "s", "▁sat"];
    internal static readonly int VocabSize = GgufVocab.LlamaSpmVocabSize(NormalTokens.Length);

    /// <summary>Small configs in the shape of each architecture (Mixtral is Mixtral-8x7B's layout shrunk).</summary>
    internal static ModelConfig Config(Architecture arch) => arch switch
    {
        Architecture.Mixtral => new ModelConfig
        {
            Architecture = arch, VocabSize = VocabSize, HiddenSize = 64, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 16,
            NumExperts = 4, NumExpertsUsed = 2, ExpertFfn = 96, NormTopKProb = true, RmsNormEps = 1e-5f, RopeTheta = 1e6f,
            MaxContext = 512, BosTokenId = GgufVocab.BosId, EosTokenIds = [GgufVocab.EosId],
        },
        Architecture.Qwen2Moe => new ModelConfig
        {
            Architecture = arch, VocabSize = VocabSize, HiddenSize = 64, NumLayers = 2, NumHeads = 4, NumKvHeads = 4, HeadDim = 16,
            NumExperts = 6, NumExpertsUsed = 2, ExpertFfn = 32, SharedExpertFfn = 80, NormTopKProb = false, RmsNormEps = 1e-6f,
            RopeTheta = 1e6f, MaxContext = 256, AttentionBias = true, BosTokenId = GgufVocab.BosId, EosTokenIds = [GgufVocab.EosId],
        },
        Architecture.Qwen3Moe => new ModelConfig
        {
            Architecture = arch, VocabSize = VocabSize, HiddenSize = 64, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 32,
            NumExperts = 8, NumExpertsUsed = 3, ExpertFfn = 48, NormTopKProb = true, RmsNormEps = 1e-6f, RopeTheta = 1e6f,
            MaxContext = 1024, TieWordEmbeddings = true, QkNorm = QkNormKind.PerHead, BosTokenId = null,
            EosTokenIds = [GgufVocab.EosId, GgufVocab.UnknownId],
        },
        Architecture.Olmoe => new ModelConfig
        {
            Architecture = arch, VocabSize = VocabSize, HiddenSize = 64, NumLayers = 2, NumHeads = 4, NumKvHeads = 4, HeadDim = 16,
            NumExperts = 8, NumExpertsUsed = 2, ExpertFfn = 48, NormTopKProb = false, RmsNormEps = 1e-5f, RopeTheta = 10000f,
            MaxContext = 4096, QkNorm = QkNormKind.Full, BosTokenId = GgufVocab.BosId, EosTokenIds = [GgufVocab.EosId],
        },
        _ => throw new ArgumentOutOfRangeException(nameof(arch)),
    };

    /// <summary>
    /// Writes a complete model for <paramref name="c"/>: config metadata, the minimal SPM vocabulary, and every tensor of
    /// <see cref="GgufModelConfig.TensorShapes"/> as F32 (seeded uniform ±0.05; norms 1), streamed. Returns the total element count.
    /// </summary>
    internal static long WriteModel(string path, ModelConfig c, int seed, Action<GgufWriter>? edit = null)
    {
        var w = new GgufWriter();
        GgufModelConfig.Write(w, c);
        int vocab = GgufVocab.WriteLlamaSpmVocab(w, NormalTokens);
        Assert.Equal(c.VocabSize, vocab);
        long total = 0;
        int index = 0;
        foreach (var (name, shape) in GgufModelConfig.TensorShapes(c))
        {
            int tensorSeed = seed * 1000 + index++;
            bool isNorm = name.Contains("norm", StringComparison.Ordinal);
            var tensor = new TensorData(name, DType.F32, shape, s =>
            {
                var rng = new Random(tensorSeed);
                long n = shape.Aggregate(1L, (a, d) => a * d);
                var buffer = new byte[4 * 1024];
                for (long done = 0; done < n;)
                {
                    int chunk = (int)Math.Min(n - done, buffer.Length / 4);
                    for (int i = 0; i < chunk; i++)
                        BitConverter.TryWriteBytes(buffer.AsSpan(4 * i), isNorm ? 1f : (rng.NextSingle() - 0.5f) * 0.1f);
                    s.Write(buffer, 0, 4 * chunk);
                    done += chunk;
                }
            });
            total += tensor.ElementCount;
            w.AddTensor(tensor);
        }
        edit?.Invoke(w);
        w.Write(path);
        return total;
    }

    private static void AssertSameConfig(ModelConfig expected, ModelConfig actual)
    {
        Assert.Equal(expected.EosTokenIds, actual.EosTokenIds);
        Assert.Equal(expected, actual with { EosTokenIds = expected.EosTokenIds });
    }

    public static TheoryData<Architecture> Architectures() =>
        [Architecture.Mixtral, Architecture.Qwen2Moe, Architecture.Qwen3Moe, Architecture.Olmoe];

    [Theory]
    [MemberData(nameof(Architectures))]
    public void ConfigRoundTripsThroughGgufMetadata(Architecture arch)
    {
        ModelConfig c = Config(arch);
        string path = _dir.File($"{arch}.gguf");
        WriteModel(path, c, seed: 1);
        using var f = GgufFile.Open(path);
        output.WriteLine(string.Join("\n", f.Metadata.Where(kv => !kv.Key.StartsWith("tokenizer", StringComparison.Ordinal)).Select(kv => $"{kv.Key} = {kv.Value}")));
        ModelConfig read = GgufModelConfig.Read(f);
        output.WriteLine(read.ToString());
        AssertSameConfig(c, read);
        Assert.Equal(GgufModelConfig.ArchitectureName(arch), f.GetString(GgufModelConfig.ArchitectureKey));
        Assert.Equal(c.ModelType, f.GetString(GgufModelConfig.NameKey));
    }

    [Theory]
    [InlineData(Architecture.Mixtral, false)]
    [InlineData(Architecture.Qwen2Moe, true)]
    [InlineData(Architecture.Qwen3Moe, false)]
    [InlineData(Architecture.Olmoe, true)]
    public void NonDefaultTopKNormalisationIsWrittenAndHonoured(Architecture arch, bool norm)
    {
        ModelConfig c = Config(arch) with { NormTopKProb = norm };
        var w = new GgufWriter();
        GgufModelConfig.Write(w, c);
        string key = GgufModelConfig.ArchitectureName(arch) + ".expert_weights_norm";
        Assert.Contains(key, w.Keys);
        using var f = GgufFile.Open(_dir.Write("norm.gguf", GgufTestFiles.ToBytes(w)));
        Assert.Equal(norm, GgufModelConfig.Read(f).NormTopKProb);
    }

    [Fact]
    public void DefaultTopKNormalisationWritesNoKey()
    {
        var w = new GgufWriter();
        GgufModelConfig.Write(w, Config(Architecture.Mixtral));
        Assert.DoesNotContain("llama.expert_weights_norm", w.Keys);
    }

    private GgufFile OpenMetadata(ModelConfig c, Action<GgufWriter> edit)
    {
        var w = new GgufWriter();
        GgufModelConfig.Write(w, c);
        edit(w);
        return GgufFile.Open(_dir.Write("meta.gguf", GgufTestFiles.ToBytes(w)));
    }

    private void ReadFails(ModelConfig c, Action<GgufWriter> edit, params string[] fragments)
    {
        using var f = OpenMetadata(c, edit);
        var e = Assert.Throws<ModelFormatException>(() => GgufModelConfig.Read(f));
        output.WriteLine(e.Message);
        Assert.Equal(f.Path, e.FilePath);
        foreach (string fragment in fragments) Assert.Contains(fragment, e.Message);
    }

    [Fact]
    public void DenseLlamaIsRejected() =>
        ReadFails(Config(Architecture.Mixtral), w => w.Remove("llama.expert_count"), "dense llama models are not MoE; not supported");

    [Fact]
    public void LlamaWithZeroExpertsIsRejected() =>
        ReadFails(Config(Architecture.Mixtral), w => w.Set("llama.expert_count", GgufValue.FromUInt32(0)), "dense llama models are not MoE");

    [Fact]
    public void UnsupportedArchitectureIsNamed() =>
        ReadFails(Config(Architecture.Mixtral), w => w.Set(GgufModelConfig.ArchitectureKey, GgufValue.FromString("gpt2")), "unsupported architecture gpt2");

    [Fact]
    public void MissingArchitectureKey() =>
        ReadFails(Config(Architecture.Mixtral), w => w.Remove(GgufModelConfig.ArchitectureKey), "general.architecture", "missing");

    [Fact]
    public void MissingRequiredKeyIsNamed() =>
        ReadFails(Config(Architecture.Olmoe), w => w.Remove("olmoe.attention.layer_norm_rms_epsilon"), "olmoe.attention.layer_norm_rms_epsilon", "missing");

    [Fact]
    public void WrongValueTypeIsNamed() =>
        ReadFails(Config(Architecture.Qwen3Moe), w => w.Set("qwen3moe.block_count", GgufValue.FromString("2")), "qwen3moe.block_count", "STRING");

    [Fact]
    public void ValidationRunsOnTheResult() =>
        ReadFails(Config(Architecture.Mixtral), w => w.Set("llama.expert_used_count", GgufValue.FromUInt32(9)), "exceeds the number of experts");

    [Fact]
    public void PartialRotaryIsRejected() =>
        ReadFails(Config(Architecture.Mixtral), w => w.Set("llama.rope.dimension_count", GgufValue.FromUInt32(8)), "partial rotary");

    [Fact]
    public void MissingExpertWidthWithoutTensorsIsNamed() =>
        ReadFails(Config(Architecture.Qwen3Moe), w => w.Remove("qwen3moe.expert_feed_forward_length"), "qwen3moe.expert_feed_forward_length");

    [Fact]
    public void VocabSizeFallsBackToTokensThenEmbedding()
    {
        ModelConfig c = Config(Architecture.Mixtral);
        using (var f = OpenMetadata(c, w =>
        {
            w.Remove("llama.vocab_size");
            w.AddStringArray(GgufModelConfig.TokensKey, Enumerable.Range(0, 300).Select(i => $"t{i}"));
        }))
            Assert.Equal(300, GgufModelConfig.Read(f).VocabSize);

        using (var f = OpenMetadata(c, w =>
        {
            w.Remove("llama.vocab_size");
            w.AddTensor(TensorData.FromBytes(GgufTensorNames.TokenEmbedding, DType.F32, [321, 64], new byte[321 * 64 * 4]));
        }))
            Assert.Equal(321, GgufModelConfig.Read(f).VocabSize);

        ReadFails(c, w => w.Remove("llama.vocab_size"), "vocabulary size unknown");
    }

    [Fact]
    public void DefaultsWhenOptionalKeysAreAbsent()
    {
        ModelConfig c = Config(Architecture.Mixtral);
        using var f = OpenMetadata(c, w =>
        {
            w.Remove("llama.rope.freq_base");
            w.Remove("llama.attention.head_count_kv");
            w.Remove("llama.rope.dimension_count");
            w.Remove(GgufModelConfig.BosTokenKey);
            w.Remove(GgufModelConfig.EosTokenKey);
        });
        ModelConfig read = GgufModelConfig.Read(f);
        Assert.Equal(GgufModelConfig.DefaultRopeTheta, read.RopeTheta);
        Assert.Equal(c.NumHeads, read.NumKvHeads);
        Assert.Equal(c.HiddenSize / c.NumHeads, read.HeadDim);
        Assert.Null(read.BosTokenId);
        Assert.Empty(read.EosTokenIds);
        Assert.True(read.TieWordEmbeddings); // no output.weight tensor
    }

    [Fact]
    public void ExpertWidthsFallBackToTensorShapes()
    {
        ModelConfig c = Config(Architecture.Qwen2Moe);
        string path = _dir.File("qwen2moe-shapes.gguf");
        WriteModel(path, c, seed: 2, w =>
        {
            w.Remove("qwen2moe.expert_feed_forward_length");
            w.Remove("qwen2moe.expert_shared_feed_forward_length");
        });
        using var f = GgufFile.Open(path);
        ModelConfig read = GgufModelConfig.Read(f);
        Assert.Equal(c.ExpertFfn, read.ExpertFfn);
        Assert.Equal(c.SharedExpertFfn, read.SharedExpertFfn);
    }

    [Fact]
    public void WriterRejectsConfigsGgufCannotExpress()
    {
        var w = new GgufWriter();
        Assert.Throws<ArgumentException>(() => GgufModelConfig.Write(w, Config(Architecture.Mixtral) with { AttentionBias = true }));
        Assert.Throws<ArgumentException>(() => GgufModelConfig.Write(w, Config(Architecture.Mixtral) with { SharedExpertFfn = 64 }));
        Assert.Throws<ArgumentException>(() => GgufModelConfig.Write(w, Config(Architecture.Qwen2Moe) with { SharedExpertFfn = 0 }));
        Assert.Throws<ArgumentException>(() => GgufModelConfig.Write(w, Config(Architecture.Olmoe) with { QkNorm = QkNormKind.PerHead }));
        Assert.Throws<ArgumentException>(() => GgufModelConfig.Write(w, Config(Architecture.Mixtral) with { NumExpertsUsed = 5 }));
        Assert.Empty(w.Keys);
    }

    [Fact]
    public void TensorShapesFollowLlamaCppLayout()
    {
        ModelConfig c = Config(Architecture.Qwen3Moe);
        var shapes = GgufModelConfig.TensorShapes(c).ToDictionary(t => t.Name, t => t.Shape);
        Assert.Equal([c.VocabSize, 64L], shapes["token_embd.weight"]);
        Assert.Equal([4L * 32, 64], shapes["blk.1.attn_q.weight"]);
        Assert.Equal([2L * 32, 64], shapes["blk.1.attn_k.weight"]);
        Assert.Equal([64L, 4 * 32], shapes["blk.1.attn_output.weight"]);
        Assert.Equal([32L], shapes["blk.0.attn_q_norm.weight"]);
        Assert.Equal([8L, 48, 64], shapes["blk.0.ffn_up_exps.weight"]);
        Assert.Equal([8L, 64, 48], shapes["blk.0.ffn_down_exps.weight"]);
        Assert.Equal([8L, 64], shapes["blk.0.ffn_gate_inp.weight"]);
        Assert.False(shapes.ContainsKey("output.weight"));
        Assert.Equal(1 + 2 * 12 + 1, shapes.Count);
    }
}
