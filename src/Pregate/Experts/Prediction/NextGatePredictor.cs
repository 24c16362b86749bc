// Training-free prediction: apply layer i+a's own input norm and router to layer i's post-attention residual stream
// (mixtral-offloading, AdapMoE). Works because the residual stream changes slowly from layer to layer.
using Pregate.Core;
using Pregate.Formats;
using Pregate.Kernels;

namespace Pregate.Experts.Prediction;

public sealed class NextGatePredictor : IExpertPredictor
{
    private readonly WeightMatrix[] _routers;   // [layer] → [E, D]
    private readonly float[][] _norms;          // [layer] → [D] (ffn_norm, the router's input norm)
    private readonly float _eps;
    private readonly float[] _normed;
    private readonly ActivationQ8 _act;

    public NextGatePredictor(Checkpoint ck, int maxLookahead = 2)
    {
        var c = ck.Config;
        MaxLookahead = maxLookahead;
        _eps = c.RmsNormEps;
        _routers = new WeightMatrix[c.NumLayers];
        _norms = new float[c.NumLayers][];
        for (int i = 0; i < c.NumLayers; i++)
        {
            _routers[i] = WeightMatrix.FromTensor(ck.Get(TensorRole.Router, i));
            var n = ck.Get(TensorRole.FfnNorm, i);
            _norms[i] = new float[n.ElementCount];
            Quantize.Dequantize(n.Type, n.Bytes, _norms[i]);
        }
        _normed = new float[c.HiddenSize];
        _act = new ActivationQ8(c.HiddenSize);
    }

    public int MaxLookahead { get; }

    public bool Score(int layer, int ahead, ReadOnlySpan<float> hidden, Span<float> scores)
    {
        int target = layer + ahead;
        if (ahead < 1 || ahead > MaxLookahead || target >= _routers.Length) return false;
        ElementOps.RmsNorm(hidden, _norms[target], _eps, _normed);
        _act.Load(_normed);
        MatVec.Run(_routers[target], _act, scores);
        return true;
    }
}
