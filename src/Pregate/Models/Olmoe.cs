// OLMoE (HF "olmoe", modeling_olmoe.py; llama.cpp "olmoe"): RMSNorm over the whole q and k projections (weights
// [H·hd] and [Hkv·hd]) before splitting into heads and RoPE; router softmax → top-k, renormalised only when norm_topk_prob.
using Pregate.Formats;
using Pregate.Kernels;

namespace Pregate.Models;

public sealed class Olmoe(Checkpoint ck) : MoeModel(ck)
{
    protected override void Route(int layer, Span<float> routerLogits, Span<int> ids, Span<float> weights) =>
        Routing.SoftmaxTopK(routerLogits, ids, weights, Config.NormTopKProb);

    protected override void NormalizeQK(Layer l, Span<float> q, Span<float> k)
    {
        ElementOps.RmsNorm(q, l.QNorm!, Config.RmsNormEps, q);
        ElementOps.RmsNorm(k, l.KNorm!, Config.RmsNormEps, k);
    }
}
