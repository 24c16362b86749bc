// GGUF metadata <-> ModelConfig for the MoE architectures llama.cpp names llama (with experts = Mixtral),
// qwen2moe, qwen3moe and olmoe (keys and per-arch facts of llama.cpp's src/llama-arch.cpp and llama-model.cpp).
using Pregate.Core;

namespace Pregate.Formats.Gguf;

/// <summary>Reads a <see cref="ModelConfig"/> from llama.cpp-style GGUF metadata and writes it back.</summary>
public static class GgufModelConfig
{
    public const string ArchitectureKey = "general.architecture";
    public const string NameKey = "general.name";
    public const string BosTokenKey = "tokenizer.ggml.bos_token_id";
    public const string EosTokenKey = "tokenizer.ggml.eos_token_id";
    public const string EotTokenKey = "tokenizer.ggml.eot_token_id";
    public const string TokensKey = "tokenizer.ggml.tokens";
    public const float DefaultRopeTheta = 10000f;

    /// <summary>llama.cpp's architecture name for <paramref name="a"/>: llama, qwen2moe, qwen3moe, olmoe.</summary>
    public static string ArchitectureName(Architecture a) => a switch
    {
        Architecture.Mixtral => "llama",
        Architecture.Qwen2Moe => "qwen2moe",
        Architecture.Qwen3Moe => "qwen3moe",
        Architecture.Olmoe => "olmoe",
        _ => throw new ArgumentOutOfRangeException(nameof(a), a, "unknown architecture"),
    };

    /// <summary>Whether llama.cpp renormalises the top-k router weights for <paramref name="a"/> (when <c>{arch}.expert_weights_norm</c> is absent).</summary>
    public static bool DefaultNormTopKProb(Architecture a) => a is Architecture.Mixtral or Architecture.Qwen3Moe;

    /// <summary>q/k normalisation llama.cpp applies for <paramref name="a"/>: per head (qwen3moe), over the whole projection (olmoe), or none.</summary>
    public static QkNormKind QkNormOf(Architecture a) => a switch
    {
        Architecture.Qwen3Moe => QkNormKind.PerHead,
        Architecture.Olmoe => QkNormKind.Full,
        _ => QkNormKind.None,
    };

    /// <summary>Whether <paramref name="a"/> has q/k/v biases (qwen2moe) and a shared expert (qwen2moe).</summary>
    public static bool HasAttentionBias(Architecture a) => a == Architecture.Qwen2Moe;
    public static bool HasSharedExpert(Architecture a) => a == Architecture.Qwen2Moe;

