// The upper bound of any predictor: replays the routing recorded in an identical earlier run (a RoutingTrace), so the
// experts it names for a later layer are exactly the ones that layer will route to. For benchmarks only.
namespace Pregate.Experts.Prediction;

/// <summary>
/// Scores the experts a recorded run routed token step <c>s mod StepCount</c> to at the target layer (the trace is
/// replayed cyclically, so a run that repeats the recorded sequence, as the benchmark's passes do, finds every token). The
/// routed experts score TopK − j (their rank j in the router's order), the others 0. The step comes from
/// <see cref="BeginToken"/>.
/// </summary>
public sealed class OraclePredictor : IExpertPredictor
{
    private readonly RoutingTrace _trace;
    private long _step;

    /// <exception cref="ArgumentException">An empty trace.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A lookahead below 1.</exception>
    public OraclePredictor(RoutingTrace trace, int maxLookahead = 2)
    {
        ArgumentNullException.ThrowIfNull(trace);
        if (trace.StepCount == 0) throw new ArgumentException("the routing trace holds no token", nameof(trace));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxLookahead);
        _trace = trace;
        MaxLookahead = maxLookahead;
    }

    public int MaxLookahead { get; }

    public void BeginToken(long step)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        _step = step;
    }

    public bool Score(int layer, int ahead, ReadOnlySpan<float> hidden, Span<float> scores)
    {
        int target = layer + ahead;
        if (ahead < 1 || ahead > MaxLookahead || target >= _trace.LayerCount) return false;
        scores.Clear();
        var ids = _trace.Experts((int)(_step % _trace.StepCount), target);
        for (int j = 0; j < ids.Length; j++) scores[ids[j]] = ids.Length - j;
        return true;
    }
}
