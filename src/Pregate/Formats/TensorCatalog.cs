// The tensors of each supported architecture, with their Hugging Face and GGUF names and row-major shapes.
// Names follow transformers' modeling_{mixtral,qwen2_moe,qwen3_moe,olmoe}.py and llama.cpp's tensor map (llama-arch.cpp).
using Pregate.Core;

namespace Pregate.Formats;

/// <summary>What a tensor is for, independent of the file format's naming.</summary>
public enum TensorRole
{
    TokenEmbedding,     // [V, D]
    OutputNorm,         // [D]
    Output,             // [V, D] (absent when tied)
    AttnNorm,           // [D]
    AttnQ,              // [H·hd, D]
    AttnK,              // [Hkv·hd, D]
    AttnV,              // [Hkv·hd, D]
    AttnOutput,         // [D, H·hd]
    AttnQBias,          // [H·hd]
    AttnKBias,          // [Hkv·hd]
    AttnVBias,          // [Hkv·hd]
    AttnQNorm,          // [hd] per head (Qwen3-MoE) or [H·hd] (OLMoE)
    AttnKNorm,          // [hd] per head (Qwen3-MoE) or [Hkv·hd] (OLMoE)
    FfnNorm,            // [D]
    Router,             // [E, D]
    ExpertGate,         // per expert [F, D]; GGUF stacks [E, F, D]
    ExpertUp,           // per expert [F, D]; GGUF stacks [E, F, D]
    ExpertDown,         // per expert [D, F]; GGUF stacks [E, D, F]
    SharedGate,         // [Fs, D]
    SharedUp,           // [Fs, D]
    SharedDown,         // [D, Fs]
    SharedExpertGate,   // HF [1, D]; GGUF [D]
}

/// <summary>
/// One tensor of a model: its role, layer (-1 for global tensors), names in both formats and its row-major shape.
/// For routed-expert roles <see cref="HfName"/> contains "{e}" (one tensor per expert) and <see cref="Shape"/> is the
/// per-expert shape; the GGUF tensor stacks all experts as [E, ..shape].
/// </summary>
public sealed record TensorSpec(TensorRole Role, int Layer, string HfName, string GgufName, long[] Shape)
{
    public bool IsRoutedExpert => Role is TensorRole.ExpertGate or TensorRole.ExpertUp or TensorRole.ExpertDown;

    /// <summary>True for 1-D tensors (norms, biases) that GGUF files keep in F32 whatever the weight type.</summary>
    public bool IsVector => Shape.Length == 1 || Role == TensorRole.SharedExpertGate;

    public string HfNameOfExpert(int e) => HfName.Replace("{e}", e.ToString(System.Globalization.CultureInfo.InvariantCulture));
}

