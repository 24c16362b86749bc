// The one error of the CUDA backend: a missing library, a failed driver/NVRTC/cuBLAS call (with the error's name), or a
// kernel that does not compile (with the compiler log).
namespace Pregate.Cuda.Native;

/// <summary>A CUDA library is missing or a CUDA call failed; the message names the call and the error.</summary>
public sealed class CudaException(string message) : Exception(message);
