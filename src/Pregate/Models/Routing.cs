// Router arithmetic shared by the families whose gate is softmax → top-k (→ renormalise): Mixtral
// (modeling_mixtral.py MixtralSparseMoeBlock), Qwen2-MoE, Qwen3-MoE, OLMoE. llama.cpp build_moe_ffn with
// LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX.
using Pregate.Kernels;

namespace Pregate.Models;

public static class Routing
{
    /// <summary>
    /// logits := softmax(logits) in place; ids/weights := the k largest probabilities (descending, ties to the lower id);
    /// when <paramref name="renormalize"/>, weights /= Σ weights.
    /// </summary>
    public static void SoftmaxTopK(Span<float> logits, Span<int> ids, Span<float> weights, bool renormalize)
    {
        ElementOps.Softmax(logits);
        ElementOps.TopK(logits, ids.Length, ids, weights);
        if (!renormalize) return;
        float sum = 0;
        foreach (float w in weights) sum += w;
        for (int j = 0; j < weights.Length; j++) weights[j] /= sum;
    }
}
