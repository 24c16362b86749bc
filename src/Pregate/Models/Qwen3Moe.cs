// Qwen3-MoE (HF "qwen3_moe", modeling_qwen3_moe.py; llama.cpp "qwen3moe"): RMSNorm of each head's q and k (weights [hd])
// before RoPE; head_dim may differ from hidden/heads; router softmax → top-k → renormalise when norm_topk_prob.
using Pregate.Formats;

namespace Pregate.Models;

public sealed class Qwen3Moe(Checkpoint ck) : MoeModel(ck)
{
    protected override void Route(int layer, Span<float> routerLogits, Span<int> ids, Span<float> weights) =>
        Routing.SoftmaxTopK(routerLogits, ids, weights, Config.NormTopKProb);

    protected override void NormalizeQK(Layer l, Span<float> q, Span<float> k)
    {
        RmsNormPerHead(q, Config.NumHeads, l.QNorm!);
        RmsNormPerHead(k, Config.NumKvHeads, l.KNorm!);
    }
}
