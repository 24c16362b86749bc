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

    protected override void AddSharedExpert(Layer l, InferenceState s, int tokens, WorkerTeam? team)
    {
        if (l.Shared is not { } shared) return;
        int d = Config.HiddenSize;
        SwiGlu.Run(shared, s.HiddenAct, s.Expert, team);
        for (int t = 0; t < tokens; t++)
        {
            float gate = 1f / (1f + MathF.Exp(-ElementOps.Dot(l.SharedGate!, s.HiddenAct.Values(t))));
            ElementOps.WeightedAdd(s.MoeOut.AsSpan(t * d, d), gate, s.Expert.Out.AsSpan(t * d, d));
        }
    }
}
