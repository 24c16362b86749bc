// Qwen2-MoE (HF "qwen2_moe", modeling_qwen2_moe.py; llama.cpp "qwen2moe"): q/k/v biases; router softmax → top-k,
// renormalised only when norm_topk_prob; a shared expert on the same normed input, scaled by sigmoid(w·h) and added to
// the routed experts' sum.
using Pregate.Formats;
using Pregate.Kernels;

namespace Pregate.Models;

public sealed class Qwen2Moe(Checkpoint ck) : MoeModel(ck)
{
    protected override void Route(int layer, Span<float> routerLogits, Span<int> ids, Span<float> weights) =>
        Routing.SoftmaxTopK(routerLogits, ids, weights, Config.NormTopKProb);

    protected override void AddSharedExpert(Layer l, InferenceState s, WorkerTeam? team)
    {
        if (l.Shared is not { } shared) return;
        SwiGlu.Run(shared, s.HiddenAct, s.Expert, team);
        float gate = 1f / (1f + MathF.Exp(-ElementOps.Dot(l.SharedGate!, s.HiddenAct.Values(0))));
        ElementOps.WeightedAdd(s.MoeOut, gate, s.Expert.Out.AsSpan(0, s.MoeOut.Length));
    }
}
