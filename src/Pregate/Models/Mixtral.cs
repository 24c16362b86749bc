// Mixtral (HF model_type "mixtral", modeling_mixtral.py; llama.cpp arch "llama" with experts): no biases, no q/k norm,
// router softmax over all experts → top-k → renormalise; SwiGLU experts w2(silu(w1 x) ⊙ w3 x).
using Pregate.Formats;

namespace Pregate.Models;

public sealed class Mixtral(Checkpoint ck) : MoeModel(ck)
{
    protected override void Route(int layer, Span<float> routerLogits, Span<int> ids, Span<float> weights) =>
        Routing.SoftmaxTopK(routerLogits, ids, weights, renormalize: true);
}
