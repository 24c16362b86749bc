// Guessing the experts a later layer will route to, from the residual stream after the current layer's attention
// (Pre-gated MoE, ISCA 2024; mixtral-offloading's next-gate speculation). Guesses are scored: the engine takes the top ones.
namespace Pregate.Experts.Prediction;

/// <summary>Which predictor runs: none (on demand), next-gate (training-free), pregate (calibrated), oracle (replay).</summary>
public enum PredictorKind { None, NextGate, Pregate, Oracle }

/// <summary>Scores every expert of a later layer from the hidden state after layer <c>layer</c>'s attention.</summary>
public interface IExpertPredictor
{
    /// <summary>How many layers ahead this predictor can look (1 = the next layer only).</summary>
    int MaxLookahead { get; }

    /// <summary>
    /// Writes a score per expert of layer <c>layer + ahead</c> into <paramref name="scores"/> (higher = more likely), from
    /// <paramref name="hidden"/>, the residual stream of the current token after layer <paramref name="layer"/>'s attention.
    /// Returns false when there is nothing to predict (past the last layer, or ahead &gt; MaxLookahead).
    /// </summary>
    bool Score(int layer, int ahead, ReadOnlySpan<float> hidden, Span<float> scores);

    /// <summary>
    /// Called before the <see cref="Score"/> calls for one token: <paramref name="step"/> counts the tokens the runner had
    /// run through layer 0 before this one (0 for the first token it ever ran; prefill blocks count one per token).
    /// Predictors that replay a recorded run use it to find the token; the default ignores it.
    /// </summary>
    void BeginToken(long step) { }
}

public static class PredictorKinds
{
    public static bool TryParse(string? s, out PredictorKind kind)
    {
        switch (s?.ToLowerInvariant())
        {
            case "none": kind = PredictorKind.None; return true;
            case "next-gate": kind = PredictorKind.NextGate; return true;
            case "pregate": kind = PredictorKind.Pregate; return true;
            case "oracle": kind = PredictorKind.Oracle; return true;
            default: kind = default; return false;
        }
    }

    public static string Name(PredictorKind k) => k switch
    {
        PredictorKind.None => "none",
        PredictorKind.NextGate => "next-gate",
        PredictorKind.Pregate => "pregate",
        PredictorKind.Oracle => "oracle",
        _ => throw new ArgumentOutOfRangeException(nameof(k)),
    };
}
