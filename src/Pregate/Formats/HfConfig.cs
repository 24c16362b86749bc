// Hugging Face config.json <-> ModelConfig for model_type mixtral, qwen2_moe, qwen3_moe and olmoe. Field names and
// defaults follow transformers' configuration_mixtral.py, configuration_qwen2_moe.py, configuration_qwen3_moe.py and
// configuration_olmoe.py; features the engine does not implement fail loudly instead of being ignored.
using System.Buffers;
using System.Globalization;
using System.Text.Json;
using Pregate.Core;

namespace Pregate.Formats;

public static class HfConfig
{
    /// <summary>File name of the config in a checkpoint folder.</summary>
    public const string FileName = "config.json";

    /// <summary>Largest config.json read (real ones are a few kilobytes).</summary>
    public const long MaxFileBytes = 16 << 20;

    /// <summary>The <c>model_type</c> values <see cref="Parse"/> accepts.</summary>
    public static IReadOnlyList<string> SupportedModelTypes { get; } = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"];

    /// <summary>Defaults of the transformers config class where a field is absent.</summary>
    private sealed record Defaults(float RmsNormEps, float RopeTheta, int MaxContext, int? Bos, int[] Eos);

    private static Defaults DefaultsOf(Architecture a) => a switch
    {
        Architecture.Mixtral => new(1e-5f, 1e6f, 4096 * 32, 1, [2]),
        Architecture.Qwen2Moe => new(1e-6f, 10000f, 32768, null, []),
        Architecture.Qwen3Moe => new(1e-6f, 10000f, 32768, null, []),
        Architecture.Olmoe => new(1e-5f, 10000f, 4096, null, [50279]),
        _ => throw new ArgumentOutOfRangeException(nameof(a)),
    };

