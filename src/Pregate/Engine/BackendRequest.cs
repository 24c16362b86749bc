// What a session hands a forward backend (the CUDA engine) when it opens: the checkpoint, the engine options (expert
// memory budget, cache policy, lookahead) and the expert predictor the options ask for.
using Pregate.Experts.Prediction;
using Pregate.Formats;

namespace Pregate.Engine;

/// <summary>
/// The inputs of <see cref="EngineOptions.Backend"/>. <paramref name="Predictor"/> is null when the options keep every expert
/// resident or ask for no prediction; <paramref name="PredictorName"/> describes it for logs.
/// </summary>
public sealed record BackendRequest(Checkpoint Checkpoint, EngineOptions Options, IExpertPredictor? Predictor, string PredictorName);
