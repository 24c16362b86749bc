// HF config.json parsing for the four MoE families, from the published configs of real checkpoints, plus
// ToJson → Parse round trips and named bad configs that must fail with ModelFormatException naming the field.
using System.Text.Json;
using System.Text.Json.Nodes;
using Pregate.Core;
using Pregate.Formats;
using Xunit.Abstractions;

namespace Pregate.Tests.Safetensors;

public sealed class HfConfigTests(ITestOutputHelper output)
{
    // mistralai/Mixtral-8x7B-v0.1 config.json
    private const string Mixtral8x7B = """
        {
          "architectures": ["MixtralForCausalLM"],
          "attention_dropout": 0.0,
          "bos_token_id": 1,
          "eos_token_id": 2,
          "hidden_act": "silu",
          "hidden_size": 4096,
          "initializer_range": 0.02,
          "intermediate_size": 14336,
          "max_position_embeddings": 32768,
          "model_type": "mixtral",
          "num_attention_heads": 32,
          "num_experts_per_tok": 2,
          "num_hidden_layers": 32,
          "num_key_value_heads": 8,
          "num_local_experts": 8,
          "output_router_logits": false,
          "rms_norm_eps": 1e-05,
          "rope_theta": 1000000.0,
          "router_aux_loss_coef": 0.02,
          "sliding_window": null,
          "tie_word_embeddings": false,
          "torch_dtype": "bfloat16",
          "transformers_version": "4.36.0.dev0",
          "use_cache": true,
          "vocab_size": 32000
        }
        """;

    // Qwen/Qwen1.5-MoE-A2.7B config.json
    private const string Qwen15MoeA27B = """
        {
          "architectures": ["Qwen2MoeForCausalLM"],
          "attention_dropout": 0.0,
          "bos_token_id": 151643,
          "eos_token_id": 151643,
          "hidden_act": "silu",
          "hidden_size": 2048,
          "initializer_range": 0.02,
          "intermediate_size": 5632,
          "max_position_embeddings": 8192,
          "max_window_layers": 21,
          "model_type": "qwen2_moe",
          "num_attention_heads": 16,
          "num_hidden_layers": 24,
          "num_key_value_heads": 16,
          "rms_norm_eps": 1e-06,
          "rope_theta": 1000000.0,
          "sliding_window": 32768,
          "tie_word_embeddings": false,
          "torch_dtype": "bfloat16",
          "transformers_version": "4.39.0.dev0",
          "use_cache": true,
          "use_sliding_window": false,
          "vocab_size": 151936,
          "decoder_sparse_step": 1,
          "moe_intermediate_size": 1408,
          "shared_expert_intermediate_size": 5632,
          "num_experts_per_tok": 4,
          "num_experts": 60,
          "norm_topk_prob": false,
          "output_router_logits": false,
          "router_aux_loss_coef": 0.001
        }
        """;

    // Qwen/Qwen3-30B-A3B config.json
    private const string Qwen3A3B = """
        {
          "architectures": ["Qwen3MoeForCausalLM"],
          "attention_bias": false,
          "attention_dropout": 0.0,
          "bos_token_id": 151643,
          "decoder_sparse_step": 1,
          "eos_token_id": 151645,
          "head_dim": 128,
          "hidden_act": "silu",
          "hidden_size": 2048,
          "initializer_range": 0.02,
          "intermediate_size": 6144,
          "max_position_embeddings": 40960,
          "max_window_layers": 48,
          "mlp_only_layers": [],
          "model_type": "qwen3_moe",
          "moe_intermediate_size": 768,
          "norm_topk_prob": true,
          "num_attention_heads": 32,
          "num_experts": 128,
          "num_experts_per_tok": 8,
          "num_hidden_layers": 48,
          "num_key_value_heads": 4,
          "output_router_logits": false,
          "rms_norm_eps": 1e-06,
          "rope_scaling": null,
          "rope_theta": 1000000.0,
          "router_aux_loss_coef": 0.001,
          "sliding_window": null,
          "tie_word_embeddings": false,
          "torch_dtype": "bfloat16",
          "transformers_version": "4.51.0",
          "use_cache": true,
          "use_sliding_window": false,
          "vocab_size": 151936
        }
        """;

