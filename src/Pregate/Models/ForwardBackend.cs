// The seam where another device runs the whole forward pass (the CUDA backend): MoeModel.Forward validates its arguments
// and hands the tokens to the backend, which keeps its own weights and a KV cache per sequence state.
namespace Pregate.Models;

/// <summary>Runs a model's forward pass on another device. Implementations live outside the engine library.</summary>
public interface IForwardBackend : IDisposable
{
    /// <summary>One line for logs, e.g. "backend: cuda, NVIDIA H200 (sm_90), experts resident in VRAM".</summary>
    string Describe();

    /// <summary>
    /// Runs <paramref name="tokens"/> of the sequence <paramref name="state"/> at positions
    /// <paramref name="firstPosition"/>…, appending their keys and values to the backend's cache for that state (earlier
    /// positions were run through this backend with the same state; position 0 starts the sequence over, since a caller
    /// may reset the state at any time). <paramref name="logits"/> is empty, the last token's
    /// logits [V], or every token's logits [tokens, V] when <paramref name="allPositions"/>; MoeModel has checked the sizes.
    /// The caller advances the state's position.
    /// </summary>
    void Forward(InferenceState state, int firstPosition, ReadOnlySpan<int> tokens, Span<float> logits, bool allPositions);
}