public static class TensorCatalog
{
    /// <summary>All tensors of a model with configuration <paramref name="c"/>, in file order (global first, then by layer).</summary>
    public static IReadOnlyList<TensorSpec> For(ModelConfig c)
    {
        long d = c.HiddenSize, v = c.VocabSize, hd = c.HeadDim, q = (long)c.NumHeads * hd, kv = (long)c.NumKvHeads * hd, f = c.ExpertFfn;
        var list = new List<TensorSpec>
        {
            new(TensorRole.TokenEmbedding, -1, "model.embed_tokens.weight", "token_embd.weight", [v, d]),
        };
        bool mixtral = c.Architecture == Architecture.Mixtral;
        for (int i = 0; i < c.NumLayers; i++)
        {
            string hf = $"model.layers.{i}.", gg = $"blk.{i}.";
            list.Add(new(TensorRole.AttnNorm, i, hf + "input_layernorm.weight", gg + "attn_norm.weight", [d]));
            list.Add(new(TensorRole.AttnQ, i, hf + "self_attn.q_proj.weight", gg + "attn_q.weight", [q, d]));
            list.Add(new(TensorRole.AttnK, i, hf + "self_attn.k_proj.weight", gg + "attn_k.weight", [kv, d]));
            list.Add(new(TensorRole.AttnV, i, hf + "self_attn.v_proj.weight", gg + "attn_v.weight", [kv, d]));
            if (c.AttentionBias)
            {
                list.Add(new(TensorRole.AttnQBias, i, hf + "self_attn.q_proj.bias", gg + "attn_q.bias", [q]));
                list.Add(new(TensorRole.AttnKBias, i, hf + "self_attn.k_proj.bias", gg + "attn_k.bias", [kv]));
                list.Add(new(TensorRole.AttnVBias, i, hf + "self_attn.v_proj.bias", gg + "attn_v.bias", [kv]));
            }
            if (c.QkNorm != QkNormKind.None)
            {
                bool perHead = c.QkNorm == QkNormKind.PerHead;
                list.Add(new(TensorRole.AttnQNorm, i, hf + "self_attn.q_norm.weight", gg + "attn_q_norm.weight", [perHead ? hd : q]));
                list.Add(new(TensorRole.AttnKNorm, i, hf + "self_attn.k_norm.weight", gg + "attn_k_norm.weight", [perHead ? hd : kv]));
            }
            list.Add(new(TensorRole.AttnOutput, i, hf + "self_attn.o_proj.weight", gg + "attn_output.weight", [d, q]));
            list.Add(new(TensorRole.FfnNorm, i, hf + "post_attention_layernorm.weight", gg + "ffn_norm.weight", [d]));
            if (mixtral)
            {
                string moe = hf + "block_sparse_moe.";
                list.Add(new(TensorRole.Router, i, moe + "gate.weight", gg + "ffn_gate_inp.weight", [c.NumExperts, d]));
                list.Add(new(TensorRole.ExpertGate, i, moe + "experts.{e}.w1.weight", gg + "ffn_gate_exps.weight", [f, d]));
                list.Add(new(TensorRole.ExpertDown, i, moe + "experts.{e}.w2.weight", gg + "ffn_down_exps.weight", [d, f]));
                list.Add(new(TensorRole.ExpertUp, i, moe + "experts.{e}.w3.weight", gg + "ffn_up_exps.weight", [f, d]));
            }
            else
            {
                string mlp = hf + "mlp.";
                list.Add(new(TensorRole.Router, i, mlp + "gate.weight", gg + "ffn_gate_inp.weight", [c.NumExperts, d]));
                list.Add(new(TensorRole.ExpertGate, i, mlp + "experts.{e}.gate_proj.weight", gg + "ffn_gate_exps.weight", [f, d]));
                list.Add(new(TensorRole.ExpertUp, i, mlp + "experts.{e}.up_proj.weight", gg + "ffn_up_exps.weight", [f, d]));
                list.Add(new(TensorRole.ExpertDown, i, mlp + "experts.{e}.down_proj.weight", gg + "ffn_down_exps.weight", [d, f]));
                if (c.SharedExpertFfn > 0)
                {
                    long fs = c.SharedExpertFfn;
                    list.Add(new(TensorRole.SharedGate, i, mlp + "shared_expert.gate_proj.weight", gg + "ffn_gate_shexp.weight", [fs, d]));
                    list.Add(new(TensorRole.SharedUp, i, mlp + "shared_expert.up_proj.weight", gg + "ffn_up_shexp.weight", [fs, d]));
                    list.Add(new(TensorRole.SharedDown, i, mlp + "shared_expert.down_proj.weight", gg + "ffn_down_shexp.weight", [d, fs]));
                    list.Add(new(TensorRole.SharedExpertGate, i, mlp + "shared_expert_gate.weight", gg + "ffn_gate_inp_shexp.weight", [1, d]));
                }
            }
        }
        list.Add(new(TensorRole.OutputNorm, -1, "model.norm.weight", "output_norm.weight", [d]));
        if (!c.TieWordEmbeddings)
            list.Add(new(TensorRole.Output, -1, "lm_head.weight", "output.weight", [v, d]));
        return list;
    }

    /// <summary>
    /// True when GGUF stores q/k rows in llama.cpp's "NORMAL" rotary pairing (adjacent pairs) — the `llama` architecture,
    /// whose converter permutes HF's half-split rows; all other architectures keep HF's NEOX layout.
    /// </summary>
    public static bool GgufUsesNormalRope(Architecture a) => a == Architecture.Mixtral;

    /// <summary>
    /// The row permutation llama.cpp's converter applies to q/k weights of the `llama` architecture: GGUF row
    /// h·hd + 2i + j holds HF row h·hd + j·hd/2 + i (j ∈ {0,1}, i &lt; hd/2).
    /// </summary>
    public static int HfRowForGgufRow(int ggufRow, int headDim)
    {
        int h = ggufRow / headDim, r = ggufRow % headDim;
        int i = r / 2, j = r % 2;
        return h * headDim + j * (headDim / 2) + i;
    }
}