    // allenai/OLMoE-1B-7B-0924 config.json
    private const string Olmoe1B7B = """
        {
          "architectures": ["OlmoeForCausalLM"],
          "attention_bias": false,
          "attention_dropout": 0.0,
          "clip_qkv": null,
          "eos_token_id": 50279,
          "hidden_act": "silu",
          "hidden_size": 2048,
          "initializer_range": 0.02,
          "intermediate_size": 1024,
          "max_position_embeddings": 4096,
          "model_type": "olmoe",
          "norm_topk_prob": false,
          "num_attention_heads": 16,
          "num_experts": 64,
          "num_experts_per_tok": 8,
          "num_hidden_layers": 16,
          "num_key_value_heads": 16,
          "output_router_logits": false,
          "pad_token_id": 1,
          "rms_norm_eps": 1e-05,
          "rope_scaling": null,
          "rope_theta": 10000.0,
          "router_aux_loss_coef": 0.01,
          "tie_word_embeddings": false,
          "torch_dtype": "bfloat16",
          "transformers_version": "4.43.0.dev0",
          "use_cache": true,
          "vocab_size": 50304
        }
        """;

    public static TheoryData<string> RealConfigs => new() { nameof(Mixtral8x7B), nameof(Qwen15MoeA27B), nameof(Qwen3A3B), nameof(Olmoe1B7B) };

    private static string ConfigText(string name) => name switch
    {
        nameof(Mixtral8x7B) => Mixtral8x7B,
        nameof(Qwen15MoeA27B) => Qwen15MoeA27B,
        nameof(Qwen3A3B) => Qwen3A3B,
        _ => Olmoe1B7B,
    };

    [Fact]
    public void Mixtral8x7BParses()
    {
        var c = HfConfig.Parse(Mixtral8x7B, "mixtral/config.json");
        Assert.Equal(Architecture.Mixtral, c.Architecture);
        Assert.Equal(32000, c.VocabSize);
        Assert.Equal(4096, c.HiddenSize);
        Assert.Equal(32, c.NumLayers);
        Assert.Equal(32, c.NumHeads);
        Assert.Equal(8, c.NumKvHeads);
        Assert.Equal(128, c.HeadDim);
        Assert.Equal(8, c.NumExperts);
        Assert.Equal(2, c.NumExpertsUsed);
        Assert.Equal(14336, c.ExpertFfn);
        Assert.Equal(0, c.SharedExpertFfn);
        Assert.True(c.NormTopKProb);
        Assert.Equal(1e-5f, c.RmsNormEps);
        Assert.Equal(1e6f, c.RopeTheta);
        Assert.Equal(32768, c.MaxContext);
        Assert.False(c.TieWordEmbeddings);
        Assert.False(c.AttentionBias);
        Assert.Equal(QkNormKind.None, c.QkNorm);
        Assert.Equal(1, c.BosTokenId);
        Assert.Equal([2], c.EosTokenIds);
    }

    [Fact]
    public void Qwen15MoeA27BParses()
    {
        var c = HfConfig.Parse(Qwen15MoeA27B, "qwen2moe/config.json");
        Assert.Equal(Architecture.Qwen2Moe, c.Architecture);
        Assert.Equal(151936, c.VocabSize);
        Assert.Equal(2048, c.HiddenSize);
        Assert.Equal(24, c.NumLayers);
        Assert.Equal(16, c.NumHeads);
        Assert.Equal(16, c.NumKvHeads);
        Assert.Equal(128, c.HeadDim);
        Assert.Equal(60, c.NumExperts);
        Assert.Equal(4, c.NumExpertsUsed);
        Assert.Equal(1408, c.ExpertFfn);
        Assert.Equal(5632, c.SharedExpertFfn);
        Assert.False(c.NormTopKProb);
        Assert.Equal(1e-6f, c.RmsNormEps);
        Assert.Equal(1e6f, c.RopeTheta);
        Assert.Equal(8192, c.MaxContext);
        Assert.True(c.AttentionBias);
        Assert.Equal(QkNormKind.None, c.QkNorm);
        Assert.Equal(151643, c.BosTokenId);
        Assert.Equal([151643], c.EosTokenIds);
    }

