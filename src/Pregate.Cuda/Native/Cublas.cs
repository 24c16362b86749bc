// cuBLAS (libcublas, cublas_api.h): one handle bound to a stream, and the mixed-precision GEMMs prefill uses
// (fp16/bf16 inputs, fp32 accumulation and output).
using System.Runtime.InteropServices;

namespace Pregate.Cuda.Native;

/// <summary>cudaDataType_t values (library_types.h) the GEMMs take.</summary>
public enum CudaDataType { R32F = 0, R16F = 2, R16BF = 14 }

/// <summary>A cuBLAS handle; every call throws <see cref="CudaException"/> with the cuBLAS status name.</summary>
public sealed unsafe class Cublas : IDisposable
{
    private const int OpN = 0, OpT = 1, Compute32F = 68, GemmDefault = -1;

    private readonly delegate* unmanaged<IntPtr*, int> _create;
    private readonly delegate* unmanaged<IntPtr, int> _destroy;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int> _setStream;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, void*, ulong, int, int, ulong, int, int, void*, ulong, int, int, int, int, int> _gemmEx;
    private readonly delegate* unmanaged<IntPtr, int, int, int, int, int, void*, ulong, int, int, long, ulong, int, int, long, void*, ulong, int, int, long, int, int, int, int> _gemmStridedBatchedEx;
    private IntPtr _handle;

    /// <summary>Binds cuBLAS in an already loaded libcublas handle and creates a handle that runs on <paramref name="stream"/>.</summary>
    public Cublas(IntPtr library, IntPtr stream)
    {
        IntPtr F(string name) => NativeLibraries.Export(library, "libcublas", name);
        _create = (delegate* unmanaged<IntPtr*, int>)F("cublasCreate_v2");
        _destroy = (delegate* unmanaged<IntPtr, int>)F("cublasDestroy_v2");
        _setStream = (delegate* unmanaged<IntPtr, IntPtr, int>)F("cublasSetStream_v2");
        _gemmEx = (delegate* unmanaged<IntPtr, int, int, int, int, int, void*, ulong, int, int, ulong, int, int, void*, ulong, int, int, int, int, int>)F("cublasGemmEx");
        _gemmStridedBatchedEx = (delegate* unmanaged<IntPtr, int, int, int, int, int, void*, ulong, int, int, long, ulong, int, int, long, void*, ulong, int, int, long, int, int, int, int>)F("cublasGemmStridedBatchedEx");
        IntPtr h;
        Check(_create(&h), "cublasCreate");
        _handle = h;
        Check(_setStream(_handle, stream), "cublasSetStream");
    }

    /// <summary>The cublasStatus_t name of <paramref name="status"/>.</summary>
    public static string StatusName(int status) => status switch
    {
        0 => "CUBLAS_STATUS_SUCCESS",
        1 => "CUBLAS_STATUS_NOT_INITIALIZED",
        3 => "CUBLAS_STATUS_ALLOC_FAILED",
        7 => "CUBLAS_STATUS_INVALID_VALUE",
        8 => "CUBLAS_STATUS_ARCH_MISMATCH",
        11 => "CUBLAS_STATUS_MAPPING_ERROR",
        13 => "CUBLAS_STATUS_EXECUTION_FAILED",
        14 => "CUBLAS_STATUS_INTERNAL_ERROR",
        15 => "CUBLAS_STATUS_NOT_SUPPORTED",
        16 => "CUBLAS_STATUS_LICENSE_ERROR",
        _ => $"cublasStatus {status}",
    };

    private static void Check(int status, string call)
    {
        if (status != 0) throw new CudaException($"CUDA backend: {call} failed: {StatusName(status)}");
    }

    /// <summary>
    /// Y [n, m] = X [n, k] · Wᵀ (W [m, k] row-major, as a Linear weight), all row-major, fp32 accumulation and output:
    /// in cuBLAS's column-major terms Yᵀ [m, n] = W (op T on the [k, m] column-major view) · Xᵀ.
    /// </summary>
    public void LinearRowMajor(ulong w, CudaDataType wType, ulong x, CudaDataType xType, ulong y, int m, int n, int k)
    {
        float alpha = 1, beta = 0;
        Check(_gemmEx(_handle, OpT, OpN, m, n, k, &alpha, w, (int)wType, k, x, (int)xType, k, &beta, y, (int)CudaDataType.R32F, m, Compute32F, GemmDefault), "cublasGemmEx");
    }

    /// <summary>
    /// <see cref="LinearRowMajor"/> for <paramref name="batch"/> independent products whose W, X and Y lie
    /// <paramref name="strideW"/>, <paramref name="strideX"/>, <paramref name="strideY"/> elements apart (experts of one shape).
    /// </summary>
    public void LinearRowMajorBatched(ulong w, CudaDataType wType, long strideW, ulong x, CudaDataType xType, long strideX, ulong y, long strideY, int m, int n, int k, int batch)
    {
        float alpha = 1, beta = 0;
        Check(_gemmStridedBatchedEx(_handle, OpT, OpN, m, n, k, &alpha, w, (int)wType, k, strideW, x, (int)xType, k, strideX, &beta,
            y, (int)CudaDataType.R32F, m, strideY, batch, Compute32F, GemmDefault), "cublasGemmStridedBatchedEx");
    }

    public void Dispose()
    {
        if (_handle == 0) return;
        _destroy(_handle);
        _handle = 0;
    }
}
