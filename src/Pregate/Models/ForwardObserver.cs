// Optional hook into the forward pass (llama.cpp's cb(cur, "ffn_moe_out", il)): sees named intermediates and routing
// decisions. Used for golden diffs, tracing and recording routing to train the pre-gate; costs nothing when absent.
namespace Pregate.Models;

public interface IForwardObserver
{
    /// <summary>
    /// A named intermediate of <paramref name="layer"/> at <paramref name="position"/>: "attn_input" (the normed input of
    /// the q/k/v projections), "attn_output" (the heads' output, input of the output projection), "attn_residual" (the
    /// residual stream after attention, what the next-gate predictor sees), "moe_out" (the MoE block's output).
    /// </summary>
    void OnTensor(string name, int layer, int position, ReadOnlySpan<float> values);

    /// <summary>The router's softmax probabilities over all experts and the chosen ids with their final weights.</summary>
    void OnRouting(int layer, int position, ReadOnlySpan<float> probs, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights);
}
