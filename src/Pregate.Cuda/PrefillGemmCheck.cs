// The building blocks of batched prefill against the decode mat-vec on the device: Y = X·Wᵀ through cuBLAS GemmEx (and
// GemmStridedBatchedEx over two halves of X) on fp16 copies made by dequantize_f16 / float_to_f16 with fp32
// accumulation, and through the matvec kernel (one vector per token). Used by `pregate selftest`.
using Pregate.Core;
using Pregate.Cuda.Native;
using Pregate.Kernels;

namespace Pregate.Cuda;

/// <summary>Agreement of the cuBLAS path with the mat-vec kernel for one weight matrix.</summary>
/// <param name="Gemm">max |gemm − matvec| / max |matvec|.</param>
/// <param name="Batched">max |batched gemm − gemm| / max |matvec|.</param>
public readonly record struct GemmAgreement(double Gemm, double Batched);

public static unsafe class PrefillGemmCheck
{
    /// <summary>
    /// Computes Y [tokens, W.Rows] = X·Wᵀ for <paramref name="x"/> ([tokens, W.Cols], tokens even) both ways on
    /// <paramref name="device"/> and compares them.
    /// </summary>
    /// <exception cref="CudaException">libcublas is missing or a CUDA call fails.</exception>
    public static GemmAgreement Run(CudaDevice device, in WeightMatrix w, ReadOnlySpan<float> x, int tokens)
    {
        if (tokens < 2 || tokens % 2 != 0 || x.Length != (long)tokens * w.Cols)
            throw new ArgumentException($"x must hold an even number of vectors of {w.Cols} values", nameof(x));
        var cu = device.Driver;
        device.MakeCurrent();
        IntPtr stream = device.ComputeStream;
        using var blas = new Cublas(NativeLibraries.Load(NativeLibrarySpec.Cublas, "install the CUDA toolkit or pip nvidia-cublas, or set CUDA_HOME"), stream);
        int rows = w.Rows, cols = w.Cols, half = tokens / 2;
        long weightBytes = w.RowStride * rows, outputs = (long)tokens * rows;
        var allocations = new List<ulong>();
        ulong Alloc(long bytes) { ulong p = cu.Alloc(bytes); allocations.Add(p); return p; }
        try
        {
            ulong dW = Alloc(weightBytes), dX = Alloc(4L * x.Length), dW16 = Alloc(2L * rows * cols), dX16 = Alloc(2L * x.Length);
            ulong dXq = Alloc(DTypes.ByteCount(DType.Q8_0, x.Length)), yMatVec = Alloc(4 * outputs), yGemm = Alloc(4 * outputs), yBatched = Alloc(4 * outputs);
            cu.CopyToDevice(dW, (void*)w.Data, weightBytes, stream);
            fixed (float* px = x) cu.CopyToDevice(dX, px, 4L * x.Length, stream);

            if (w.Type is DType.Q8_0 or DType.Q4_0)
                device.Args().Ptr(dXq).Ptr(dX).I32(x.Length / 32).Launch("quantize_q8_0", Launches.QuantizeQ8_0(x.Length / 32));
            device.Args().Ptr(yMatVec).Ptr(dW).I64(w.RowStride).I32((int)w.Type).Ptr(dX).Ptr(dXq).I32(rows).I32(cols)
                .Launch("matvec", Launches.MatVec(rows, tokens));

            device.Args().Ptr(dW16).Ptr(dW).I64(w.RowStride).I32((int)w.Type).I32(rows).I32(cols)
                .Launch("dequantize_f16", Launches.Elementwise((long)rows * cols));
            device.Args().Ptr(dX16).Ptr(dX).I64(x.Length).Launch("float_to_f16", Launches.Elementwise(x.Length));
            blas.LinearRowMajor(dW16, CudaDataType.R16F, dX16, CudaDataType.R16F, yGemm, rows, tokens, cols);
            blas.LinearRowMajorBatched(dW16, CudaDataType.R16F, 0, dX16, CudaDataType.R16F, (long)half * cols, yBatched, (long)half * rows, rows, half, cols, 2);

            var host = new float[3 * outputs];
            fixed (float* h = host)
            {
                cu.CopyToHost(h, yMatVec, 4 * outputs, stream);
                cu.CopyToHost(h + outputs, yGemm, 4 * outputs, stream);
                cu.CopyToHost(h + 2 * outputs, yBatched, 4 * outputs, stream);
                cu.Synchronize(stream);
            }
            double scale = 0, gemm = 0, batched = 0;
            for (long i = 0; i < outputs; i++)
            {
                scale = Math.Max(scale, Math.Abs(host[i]));
                gemm = Math.Max(gemm, Math.Abs(host[outputs + i] - host[i]));
                batched = Math.Max(batched, Math.Abs(host[2 * outputs + i] - host[outputs + i]));
            }
            return new GemmAgreement(gemm / scale, batched / scale);
        }
        finally
        {
            cu.Synchronize(stream);
            foreach (ulong p in allocations) cu.Free(p);
        }
    }
}