    /// <summary>
    /// Reads and parses a config.json. Throws <see cref="ModelFormatException"/> naming the file when it is missing,
    /// unreadable, larger than <see cref="MaxFileBytes"/>, or when <see cref="Parse"/> rejects it.
    /// </summary>
    public static ModelConfig Load(string configJsonPath)
    {
        string text;
        try
        {
            var info = new FileInfo(configJsonPath);
            if (!info.Exists) throw new ModelFormatException(configJsonPath, "file not found");
            if (info.Length > MaxFileBytes)
                throw new ModelFormatException(configJsonPath, $"config is {info.Length} bytes, more than the limit of {MaxFileBytes}");
            text = File.ReadAllText(configJsonPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelFormatException(configJsonPath, $"cannot read config: {e.Message}", e);
        }
        return Parse(text, configJsonPath);
    }

    /// <summary>
    /// Maps a config.json text to a <see cref="ModelConfig"/> and validates it. Absent optional fields take the defaults
    /// of the transformers config class; the sizes (vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
    /// expert counts and widths) are required. Throws <see cref="ModelFormatException"/> naming
    /// <paramref name="fileNameForErrors"/> and the field for invalid JSON, a missing or mistyped field, an unknown
    /// model_type, values <see cref="ModelConfig.Validate"/> rejects, and features not implemented yet: rope_scaling,
    /// sliding-window attention, decoder_sparse_step ≠ 1, mlp_only_layers, clip_qkv, hidden_act other than silu,
    /// attention_bias on qwen3_moe/olmoe.
    /// </summary>
    public static ModelConfig Parse(string json, string fileNameForErrors)
    {
        string file = fileNameForErrors;
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 64 });
        }
        catch (JsonException e)
        {
            throw new ModelFormatException(file, $"config is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new ModelFormatException(file, $"config must be a JSON object, found {Kind(doc.RootElement)}");
            var f = new Fields(doc.RootElement, file);
            var config = Build(f, file);
            config.Validate(file);
            return config;
        }
    }

    private static ModelConfig Build(Fields f, string file)
    {
        string modelType = f.String("model_type") ?? throw new ModelFormatException(file, "missing field 'model_type'");
        Architecture arch = modelType switch
        {
            "mixtral" => Architecture.Mixtral,
            "qwen2_moe" => Architecture.Qwen2Moe,
            "qwen3_moe" => Architecture.Qwen3Moe,
            "olmoe" => Architecture.Olmoe,
            _ => throw new ModelFormatException(file, $"unsupported model_type '{modelType}' (supported: {string.Join(", ", SupportedModelTypes)})"),
        };
        var defaults = DefaultsOf(arch);
        bool isQwen = arch is Architecture.Qwen2Moe or Architecture.Qwen3Moe;

        string? act = f.String("hidden_act");
        if (act is not null && act != "silu")
            throw new ModelFormatException(file, $"hidden_act '{act}' is not supported (only silu)");

        int hidden = f.RequiredInt("hidden_size");
        int heads = f.RequiredInt("num_attention_heads");
        if (heads <= 0) throw new ModelFormatException(file, $"num_attention_heads = {heads} must be positive");
        int headDim = f.Int("head_dim") ?? (hidden % heads == 0
            ? hidden / heads
            : throw new ModelFormatException(file, $"hidden_size = {hidden} is not a multiple of num_attention_heads = {heads} and head_dim is not given"));

        int experts = arch == Architecture.Mixtral
            ? f.IntEither("num_local_experts", "num_experts")
            : f.IntEither("num_experts", "num_local_experts");
        int expertFfn = isQwen ? f.RequiredInt("moe_intermediate_size") : f.RequiredInt("intermediate_size");
        int sharedFfn = arch == Architecture.Qwen2Moe ? f.RequiredInt("shared_expert_intermediate_size") : 0;

        // Mixtral always renormalises its top-k weights (no config field); the others read norm_topk_prob (default false).
        bool normTopK = arch == Architecture.Mixtral || (f.Bool("norm_topk_prob") ?? false);

        bool attentionBias = false;
        if (arch == Architecture.Qwen2Moe)
        {
            attentionBias = f.Bool("qkv_bias") ?? true; // q/k/v carry biases, o_proj does not
        }
        else if ((arch is Architecture.Qwen3Moe or Architecture.Olmoe) && (f.Bool("attention_bias") ?? false))
        {
            // There attention_bias also puts a bias on o_proj, which the engine does not model.
            throw new ModelFormatException(file, $"attention_bias = true is not supported yet for {modelType}");
        }

        int maxContext = f.Int("max_position_embeddings") ?? defaults.MaxContext;
        CheckUnsupported(f, arch, maxContext, file);

        return new ModelConfig
        {
            Architecture = arch,
            VocabSize = f.RequiredInt("vocab_size"),
            HiddenSize = hidden,
            NumLayers = f.RequiredInt("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = f.Int("num_key_value_heads") ?? heads,
            HeadDim = headDim,
            NumExperts = experts,
            NumExpertsUsed = f.RequiredInt("num_experts_per_tok"),
            ExpertFfn = expertFfn,
            SharedExpertFfn = sharedFfn,
            NormTopKProb = normTopK,
            RmsNormEps = f.Float("rms_norm_eps") ?? defaults.RmsNormEps,
            RopeTheta = ReadRopeTheta(f, file) ?? defaults.RopeTheta,
            MaxContext = maxContext,
            TieWordEmbeddings = f.Bool("tie_word_embeddings") ?? false,
            AttentionBias = attentionBias,
            QkNorm = arch switch
            {
                Architecture.Qwen3Moe => QkNormKind.PerHead,
                Architecture.Olmoe => QkNormKind.Full,
                _ => QkNormKind.None,
            },
            BosTokenId = f.Has("bos_token_id") ? f.Int("bos_token_id") : defaults.Bos,
            EosTokenIds = f.Has("eos_token_id") ? f.IntOrIntList("eos_token_id") : defaults.Eos,
        };
    }

    /// <summary>Fails on config features that would change the math if silently ignored.</summary>
    private static void CheckUnsupported(Fields f, Architecture arch, int maxContext, string file)
    {
        if (f.TryGet("rope_scaling", out var scaling))
        {
            string type = RopeType(scaling, "rope_scaling", file);
            if (type != "default") throw new ModelFormatException(file, $"rope_scaling is not supported yet (rope_type '{type}')");
        }
        if (arch is Architecture.Qwen2Moe or Architecture.Qwen3Moe)
        {
            int step = f.Int("decoder_sparse_step") ?? 1;
            if (step != 1)
                throw new ModelFormatException(file, $"decoder_sparse_step = {step} is not supported yet (every layer must be a sparse MoE layer)");
            if (f.TryGet("mlp_only_layers", out var dense))
            {
                if (dense.ValueKind != JsonValueKind.Array)
                    throw new ModelFormatException(file, $"field 'mlp_only_layers' must be a list of layer numbers, found {Kind(dense)}");
                if (dense.GetArrayLength() > 0)
                    throw new ModelFormatException(file, $"mlp_only_layers {dense.GetRawText()} is not supported yet (every layer must be a sparse MoE layer)");
            }
            if (f.Bool("use_sliding_window") == true)
                throw new ModelFormatException(file, "sliding_window attention (use_sliding_window = true) is not supported yet");
        }
        if (arch == Architecture.Mixtral && f.Int("sliding_window") is int window && window < maxContext)
            throw new ModelFormatException(file, $"sliding_window = {window} is not supported yet (it is shorter than max_position_embeddings = {maxContext})");
        if (f.TryGet("layer_types", out var layerTypes))
        {
            if (layerTypes.ValueKind != JsonValueKind.Array)
                throw new ModelFormatException(file, $"field 'layer_types' must be a list of strings, found {Kind(layerTypes)}");
            foreach (var t in layerTypes.EnumerateArray())
                if (t.ValueKind != JsonValueKind.String || t.GetString() != "full_attention")
                    throw new ModelFormatException(file, $"layer_types entry {t.GetRawText()} is not supported yet (only full_attention)");
        }
        if (arch == Architecture.Olmoe && f.TryGet("clip_qkv", out var clip))
            throw new ModelFormatException(file, $"clip_qkv = {clip.GetRawText()} is not supported yet");
    }

    /// <summary>rope_theta, or rope_parameters.rope_theta as newer transformers write it; null when neither is given.</summary>
    private static float? ReadRopeTheta(Fields f, string file)
    {
        if (f.TryGet("rope_parameters", out var p))
        {
            string type = RopeType(p, "rope_parameters", file);
            if (type != "default") throw new ModelFormatException(file, $"rope_scaling is not supported yet (rope_parameters.rope_type '{type}')");
            var inner = new Fields(p, file, "rope_parameters.");
            if (inner.Float("rope_theta") is float t) return t;
        }
        return f.Float("rope_theta");
    }

    private static string RopeType(JsonElement e, string field, string file)
    {
        if (e.ValueKind != JsonValueKind.Object)
            throw new ModelFormatException(file, $"field '{field}' must be an object or null, found {Kind(e)}");
        var inner = new Fields(e, file, field + ".");
        return inner.String("rope_type") ?? inner.String("type") ?? "default";
    }

    /// <summary>
    /// A config.json that transformers loads as <see cref="ModelConfig.ModelType"/> (keys sorted, indented by 2, like
    /// save_pretrained). <paramref name="weightType"/> sets torch_dtype (F32, F16 or BF16). Throws
    /// <see cref="ArgumentException"/> when the config is invalid or has a feature its model_type cannot express
    /// (e.g. a shared expert on Mixtral, q/k norm on Qwen2-MoE).
    /// </summary>
    public static string ToJson(ModelConfig config, DType weightType = DType.BF16)
    {
        try
        {
            config.Validate(null);
        }
        catch (ModelFormatException e)
        {
            throw new ArgumentException(e.Message, nameof(config), e);
        }
        string torchDtype = weightType switch
        {
            DType.F32 => "float32",
            DType.F16 => "float16",
            DType.BF16 => "bfloat16",
            _ => throw new ArgumentException($"torch_dtype cannot be {DTypes.Name(weightType)} (use f32, f16 or bf16)", nameof(weightType)),
        };
        var arch = config.Architecture;
        void Require(bool ok, string what)
        {
            if (!ok) throw new ArgumentException($"{config.ModelType} cannot express {what}", nameof(config));
        }
        Require(arch == Architecture.Qwen2Moe || config.SharedExpertFfn == 0, "a shared expert");
        Require(arch == Architecture.Qwen2Moe || !config.AttentionBias, "attention biases");
        Require(arch != Architecture.Mixtral || config.NormTopKProb, "router weights without renormalisation");
        Require(config.QkNorm == arch switch
        {
            Architecture.Qwen3Moe => QkNormKind.PerHead,
            Architecture.Olmoe => QkNormKind.Full,
            _ => QkNormKind.None,
        }, $"q/k norm {config.QkNorm}");

        var fields = new SortedDictionary<string, Action<Utf8JsonWriter>>(StringComparer.Ordinal);
        void Int(string k, int v) => fields[k] = w => w.WriteNumberValue(v);
        void Bool(string k, bool v) => fields[k] = w => w.WriteBooleanValue(v);
        void Float(string k, float v) => fields[k] = w => w.WriteRawValue(PythonFloat(v));
        void Str(string k, string v) => fields[k] = w => w.WriteStringValue(v);
        void Null(string k) => fields[k] = w => w.WriteNullValue();

        fields["architectures"] = w =>
        {
            w.WriteStartArray();
            w.WriteStringValue(arch switch
            {
                Architecture.Mixtral => "MixtralForCausalLM",
                Architecture.Qwen2Moe => "Qwen2MoeForCausalLM",
                Architecture.Qwen3Moe => "Qwen3MoeForCausalLM",
                _ => "OlmoeForCausalLM",
            });
            w.WriteEndArray();
        };
        Str("model_type", config.ModelType);
        Str("torch_dtype", torchDtype);
        Str("hidden_act", "silu");
        Int("vocab_size", config.VocabSize);
        Int("hidden_size", config.HiddenSize);
        Int("num_hidden_layers", config.NumLayers);
        Int("num_attention_heads", config.NumHeads);
        Int("num_key_value_heads", config.NumKvHeads);
        Int("head_dim", config.HeadDim);
        Int("num_experts_per_tok", config.NumExpertsUsed);
        Int("max_position_embeddings", config.MaxContext);
        Float("rms_norm_eps", config.RmsNormEps);
        Float("rope_theta", config.RopeTheta);
        Null("rope_scaling");
        Bool("tie_word_embeddings", config.TieWordEmbeddings);
        Bool("use_cache", true);
        fields["attention_dropout"] = w => w.WriteRawValue("0.0");
        fields["initializer_range"] = w => w.WriteRawValue("0.02");
        if (config.BosTokenId is int bos) Int("bos_token_id", bos); else Null("bos_token_id");
        fields["eos_token_id"] = w =>
        {
            if (config.EosTokenIds.Count == 0) w.WriteNullValue();
            else if (config.EosTokenIds.Count == 1) w.WriteNumberValue(config.EosTokenIds[0]);
            else
            {
                w.WriteStartArray();
                foreach (int e in config.EosTokenIds) w.WriteNumberValue(e);
                w.WriteEndArray();
            }
        };
        switch (arch)
        {
            case Architecture.Mixtral:
                Int("intermediate_size", config.ExpertFfn);
                Int("num_local_experts", config.NumExperts);
                Null("sliding_window");
                break;
            case Architecture.Qwen2Moe:
            case Architecture.Qwen3Moe:
                // intermediate_size sizes the dense MLP of mlp_only_layers, which these configs do not use.
                Int("intermediate_size", config.SharedExpertFfn > 0 ? config.SharedExpertFfn : config.ExpertFfn);
                Int("moe_intermediate_size", config.ExpertFfn);
                Int("num_experts", config.NumExperts);
                Bool("norm_topk_prob", config.NormTopKProb);
                Int("decoder_sparse_step", 1);
                fields["mlp_only_layers"] = w => { w.WriteStartArray(); w.WriteEndArray(); };
                Bool("use_sliding_window", false);
                Null("sliding_window");
                if (arch == Architecture.Qwen2Moe)
                {
                    Int("shared_expert_intermediate_size", config.SharedExpertFfn);
                    Bool("qkv_bias", config.AttentionBias);
                }
                else
                {
                    Bool("attention_bias", false);
                }
                break;
            case Architecture.Olmoe:
                Int("intermediate_size", config.ExpertFfn);
                Int("num_experts", config.NumExperts);
                Bool("norm_topk_prob", config.NormTopKProb);
                Bool("attention_bias", false);
                Null("clip_qkv");
                break;
        }

        var buffer = new ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            foreach (var (key, write) in fields)
            {
                w.WritePropertyName(key);
                write(w);
            }
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan) + "\n";
    }

    /// <summary>A float as Python's json writes it: shortest round-trip digits, always with a '.' or exponent (1e-05, 1000000.0).</summary>
    private static string PythonFloat(float v)
    {
        string s = v.ToString("R", CultureInfo.InvariantCulture).Replace('E', 'e');
        return s.Contains('.') || s.Contains('e') ? s : s + ".0";
    }

    private static string Kind(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "a list",
        JsonValueKind.String => $"the string {e.GetRawText()}",
        JsonValueKind.Number => $"the number {e.GetRawText()}",
        JsonValueKind.True or JsonValueKind.False => $"the boolean {e.GetRawText()}",
        _ => "null",
    };

    /// <summary>Typed access to the fields of one JSON object; errors name the file and the field.</summary>
    private sealed class Fields(JsonElement obj, string file, string prefix = "")
    {
        /// <summary>True when the key is present, even with a null value.</summary>
        public bool Has(string name) => obj.TryGetProperty(name, out _);

        /// <summary>The value when present and not null.</summary>
        public bool TryGet(string name, out JsonElement value) =>
            obj.TryGetProperty(name, out value) && value.ValueKind != JsonValueKind.Null;

        public int RequiredInt(string name) =>
            Int(name) ?? throw new ModelFormatException(file, $"missing field '{prefix}{name}'");

        public int? Int(string name) => TryGet(name, out var v) ? AsInt(v, name) : null;

        /// <summary>A required integer that a config class may store under either of two names.</summary>
        public int IntEither(string name, string alias)
        {
            int? a = Int(name), b = Int(alias);
            if (a is int x && b is int y && x != y)
                throw new ModelFormatException(file, $"fields '{prefix}{name}' = {x} and '{prefix}{alias}' = {y} disagree");
            return a ?? b ?? throw new ModelFormatException(file, $"missing field '{prefix}{name}'");
        }

        public bool? Bool(string name)
        {
            if (!TryGet(name, out var v)) return null;
            return v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new ModelFormatException(file, $"field '{prefix}{name}' must be true or false, found {Kind(v)}"),
            };
        }

        public float? Float(string name)
        {
            if (!TryGet(name, out var v)) return null;
            if (v.ValueKind != JsonValueKind.Number)
                throw new ModelFormatException(file, $"field '{prefix}{name}' must be a number, found {Kind(v)}");
            if (!v.TryGetSingle(out float f) || !float.IsFinite(f))
                throw new ModelFormatException(file, $"field '{prefix}{name}' = {v.GetRawText()} is outside the float range");
            return f;
        }

        public string? String(string name)
        {
            if (!TryGet(name, out var v)) return null;
            return v.ValueKind == JsonValueKind.String
                ? v.GetString()
                : throw new ModelFormatException(file, $"field '{prefix}{name}' must be a string, found {Kind(v)}");
        }

        /// <summary>An integer, a list of integers, or null (empty list).</summary>
        public int[] IntOrIntList(string name)
        {
            if (!TryGet(name, out var v)) return [];
            if (v.ValueKind == JsonValueKind.Array)
                return v.EnumerateArray().Select(e => AsInt(e, name)).ToArray();
            return [AsInt(v, name)];
        }

        private int AsInt(JsonElement v, string name)
        {
            if (v.ValueKind != JsonValueKind.Number)
                throw new ModelFormatException(file, $"field '{prefix}{name}' must be an integer, found {Kind(v)}");
            if (!v.TryGetInt32(out int i))
                throw new ModelFormatException(file, $"field '{prefix}{name}' = {v.GetRawText()} is not a 32-bit integer");
            return i;
        }
    }
}