    /// <summary>
    /// Maps the metadata of <paramref name="f"/> to a validated <see cref="ModelConfig"/>.
    /// Vocabulary size: <c>{arch}.vocab_size</c>, else the length of <c>tokenizer.ggml.tokens</c>, else the rows of
    /// <c>token_embd.weight</c>. Head dim: <c>{arch}.attention.key_length</c>, else embedding_length / head_count.
    /// Expert widths fall back to the shapes of block 0's expert tensors when their keys are absent.
    /// Tied embeddings ⇔ no <c>output.weight</c> tensor. End-of-sequence ids: eos, then eot when present and different.
    /// Throws <see cref="ModelFormatException"/> for an unsupported architecture (including dense llama), a
    /// missing required key, a value of the wrong type, or values <see cref="ModelConfig.Validate"/> rejects.
    /// </summary>
    public static ModelConfig Read(GgufFile f)
    {
        string path = f.Path;
        string archName = f.TryGetString(ArchitectureKey, out string? a) ? a
            : throw new ModelFormatException(path, $"metadata key '{ArchitectureKey}' is missing");
        string p = archName + ".";
        Architecture arch = archName switch
        {
            "llama" => Architecture.Mixtral,
            "qwen2moe" => Architecture.Qwen2Moe,
            "qwen3moe" => Architecture.Qwen3Moe,
            "olmoe" => Architecture.Olmoe,
            _ => throw new ModelFormatException(path, $"unsupported architecture {archName} (supported: llama with experts, qwen2moe, qwen3moe, olmoe)"),
        };
        int experts = f.TryGetInt(p + "expert_count", out int e) ? e : 0;
        if (experts == 0)
        {
            if (arch == Architecture.Mixtral)
                throw new ModelFormatException(path, "dense llama models are not MoE; not supported (llama.expert_count is absent or 0)");
            throw new ModelFormatException(path, $"metadata key '{p}expert_count' is missing or 0");
        }

        int hidden = f.GetInt(p + "embedding_length");
        int heads = f.GetInt(p + "attention.head_count");
        if (heads <= 0) throw new ModelFormatException(path, $"{p}attention.head_count = {heads} must be positive");
        int kvHeads = f.TryGetInt(p + "attention.head_count_kv", out int kv) ? kv : heads;
        int headDim;
        if (f.TryGetInt(p + "attention.key_length", out int keyLength)) headDim = keyLength;
        else if (hidden % heads == 0) headDim = hidden / heads;
        else throw new ModelFormatException(path, $"{p}embedding_length {hidden} is not a multiple of head_count {heads} and {p}attention.key_length is absent");
        if (f.TryGetInt(p + "attention.value_length", out int valueLength) && valueLength != headDim)
            throw new ModelFormatException(path, $"{p}attention.value_length {valueLength} differs from the key length {headDim}; not supported");
        if (f.TryGetInt(p + "rope.dimension_count", out int ropeDims) && ropeDims != headDim)
            throw new ModelFormatException(path, $"{p}rope.dimension_count {ropeDims} differs from the head dim {headDim} (partial rotary embeddings are not supported)");

        int expertFfn = arch is Architecture.Qwen2Moe or Architecture.Qwen3Moe
            ? IntOrTensorDim(f, p + "expert_feed_forward_length", GgufTensorNames.Block(0, "ffn_gate_exps"), 1)
            : IntOrTensorDim(f, p + "feed_forward_length", GgufTensorNames.Block(0, "ffn_gate_exps"), 1);
        int sharedFfn = HasSharedExpert(arch)
            ? IntOrTensorDim(f, p + "expert_shared_feed_forward_length", GgufTensorNames.Block(0, "ffn_gate_shexp"), 0)
            : 0;

        int vocab;
        if (f.TryGetInt(p + "vocab_size", out int v)) vocab = v;
        else if (f.TryGetValue(TokensKey, out GgufValue? tokens)) vocab = tokens.ArrayLength;
        else if (f.TryGetTensor(GgufTensorNames.TokenEmbedding, out TensorView embd) && embd.Rank == 2) vocab = checked((int)Math.Min(embd.Shape[0], int.MaxValue));
        else throw new ModelFormatException(path, $"vocabulary size unknown: no {p}vocab_size, {TokensKey} or {GgufTensorNames.TokenEmbedding}");

        var eos = new List<int>();
        if (f.TryGetInt(EosTokenKey, out int eosId)) eos.Add(eosId);
        if (f.TryGetInt(EotTokenKey, out int eotId) && !eos.Contains(eotId)) eos.Add(eotId);

        var config = new ModelConfig
        {
            Architecture = arch,
            VocabSize = vocab,
            HiddenSize = hidden,
            NumLayers = f.GetInt(p + "block_count"),
            NumHeads = heads,
            NumKvHeads = kvHeads,
            HeadDim = headDim,
            NumExperts = experts,
            NumExpertsUsed = f.GetInt(p + "expert_used_count"),
            ExpertFfn = expertFfn,
            SharedExpertFfn = sharedFfn,
            NormTopKProb = f.TryGetBool(p + "expert_weights_norm", out bool norm) ? norm : DefaultNormTopKProb(arch),
            RmsNormEps = f.GetFloat(p + "attention.layer_norm_rms_epsilon"),
            RopeTheta = f.TryGetFloat(p + "rope.freq_base", out float theta) ? theta : DefaultRopeTheta,
            MaxContext = f.GetInt(p + "context_length"),
            TieWordEmbeddings = !f.HasTensor(GgufTensorNames.Output),
            AttentionBias = HasAttentionBias(arch),
            QkNorm = QkNormOf(arch),
            BosTokenId = f.TryGetInt(BosTokenKey, out int bos) ? bos : null,
            EosTokenIds = eos,
        };
        config.Validate(path);
        return config;
    }

    // The key's value, else dimension `dim` of the rank-3 expert tensor [E, F, D] / rank-2 shared tensor [F, D].
    private static int IntOrTensorDim(GgufFile f, string key, string tensorName, int dim)
    {
        if (f.TryGetInt(key, out int value)) return value;
        if (f.TryGetTensor(tensorName, out TensorView t) && dim < t.Rank && t.Shape[dim] <= int.MaxValue) return (int)t.Shape[dim];
        throw new ModelFormatException(f.Path, $"metadata key '{key}' is missing (and there is no {tensorName} to infer it from)");
    }

