// How a checkpoint's tensors are laid out in a GGUF file that llama.cpp loads, as its converter (convert_hf_to_gguf.py)
// writes them: stacked experts [E, out, in], the shared-expert gate as a vector, 1-D tensors and routers kept in F32, and
// q/k rows permuted into adjacent rotary pairs for the `llama` architecture. Shared by every GGUF writer.
using Pregate.Core;

namespace Pregate.Formats.Export;

public static class GgufLayout
{
    /// <summary>The row-major shape of <paramref name="spec"/>'s GGUF tensor: [E, ..shape] for routed experts, [D] for the shared-expert gate.</summary>
    public static long[] Shape(TensorSpec spec, ModelConfig c) =>
        spec.Role == TensorRole.SharedExpertGate ? [c.HiddenSize]
        : spec.IsRoutedExpert ? [c.NumExperts, .. spec.Shape]
        : spec.Shape;

    /// <summary>True for tensors GGUF keeps in F32 whatever the weight type: 1-D tensors and the router (ffn_gate_inp).</summary>
    public static bool KeepsF32(TensorSpec spec) => spec.IsVector || spec.Role == TensorRole.Router;

    /// <summary>True when GGUF stores <paramref name="spec"/>'s rows in llama.cpp's permuted order (q/k of the `llama` architecture).</summary>
    public static bool PermutesRows(TensorSpec spec, Architecture a) =>
        TensorCatalog.GgufUsesNormalRope(a) && spec.Role is TensorRole.AttnQ or TensorRole.AttnK;

    /// <summary>Rows of one matrix (1 for vectors) and its row length.</summary>
    public static (int Rows, int Cols) Matrix(TensorSpec spec) =>
        ((int)(spec.Shape.Length == 1 ? 1 : spec.Shape[0]), (int)spec.Shape[^1]);

    /// <summary>
    /// llama.cpp's LLAMA_FTYPE for a file whose main weight type is <paramref name="t"/> (general.file_type):
    /// ALL_F32 0, MOSTLY_F16 1, Q4_0 2, Q8_0 7, Q4_K_M 15, Q6_K 18, BF16 32.
    /// </summary>
    public static uint FileType(DType t) => t switch
    {
        DType.F32 => 0,
        DType.F16 => 1,
        DType.Q4_0 => 2,
        DType.Q8_0 => 7,
        DType.Q4_K => 15,
        DType.Q6_K => 18,
        DType.BF16 => 32,
        _ => throw new ArgumentException($"no llama.cpp file type for {DTypes.Name(t)}", nameof(t)),
    };
}
