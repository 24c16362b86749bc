// Named shapes for synthetic models: tiny test models per family and the real dimensions of public MoE checkpoints
// (from their published config.json files).
using Pregate.Core;

namespace Pregate.Formats.Synth;

public static class SynthShapes
{
    /// <summary>Shape names accepted by <see cref="Get"/>.</summary>
    public static IReadOnlyList<string> Names { get; } =
    [
        "tiny", "tiny-qwen2moe", "tiny-qwen3moe", "tiny-olmoe",
        "mixtral-mini", "mixtral-8x7b", "olmoe-1b-7b", "qwen3-30b-a3b", "qwen1.5-moe-a2.7b",
    ];

    /// <summary>The configuration of shape <paramref name="name"/>; throws <see cref="ArgumentException"/> for unknown names.</summary>
    public static ModelConfig Get(string name) => name switch
    {
        "tiny" => Tiny(Architecture.Mixtral),
        "tiny-qwen2moe" => Tiny(Architecture.Qwen2Moe) with { SharedExpertFfn = 64, AttentionBias = true, NormTopKProb = false },
        "tiny-qwen3moe" => Tiny(Architecture.Qwen3Moe) with { QkNorm = QkNormKind.PerHead, HeadDim = 24 },
        "tiny-olmoe" => Tiny(Architecture.Olmoe) with { QkNorm = QkNormKind.Full, NormTopKProb = false, NumKvHeads = 4 },
        "mixtral-mini" => new ModelConfig
        {
            Architecture = Architecture.Mixtral, VocabSize = 32000, HiddenSize = 1024, NumLayers = 8, NumHeads = 16,
            NumKvHeads = 4, HeadDim = 64, NumExperts = 8, NumExpertsUsed = 2, ExpertFfn = 2816, NormTopKProb = true,
            RmsNormEps = 1e-5f, RopeTheta = 1e6f, MaxContext = 4096, BosTokenId = 1, EosTokenIds = [2],
        },
        // mistralai/Mixtral-8x7B-v0.1
        "mixtral-8x7b" => new ModelConfig
        {
            Architecture = Architecture.Mixtral, VocabSize = 32000, HiddenSize = 4096, NumLayers = 32, NumHeads = 32,
            NumKvHeads = 8, HeadDim = 128, NumExperts = 8, NumExpertsUsed = 2, ExpertFfn = 14336, NormTopKProb = true,
            RmsNormEps = 1e-5f, RopeTheta = 1e6f, MaxContext = 32768, BosTokenId = 1, EosTokenIds = [2],
        },
        // allenai/OLMoE-1B-7B-0924
        "olmoe-1b-7b" => new ModelConfig
        {
            Architecture = Architecture.Olmoe, VocabSize = 50304, HiddenSize = 2048, NumLayers = 16, NumHeads = 16,
            NumKvHeads = 16, HeadDim = 128, NumExperts = 64, NumExpertsUsed = 8, ExpertFfn = 1024, NormTopKProb = false,
            RmsNormEps = 1e-5f, RopeTheta = 10000f, MaxContext = 4096, QkNorm = QkNormKind.Full, EosTokenIds = [50279],
        },
        // Qwen/Qwen3-30B-A3B
        "qwen3-30b-a3b" => new ModelConfig
        {
            Architecture = Architecture.Qwen3Moe, VocabSize = 151936, HiddenSize = 2048, NumLayers = 48, NumHeads = 32,
            NumKvHeads = 4, HeadDim = 128, NumExperts = 128, NumExpertsUsed = 8, ExpertFfn = 768, NormTopKProb = true,
            RmsNormEps = 1e-6f, RopeTheta = 1e6f, MaxContext = 40960, QkNorm = QkNormKind.PerHead,
            BosTokenId = 151643, EosTokenIds = [151645],
        },
        // Qwen/Qwen1.5-MoE-A2.7B
        "qwen1.5-moe-a2.7b" => new ModelConfig
        {
            Architecture = Architecture.Qwen2Moe, VocabSize = 151936, HiddenSize = 2048, NumLayers = 24, NumHeads = 16,
            NumKvHeads = 16, HeadDim = 128, NumExperts = 60, NumExpertsUsed = 4, ExpertFfn = 1408, SharedExpertFfn = 5632,
            NormTopKProb = false, AttentionBias = true, RmsNormEps = 1e-6f, RopeTheta = 1e6f, MaxContext = 8192,
            BosTokenId = 151643, EosTokenIds = [151643],
        },
        _ => throw new ArgumentException($"unknown shape '{name}' (known: {string.Join(", ", Names)})"),
    };

    // A few layers and experts, vocab ≥ 300: fast enough for unit tests, big enough to exercise every code path.
    private static ModelConfig Tiny(Architecture a) => new()
    {
        Architecture = a, VocabSize = 384, HiddenSize = 64, NumLayers = 2, NumHeads = 4, NumKvHeads = 2, HeadDim = 16,
        NumExperts = 4, NumExpertsUsed = 2, ExpertFfn = 96, NormTopKProb = true, RmsNormEps = 1e-5f,
        RopeTheta = 10000f, MaxContext = 512, BosTokenId = null, EosTokenIds = [0],
    };
}