    /// <summary>
    /// Adds <c>general.architecture</c>, <c>general.name</c> (default: the HF model type) and the hyper-parameter keys
    /// llama.cpp needs for the architecture, plus <c>{arch}.vocab_size</c>, <c>{arch}.expert_weights_norm</c> when
    /// <see cref="ModelConfig.NormTopKProb"/> differs from llama.cpp's fixed choice (llama.cpp ignores that key for
    /// these architectures; Pregate honours it), and bos/eos ids (the first two <see cref="ModelConfig.EosTokenIds"/>
    /// as eos and eot; further ids have no GGUF key and are not written). Counts are UINT32 and floats FLOAT32, the
    /// types llama.cpp requires. Throws <see cref="ArgumentException"/> when the config fails
    /// <see cref="ModelConfig.Validate"/> or has features GGUF cannot express for its architecture (attention
    /// biases or a shared expert outside qwen2moe, a q/k norm other than the architecture's).
    /// </summary>
    public static void Write(GgufWriter w, ModelConfig c, string? name = null)
    {
        try { c.Validate(null); }
        catch (ModelFormatException e) { throw new ArgumentException($"invalid model config: {e.Message}", nameof(c), e); }
        Architecture arch = c.Architecture;
        if (c.AttentionBias != HasAttentionBias(arch))
            throw new ArgumentException($"{ArchitectureName(arch)} in GGUF {(HasAttentionBias(arch) ? "always has" : "cannot have")} attention biases", nameof(c));
        if ((c.SharedExpertFfn > 0) != HasSharedExpert(arch))
            throw new ArgumentException($"{ArchitectureName(arch)} in GGUF {(HasSharedExpert(arch) ? "needs" : "cannot have")} a shared expert", nameof(c));
        if (c.QkNorm != QkNormOf(arch))
            throw new ArgumentException($"{ArchitectureName(arch)} in GGUF has q/k norm {QkNormOf(arch)}, the config says {c.QkNorm}", nameof(c));

        string p = ArchitectureName(arch) + ".";
        w.AddString(ArchitectureKey, ArchitectureName(arch));
        w.AddString(NameKey, name ?? c.ModelType);
        w.AddUInt32(p + "context_length", (uint)c.MaxContext);
        w.AddUInt32(p + "embedding_length", (uint)c.HiddenSize);
        w.AddUInt32(p + "block_count", (uint)c.NumLayers);
        w.AddUInt32(p + "feed_forward_length", (uint)c.ExpertFfn);
        if (arch is Architecture.Qwen2Moe or Architecture.Qwen3Moe)
            w.AddUInt32(p + "expert_feed_forward_length", (uint)c.ExpertFfn);
        if (HasSharedExpert(arch))
            w.AddUInt32(p + "expert_shared_feed_forward_length", (uint)c.SharedExpertFfn);
        w.AddUInt32(p + "attention.head_count", (uint)c.NumHeads);
        w.AddUInt32(p + "attention.head_count_kv", (uint)c.NumKvHeads);
        if ((long)c.HeadDim * c.NumHeads != c.HiddenSize)
        {
            w.AddUInt32(p + "attention.key_length", (uint)c.HeadDim);
            w.AddUInt32(p + "attention.value_length", (uint)c.HeadDim);
        }
        w.AddUInt32(p + "rope.dimension_count", (uint)c.HeadDim);
        w.AddFloat32(p + "rope.freq_base", c.RopeTheta);
        w.AddFloat32(p + "attention.layer_norm_rms_epsilon", c.RmsNormEps);
        w.AddUInt32(p + "expert_count", (uint)c.NumExperts);
        w.AddUInt32(p + "expert_used_count", (uint)c.NumExpertsUsed);
        w.AddUInt32(p + "vocab_size", (uint)c.VocabSize);
        if (c.NormTopKProb != DefaultNormTopKProb(arch))
            w.AddBool(p + "expert_weights_norm", c.NormTopKProb);
        if (c.BosTokenId is int bos) w.AddUInt32(BosTokenKey, (uint)bos);
        if (c.EosTokenIds.Count > 0) w.AddUInt32(EosTokenKey, (uint)c.EosTokenIds[0]);
        if (c.EosTokenIds.Count > 1) w.AddUInt32(EotTokenKey, (uint)c.EosTokenIds[1]);
    }