    [Fact]
    public void Qwen3A3BParses()
    {
        var c = HfConfig.Parse(Qwen3A3B, "qwen3moe/config.json");
        Assert.Equal(Architecture.Qwen3Moe, c.Architecture);
        Assert.Equal(151936, c.VocabSize);
        Assert.Equal(2048, c.HiddenSize);
        Assert.Equal(48, c.NumLayers);
        Assert.Equal(32, c.NumHeads);
        Assert.Equal(4, c.NumKvHeads);
        Assert.Equal(128, c.HeadDim); // explicit: differs from hidden / heads = 64
        Assert.Equal(128, c.NumExperts);
        Assert.Equal(8, c.NumExpertsUsed);
        Assert.Equal(768, c.ExpertFfn);
        Assert.Equal(0, c.SharedExpertFfn);
        Assert.True(c.NormTopKProb);
        Assert.Equal(1e-6f, c.RmsNormEps);
        Assert.Equal(1e6f, c.RopeTheta);
        Assert.Equal(40960, c.MaxContext);
        Assert.False(c.AttentionBias);
        Assert.Equal(QkNormKind.PerHead, c.QkNorm);
        Assert.Equal(151643, c.BosTokenId);
        Assert.Equal([151645], c.EosTokenIds);
    }

    [Fact]
    public void Olmoe1B7BParses()
    {
        var c = HfConfig.Parse(Olmoe1B7B, "olmoe/config.json");
        Assert.Equal(Architecture.Olmoe, c.Architecture);
        Assert.Equal(50304, c.VocabSize);
        Assert.Equal(2048, c.HiddenSize);
        Assert.Equal(16, c.NumLayers);
        Assert.Equal(16, c.NumHeads);
        Assert.Equal(16, c.NumKvHeads);
        Assert.Equal(128, c.HeadDim);
        Assert.Equal(64, c.NumExperts);
        Assert.Equal(8, c.NumExpertsUsed);
        Assert.Equal(1024, c.ExpertFfn);
        Assert.False(c.NormTopKProb);
        Assert.Equal(1e-5f, c.RmsNormEps);
        Assert.Equal(10000f, c.RopeTheta);
        Assert.Equal(4096, c.MaxContext);
        Assert.False(c.AttentionBias);
        Assert.Equal(QkNormKind.Full, c.QkNorm);
        Assert.Null(c.BosTokenId); // absent; OlmoeConfig's default is None
        Assert.Equal([50279], c.EosTokenIds);
    }

    [Fact]
    public void LoadReadsAFile()
    {
        string path = Path.Combine(Directory.CreateTempSubdirectory("pregate-cfg-").FullName, "config.json");
        try
        {
            File.WriteAllText(path, Qwen3A3B);
            Assert.Equal(Architecture.Qwen3Moe, HfConfig.Load(path).Architecture);
        }
        finally
        {
            Directory.Delete(Path.GetDirectoryName(path)!, true);
        }
    }

    [Fact]
    public void LoadOfAMissingFileNamesIt()
    {
        var e = Assert.Throws<ModelFormatException>(() => HfConfig.Load("/nonexistent/dir/config.json"));
        Assert.Equal("/nonexistent/dir/config.json", e.FilePath);
        Assert.Contains("not found", e.Message);
    }

    [Theory]
    [MemberData(nameof(RealConfigs))]
    public void ToJsonThenParseGivesTheSameConfig(string name)
    {
        var c = HfConfig.Parse(ConfigText(name), name);
        string json = HfConfig.ToJson(c);
        output.WriteLine(json);
        var back = HfConfig.Parse(json, "roundtrip.json");
        AssertSame(c, back);

        using var doc = JsonDocument.Parse(json);
        Assert.Equal(c.ModelType, doc.RootElement.GetProperty("model_type").GetString());
        Assert.Equal("bfloat16", doc.RootElement.GetProperty("torch_dtype").GetString());
        string arch = doc.RootElement.GetProperty("architectures")[0].GetString()!;
        Assert.EndsWith("ForCausalLM", arch);
        var keys = doc.RootElement.EnumerateObject().Select(p => p.Name).ToList();
        Assert.Equal(keys.Order(StringComparer.Ordinal), keys); // sorted like save_pretrained
    }

