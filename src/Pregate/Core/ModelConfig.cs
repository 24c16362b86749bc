// The blueprint of an MoE transformer, independent of the file it came from (HF config.json or GGUF metadata).
namespace Pregate.Core;

/// <summary>Model families Pregate runs; names follow HF <c>model_type</c>.</summary>
public enum Architecture
{
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    Olmoe,
}

/// <summary>Where q/k normalisation sits in attention.</summary>
public enum QkNormKind
{
    None,
    /// <summary>RMSNorm over each head's q and k vector (Qwen3-MoE), weights [headDim].</summary>
    PerHead,
    /// <summary>RMSNorm over the whole q and k projections before splitting into heads (OLMoE), weights [H·hd] and [Hkv·hd].</summary>
    Full,
}

/// <summary>
/// Hyper-parameters of an MoE decoder. Sizes are in elements. <see cref="ExpertFfn"/> is the routed experts' width
/// (Mixtral: intermediate_size; Qwen: moe_intermediate_size; OLMoE: intermediate_size).
/// </summary>
public sealed record ModelConfig
{
    public required Architecture Architecture { get; init; }
    public required int VocabSize { get; init; }
    public required int HiddenSize { get; init; }
    public required int NumLayers { get; init; }
    public required int NumHeads { get; init; }
    public required int NumKvHeads { get; init; }
    public required int HeadDim { get; init; }
    public required int NumExperts { get; init; }
    public required int NumExpertsUsed { get; init; }
    public required int ExpertFfn { get; init; }
    /// <summary>Width of the always-on shared expert (Qwen2-MoE), 0 when there is none.</summary>
    public int SharedExpertFfn { get; init; }
    /// <summary>Renormalise the top-k router weights to sum to 1 (Mixtral always; Qwen2-MoE, Qwen3-MoE and OLMoE per their norm_topk_prob, e.g. Qwen3-30B-A3B true, OLMoE false).</summary>
    public required bool NormTopKProb { get; init; }
    public required float RmsNormEps { get; init; }
    public required float RopeTheta { get; init; }
    public required int MaxContext { get; init; }
    public bool TieWordEmbeddings { get; init; }
    /// <summary>q/k/v projections carry biases (Qwen2-MoE).</summary>
    public bool AttentionBias { get; init; }
    public QkNormKind QkNorm { get; init; }
    public int? BosTokenId { get; init; }
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    /// <summary>HF model_type string of <see cref="Architecture"/>.</summary>
    public string ModelType => Architecture switch
    {
        Architecture.Mixtral => "mixtral",
        Architecture.Qwen2Moe => "qwen2_moe",
        Architecture.Qwen3Moe => "qwen3_moe",
        Architecture.Olmoe => "olmoe",
        _ => throw new InvalidOperationException(),
    };

    /// <summary>Checks that the numbers describe a model that can exist; throws <see cref="ModelFormatException"/> naming <paramref name="file"/>.</summary>
    public void Validate(string? file)
    {
        void Positive(string name, long v, long max = int.MaxValue)
        {
            if (v <= 0 || v > max) throw new ModelFormatException(file, $"{name} = {v} is out of range (1..{max})");
        }
        Positive("vocab_size", VocabSize, 1 << 24);
        Positive("hidden_size", HiddenSize, 1 << 17);
        Positive("num_hidden_layers", NumLayers, 4096);
        Positive("num_attention_heads", NumHeads, 4096);
        Positive("num_key_value_heads", NumKvHeads, 4096);
        Positive("head_dim", HeadDim, 1 << 14);
        Positive("num_experts", NumExperts, 1 << 14);
        Positive("num_experts_per_tok", NumExpertsUsed, 1 << 14);
        Positive("expert intermediate size", ExpertFfn, 1 << 20);
        Positive("max_position_embeddings", MaxContext, 1 << 24);
        if (NumExpertsUsed > NumExperts)
            throw new ModelFormatException(file, $"num_experts_per_tok = {NumExpertsUsed} exceeds the number of experts {NumExperts}");
        if (NumHeads % NumKvHeads != 0)
            throw new ModelFormatException(file, $"num_attention_heads = {NumHeads} is not a multiple of num_key_value_heads = {NumKvHeads}");
        if (HeadDim % 2 != 0)
            throw new ModelFormatException(file, $"head_dim = {HeadDim} must be even for rotary embeddings");
        if (SharedExpertFfn < 0 || SharedExpertFfn > 1 << 20)
            throw new ModelFormatException(file, $"shared_expert_intermediate_size = {SharedExpertFfn} is out of range");
        if (!(RmsNormEps > 0 && RmsNormEps < 1))
            throw new ModelFormatException(file, $"rms_norm_eps = {RmsNormEps} is out of range (0..1)");
        if (!(RopeTheta > 0) || float.IsInfinity(RopeTheta))
            throw new ModelFormatException(file, $"rope_theta = {RopeTheta} must be positive");
        foreach (int e in EosTokenIds)
            if (e < 0 || e >= VocabSize) throw new ModelFormatException(file, $"eos_token_id {e} is outside the vocabulary (0..{VocabSize - 1})");
        if (BosTokenId is int b && (b < 0 || b >= VocabSize))
            throw new ModelFormatException(file, $"bos_token_id {b} is outside the vocabulary (0..{VocabSize - 1})");
    }
}