    /// <summary>
    /// The tensors llama.cpp expects for <paramref name="c"/>, in the order its converters write them, with
    /// row-major shapes (GGUF ne reversed): token_embd [V, D]; per block attn_norm [D], attn_q [H·hd, D] (+ bias
    /// [H·hd] for qwen2moe), attn_k and attn_v [Hkv·hd, D] (+ biases), attn_output [D, H·hd], attn_q_norm /
    /// attn_k_norm ([hd] per head for qwen3moe; [H·hd] / [Hkv·hd] for olmoe, where llama.cpp needs Hkv·hd = D),
    /// ffn_norm [D], ffn_gate_inp [E, D], ffn_gate_exps and ffn_up_exps [E, F, D], ffn_down_exps [E, D, F], and for
    /// qwen2moe ffn_gate_inp_shexp [D], ffn_gate_shexp and ffn_up_shexp [Fs, D], ffn_down_shexp [D, Fs];
    /// then output_norm [D] and output [V, D] unless embeddings are tied.
    /// </summary>
    public static IReadOnlyList<(string Name, long[] Shape)> TensorShapes(ModelConfig c)
    {
        long d = c.HiddenSize, v = c.VocabSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        long e = c.NumExperts, ffn = c.ExpertFfn, shared = c.SharedExpertFfn;
        var list = new List<(string, long[])> { (GgufTensorNames.TokenEmbedding, [v, d]) };
        for (int i = 0; i < c.NumLayers; i++)
        {
            string B(string n) => GgufTensorNames.Block(i, n);
            list.Add((B("attn_norm"), [d]));
            list.Add((B("attn_q"), [q, d]));
            if (c.AttentionBias) list.Add((GgufTensorNames.BlockBias(i, "attn_q"), [q]));
            list.Add((B("attn_k"), [kv, d]));
            if (c.AttentionBias) list.Add((GgufTensorNames.BlockBias(i, "attn_k"), [kv]));
            list.Add((B("attn_v"), [kv, d]));
            if (c.AttentionBias) list.Add((GgufTensorNames.BlockBias(i, "attn_v"), [kv]));
            list.Add((B("attn_output"), [d, q]));
            if (c.QkNorm == QkNormKind.PerHead)
            {
                list.Add((B("attn_q_norm"), [c.HeadDim]));
                list.Add((B("attn_k_norm"), [c.HeadDim]));
            }
            else if (c.QkNorm == QkNormKind.Full)
            {
                list.Add((B("attn_q_norm"), [q]));
                list.Add((B("attn_k_norm"), [kv]));
            }
            list.Add((B("ffn_norm"), [d]));
            list.Add((B("ffn_gate_inp"), [e, d]));
            list.Add((B("ffn_gate_exps"), [e, ffn, d]));
            list.Add((B("ffn_up_exps"), [e, ffn, d]));
            list.Add((B("ffn_down_exps"), [e, d, ffn]));
            if (shared > 0)
            {
                list.Add((B("ffn_gate_inp_shexp"), [d]));
                list.Add((B("ffn_gate_shexp"), [shared, d]));
                list.Add((B("ffn_up_shexp"), [shared, d]));
                list.Add((B("ffn_down_shexp"), [d, shared]));
            }
        }
        list.Add((GgufTensorNames.OutputNorm, [d]));
        if (!c.TieWordEmbeddings) list.Add((GgufTensorNames.Output, [v, d]));
        return list;
    }
}

/// <summary>llama.cpp's GGUF tensor names (src/llama-arch.cpp, LLM_TENSOR_NAMES).</summary>
public static class GgufTensorNames
{
    public const string TokenEmbedding = "token_embd.weight";
    public const string OutputNorm = "output_norm.weight";
    public const string Output = "output.weight";

    /// <summary><c>blk.{layer}.{name}.weight</c>, e.g. Block(3, "ffn_gate_exps").</summary>
    public static string Block(int layer, string name) => $"blk.{layer}.{name}.weight";

    /// <summary><c>blk.{layer}.{name}.bias</c>.</summary>
    public static string BlockBias(int layer, string name) => $"blk.{layer}.{name}.bias";
}