    [Fact]
    public void ToJsonWritesFloatsAsPythonDoes()
    {
        string json = HfConfig.ToJson(HfConfig.Parse(Mixtral8x7B, "m"), DType.F32);
        Assert.Contains("\"rms_norm_eps\": 1e-05", json);
        Assert.Contains("\"rope_theta\": 1000000.0", json);
        Assert.Contains("\"torch_dtype\": \"float32\"", json);
        Assert.Contains("\"architectures\": [", json);
    }

    [Fact]
    public void ToJsonRoundTripsSeveralEosIdsAndNoBos()
    {
        var c = HfConfig.Parse(Qwen3A3B, "q") with { EosTokenIds = [151645, 151643], BosTokenId = null, TieWordEmbeddings = true, NormTopKProb = false };
        var back = HfConfig.Parse(HfConfig.ToJson(c), "q");
        AssertSame(c, back);
    }

    [Fact]
    public void ToJsonRejectsAFeatureTheFamilyCannotExpress()
    {
        var mixtral = HfConfig.Parse(Mixtral8x7B, "m");
        Assert.Throws<ArgumentException>(() => HfConfig.ToJson(mixtral with { SharedExpertFfn = 128 }));
        Assert.Throws<ArgumentException>(() => HfConfig.ToJson(mixtral with { QkNorm = QkNormKind.PerHead }));
        Assert.Throws<ArgumentException>(() => HfConfig.ToJson(mixtral with { NormTopKProb = false }));
        Assert.Throws<ArgumentException>(() => HfConfig.ToJson(mixtral, DType.Q8_0));
        Assert.Throws<ArgumentException>(() => HfConfig.ToJson(mixtral with { NumExpertsUsed = 9 }));
    }

    [Fact]
    public void AbsentOptionalFieldsTakeTheConfigClassDefaults()
    {
        var c = HfConfig.Parse("""
            {"model_type": "olmoe", "vocab_size": 50304, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2}
            """, "min.json");
        Assert.Equal(4, c.NumKvHeads);
        Assert.Equal(16, c.HeadDim);
        Assert.Equal(1e-5f, c.RmsNormEps);
        Assert.Equal(10000f, c.RopeTheta);
        Assert.Equal(4096, c.MaxContext);
        Assert.False(c.NormTopKProb);
        Assert.False(c.TieWordEmbeddings);
        Assert.Null(c.BosTokenId);
        Assert.Equal([50279], c.EosTokenIds);
    }

