// The seam between a model and its routed experts: the model routes, an IExpertRunner computes
// y += Σ_j w_j · E_{id_j}(x). Where an expert's bytes come from (the mapped file, a RAM slot, VRAM) is the runner's business;
// the math is always SwiGlu.Run, so every runner gives bit-identical results.
using Pregate.Formats;
using Pregate.Kernels;

namespace Pregate.Models;

/// <summary>An expert's three matrices: gate [F, D], up [F, D], down [D, F].</summary>
public readonly record struct ExpertWeights(WeightMatrix Gate, WeightMatrix Up, WeightMatrix Down);

/// <summary>Runs the routed experts of one layer for one token.</summary>
public interface IExpertRunner
{
    /// <summary>
    /// y += Σ_j weights[j] · expert(layer, ids[j])(x), accumulated in the order of <paramref name="ids"/>.
    /// <paramref name="x"/> holds the layer's normed hidden state.
    /// </summary>
    void Run(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team);

    /// <summary>
    /// The router of <paramref name="layer"/> gave <paramref name="probabilities"/> (softmax over all experts) for the token
    /// whose <see cref="Run"/> follows; cache policies that rank experts by router score learn from it. Default: nothing.
    /// </summary>
    void ObserveRouting(int layer, ReadOnlySpan<float> probabilities) { }
}

/// <summary>SwiGLU feed-forward: down(silu(gate·x) ⊙ up·x) (Mixtral w2(silu(w1 x) ⊙ w3 x)).</summary>
public static class SwiGlu
{
    /// <summary>scratch.Out = down(silu(gate·x) ⊙ (up·x)).</summary>
    public static void Run(in ExpertWeights w, ActivationQ8 x, ExpertScratch scratch, WorkerTeam? team)
    {
        int f = w.Gate.Rows;
        var gate = scratch.Gate.AsSpan(0, f);
        var up = scratch.Up.AsSpan(0, f);
        MatVec.Run(w.Gate, x, gate, team);
        MatVec.Run(w.Up, x, up, team);
        ElementOps.SiluMul(gate, up);
        scratch.DownAct.Load(gate);
        MatVec.Run(w.Down, scratch.DownAct, scratch.Out.AsSpan(0, w.Down.Rows), team);
    }
}

/// <summary>Experts read in place from the checkpoint's memory map: nothing moves (the resident mode).</summary>
public sealed class ResidentExperts : IExpertRunner
{
    private readonly ExpertWeights[][] _experts; // [layer][expert]

    public ResidentExperts(Checkpoint ck)
    {
        var c = ck.Config;
        _experts = new ExpertWeights[c.NumLayers][];
        for (int l = 0; l < c.NumLayers; l++)
        {
            _experts[l] = new ExpertWeights[c.NumExperts];
            for (int e = 0; e < c.NumExperts; e++)
                _experts[l][e] = new ExpertWeights(
                    WeightMatrix.FromTensor(ck.GetExpert(TensorRole.ExpertGate, l, e)),
                    WeightMatrix.FromTensor(ck.GetExpert(TensorRole.ExpertUp, l, e)),
                    WeightMatrix.FromTensor(ck.GetExpert(TensorRole.ExpertDown, l, e)));
        }
    }

    public void Run(int layer, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights, ActivationQ8 x, Span<float> y, ExpertScratch scratch, WorkerTeam? team)
    {
        var row = _experts[layer];
        for (int j = 0; j < ids.Length; j++)
        {
            SwiGlu.Run(row[ids[j]], x, scratch, team);
            ElementOps.WeightedAdd(y, weights[j], scratch.Out.AsSpan(0, y.Length));
        }
    }
}