    [Fact]
    public void RopeParametersOfNewerTransformersAreRead()
    {
        var node = JsonNode.Parse(Qwen3A3B)!.AsObject();
        node.Remove("rope_theta");
        node.Remove("rope_scaling");
        node["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 5000000.0 };
        Assert.Equal(5e6f, HfConfig.Parse(node.ToJsonString(), "v5.json").RopeTheta);
    }

    private static void AssertSame(ModelConfig expected, ModelConfig actual)
    {
        Assert.Equal(expected with { EosTokenIds = [] }, actual with { EosTokenIds = [] });
        Assert.Equal(expected.EosTokenIds, actual.EosTokenIds);
    }

    // ---- named bad configs --------------------------------------------------------------------------------

    /// <summary>Qwen3-30B-A3B with one field replaced (raw JSON value) or removed (null value → key dropped).</summary>
    private static string Edit(string baseJson, string field, string? rawValue)
    {
        var node = JsonNode.Parse(baseJson)!.AsObject();
        if (rawValue is null) node.Remove(field);
        else node[field] = JsonNode.Parse(rawValue);
        return node.ToJsonString();
    }

    private void Rejected(string json, params string[] expected)
    {
        var e = Assert.Throws<ModelFormatException>(() => HfConfig.Parse(json, "bad/config.json"));
        output.WriteLine(e.Message);
        Assert.Equal("bad/config.json", e.FilePath);
        foreach (string s in expected) Assert.Contains(s, e.Message);
    }

    [Fact]
    public void InvalidJson() => Rejected("{\"model_type\": \"olmoe\",", "not valid JSON");

    [Fact]
    public void JsonArrayInsteadOfObject() => Rejected("[1, 2]", "must be a JSON object");

    [Fact]
    public void MissingModelType() => Rejected(Edit(Qwen3A3B, "model_type", null), "missing field 'model_type'");

    [Fact]
    public void UnknownModelType() =>
        Rejected(Edit(Qwen3A3B, "model_type", "\"llama\""), "unsupported model_type 'llama' (supported: mixtral, qwen2_moe, qwen3_moe, olmoe)");

    [Fact]
    public void ModelTypeIsNotAString() => Rejected(Edit(Qwen3A3B, "model_type", "3"), "'model_type' must be a string");

    [Fact]
    public void HiddenSizeIsAString() => Rejected(Edit(Qwen3A3B, "hidden_size", "\"2048\""), "'hidden_size' must be an integer");

    [Fact]
    public void HiddenSizeIsAFraction() => Rejected(Edit(Qwen3A3B, "hidden_size", "2048.5"), "'hidden_size'", "not a 32-bit integer");

    [Fact]
    public void VocabSizeBeyondInt32() => Rejected(Edit(Qwen3A3B, "vocab_size", "99999999999"), "'vocab_size'");

    [Fact]
    public void MissingHiddenSize() => Rejected(Edit(Qwen3A3B, "hidden_size", null), "missing field 'hidden_size'");

    [Fact]
    public void MissingExpertCount() => Rejected(Edit(Qwen3A3B, "num_experts", null), "missing field 'num_experts'");

    [Fact]
    public void MissingMoeIntermediateSize() => Rejected(Edit(Qwen3A3B, "moe_intermediate_size", null), "missing field 'moe_intermediate_size'");

    [Fact]
    public void MissingSharedExpertSizeOnQwen2Moe() =>
        Rejected(Edit(Qwen15MoeA27B, "shared_expert_intermediate_size", null), "missing field 'shared_expert_intermediate_size'");

    [Fact]
    public void NegativeLayerCount() => Rejected(Edit(Qwen3A3B, "num_hidden_layers", "-4"), "num_hidden_layers = -4");

    [Fact]
    public void ZeroAttentionHeads() => Rejected(Edit(Qwen3A3B, "num_attention_heads", "0"), "num_attention_heads = 0");

    [Fact]
    public void TopKAboveExpertCount() => Rejected(Edit(Olmoe1B7B, "num_experts_per_tok", "65"), "num_experts_per_tok = 65");

    [Fact]
    public void HeadsNotAMultipleOfKvHeads() => Rejected(Edit(Qwen3A3B, "num_key_value_heads", "5"), "not a multiple of num_key_value_heads");

    [Fact]
    public void HiddenNotDivisibleByHeadsWithoutHeadDim() =>
        Rejected(Edit(Olmoe1B7B, "hidden_size", "2050"), "hidden_size = 2050 is not a multiple of num_attention_heads = 16");

    [Fact]
    public void ExpertCountNamesDisagree() => Rejected(Edit(Mixtral8x7B, "num_experts", "4"), "'num_local_experts' = 8 and 'num_experts' = 4 disagree");

    [Fact]
    public void NormTopKProbIsAString() => Rejected(Edit(Qwen3A3B, "norm_topk_prob", "\"yes\""), "'norm_topk_prob' must be true or false");

    [Fact]
    public void RmsNormEpsIsAString() => Rejected(Edit(Qwen3A3B, "rms_norm_eps", "\"1e-6\""), "'rms_norm_eps' must be a number");

    [Fact]
    public void RmsNormEpsIsZero() => Rejected(Edit(Qwen3A3B, "rms_norm_eps", "0"), "rms_norm_eps");

    [Fact]
    public void RopeThetaIsNegative() => Rejected(Edit(Olmoe1B7B, "rope_theta", "-1.0"), "rope_theta");

    [Fact]
    public void RopeThetaOverflowsFloat() => Rejected(Edit(Olmoe1B7B, "rope_theta", "1e300"), "'rope_theta'", "float range");

    [Fact]
    public void EosTokenOutsideVocabulary() => Rejected(Edit(Olmoe1B7B, "eos_token_id", "[50279, 60000]"), "eos_token_id 60000");

    [Fact]
    public void EosTokenListHoldsAString() => Rejected(Edit(Olmoe1B7B, "eos_token_id", "[\"</s>\"]"), "'eos_token_id' must be an integer");

    [Fact]
    public void HiddenActIsGelu() => Rejected(Edit(Mixtral8x7B, "hidden_act", "\"gelu\""), "hidden_act 'gelu' is not supported");

    [Fact]
    public void RopeScalingYarn() =>
        Rejected(Edit(Qwen3A3B, "rope_scaling", """{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}"""),
            "rope_scaling is not supported yet", "yarn");

    [Fact]
    public void RopeScalingLinearWithLegacyTypeKey() =>
        Rejected(Edit(Mixtral8x7B, "rope_scaling", """{"type": "linear", "factor": 2.0}"""), "rope_scaling is not supported yet");

    [Fact]
    public void RopeScalingIsNotAnObject() => Rejected(Edit(Qwen3A3B, "rope_scaling", "2.0"), "'rope_scaling' must be an object or null");

    [Fact]
    public void RopeParametersWithYarn() =>
        Rejected(Edit(Qwen3A3B, "rope_parameters", """{"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0}"""), "rope_scaling is not supported yet");

    [Fact]
    public void QwenSlidingWindowEnabled() =>
        Rejected(Edit(Qwen15MoeA27B, "use_sliding_window", "true"), "sliding_window attention (use_sliding_window = true) is not supported yet");

    [Fact]
    public void MixtralSlidingWindowShorterThanContext() =>
        Rejected(Edit(Mixtral8x7B, "sliding_window", "4096"), "sliding_window = 4096 is not supported yet");

    [Fact]
    public void SlidingAttentionLayerTypes() =>
        Rejected(Edit(Qwen3A3B, "layer_types", """["sliding_attention", "full_attention"]"""), "layer_types entry \"sliding_attention\"");

    [Fact]
    public void QwenDecoderSparseStepTwo() => Rejected(Edit(Qwen15MoeA27B, "decoder_sparse_step", "2"), "decoder_sparse_step = 2 is not supported yet");

    [Fact]
    public void QwenMlpOnlyLayers() => Rejected(Edit(Qwen3A3B, "mlp_only_layers", "[0, 47]"), "mlp_only_layers [0,47] is not supported yet");

    [Fact]
    public void QwenMlpOnlyLayersIsNotAList() => Rejected(Edit(Qwen3A3B, "mlp_only_layers", "3"), "'mlp_only_layers' must be a list");

    [Fact]
    public void OlmoeClipQkv() => Rejected(Edit(Olmoe1B7B, "clip_qkv", "8.0"), "clip_qkv = 8.0 is not supported yet");

    [Fact]
    public void Qwen3AttentionBias() => Rejected(Edit(Qwen3A3B, "attention_bias", "true"), "attention_bias = true is not supported yet for qwen3_moe");

    [Fact]
    public void OlmoeAttentionBias() => Rejected(Edit(Olmoe1B7B, "attention_bias", "true"), "attention_bias = true is not supported yet for olmoe");

    [Fact]
    public void Qwen2MoeWithoutQkvBiasParses()
    {
        var c = HfConfig.Parse(Edit(Qwen15MoeA27B, "qkv_bias", "false"), "q.json");
        Assert.False(c.AttentionBias);
        Assert.False(HfConfig.Parse(HfConfig.ToJson(c), "q.json").AttentionBias);
    }

    [Fact]
    public void MixtralSlidingWindowCoveringTheContextParses() =>
        Assert.Equal(32768, HfConfig.Parse(Edit(Mixtral8x7B, "sliding_window", "32768"), "m.json").MaxContext);
}
