// Test oracle: ggml's own quantizers, dequantizers and CPU kernels, called from the AVX2 build of the native libraries
// that LLamaSharp.Backend.Cpu ships (libggml-base.so, libggml-cpu.so), so bit-exactness is checked against llama.cpp itself.
using System.Runtime.InteropServices;

namespace Pregate.Tests.Kernels;

internal static unsafe class GgmlNative
{
    private static readonly Lazy<Api> Instance = new(Load);

    /// <summary>The loaded functions; throws if the native libraries are missing (they ship with the test dependencies).</summary>
    public static Api Functions => Instance.Value;

    internal sealed class Api
    {
        public required delegate* unmanaged<float*, void*, long, void> QuantizeQ8_0Ref;
        public required delegate* unmanaged<float*, void*, long, void> QuantizeQ4_0Ref;
        public required delegate* unmanaged<float*, void*, long, void> QuantizeQ4_KRef;
        public required delegate* unmanaged<float*, void*, long, void> QuantizeQ6_KRef;
        public required delegate* unmanaged<float*, void*, long, void> QuantizeQ8_KRef;
        public required delegate* unmanaged<float*, void*, long, void> QuantizeRowQ8_0;
        public required delegate* unmanaged<float*, void*, long, void> QuantizeRowQ8_K;
        public required delegate* unmanaged<void*, float*, long, void> DequantizeQ8_0;
        public required delegate* unmanaged<void*, float*, long, void> DequantizeQ4_0;
        public required delegate* unmanaged<void*, float*, long, void> DequantizeQ4_K;
        public required delegate* unmanaged<void*, float*, long, void> DequantizeQ6_K;
        public required delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> DotQ8_0Q8_0;
        public required delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> DotQ4_0Q8_0;
        public required delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> DotQ4_KQ8_K;
        public required delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void> DotQ6_KQ8_K;
        public required delegate* unmanaged<int, float*, nuint, float*, nuint, float*, nuint, int, void> DotF32;
        public required delegate* unmanaged<int, float*, nuint, ushort*, nuint, ushort*, nuint, int, void> DotF16;
        public required delegate* unmanaged<int, float*, nuint, ushort*, nuint, ushort*, nuint, int, void> DotBF16;
        public required delegate* unmanaged<float*, ushort*, long, void> CpuFp32ToFp16Row;
        public required delegate* unmanaged<float*, ushort*, long, void> CpuFp32ToBf16Row;
        public required delegate* unmanaged<int, float*, float*, float*, void> SwigluF32;
        public required delegate* unmanaged<int, float*, float*, float, double> SoftMaxF32;
        public required delegate* unmanaged<float, ushort> Fp32ToFp16;
        public required delegate* unmanaged<ushort, float> Fp16ToFp32;
        public required delegate* unmanaged<float, ushort> Fp32ToBf16;
        public required delegate* unmanaged<int> HasAvx2;
        public required delegate* unmanaged<int> HasFma;
    }

    private static Api Load()
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "avx2");
        nint b = NativeLibrary.Load(Path.Combine(dir, "libggml-base.so"));
        nint c = NativeLibrary.Load(Path.Combine(dir, "libggml-cpu.so"));
        ((delegate* unmanaged<void>)NativeLibrary.GetExport(c, "ggml_cpu_init"))();
        return new Api
        {
            QuantizeQ8_0Ref = (delegate* unmanaged<float*, void*, long, void>)NativeLibrary.GetExport(b, "quantize_row_q8_0_ref"),
            QuantizeQ4_0Ref = (delegate* unmanaged<float*, void*, long, void>)NativeLibrary.GetExport(b, "quantize_row_q4_0_ref"),
            QuantizeQ4_KRef = (delegate* unmanaged<float*, void*, long, void>)NativeLibrary.GetExport(b, "quantize_row_q4_K_ref"),
            QuantizeQ6_KRef = (delegate* unmanaged<float*, void*, long, void>)NativeLibrary.GetExport(b, "quantize_row_q6_K_ref"),
            QuantizeQ8_KRef = (delegate* unmanaged<float*, void*, long, void>)NativeLibrary.GetExport(b, "quantize_row_q8_K_ref"),
            QuantizeRowQ8_0 = (delegate* unmanaged<float*, void*, long, void>)NativeLibrary.GetExport(c, "quantize_row_q8_0"),
            QuantizeRowQ8_K = (delegate* unmanaged<float*, void*, long, void>)NativeLibrary.GetExport(c, "quantize_row_q8_K"),
            DequantizeQ8_0 = (delegate* unmanaged<void*, float*, long, void>)NativeLibrary.GetExport(b, "dequantize_row_q8_0"),
            DequantizeQ4_0 = (delegate* unmanaged<void*, float*, long, void>)NativeLibrary.GetExport(b, "dequantize_row_q4_0"),
            DequantizeQ4_K = (delegate* unmanaged<void*, float*, long, void>)NativeLibrary.GetExport(b, "dequantize_row_q4_K"),
            DequantizeQ6_K = (delegate* unmanaged<void*, float*, long, void>)NativeLibrary.GetExport(b, "dequantize_row_q6_K"),
            DotQ8_0Q8_0 = (delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void>)NativeLibrary.GetExport(c, "ggml_vec_dot_q8_0_q8_0"),
            DotQ4_0Q8_0 = (delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void>)NativeLibrary.GetExport(c, "ggml_vec_dot_q4_0_q8_0"),
            DotQ4_KQ8_K = (delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void>)NativeLibrary.GetExport(c, "ggml_vec_dot_q4_K_q8_K"),
            DotQ6_KQ8_K = (delegate* unmanaged<int, float*, nuint, void*, nuint, void*, nuint, int, void>)NativeLibrary.GetExport(c, "ggml_vec_dot_q6_K_q8_K"),
            DotF32 = (delegate* unmanaged<int, float*, nuint, float*, nuint, float*, nuint, int, void>)NativeLibrary.GetExport(c, "ggml_vec_dot_f32"),
            DotF16 = (delegate* unmanaged<int, float*, nuint, ushort*, nuint, ushort*, nuint, int, void>)NativeLibrary.GetExport(c, "ggml_vec_dot_f16"),
            DotBF16 = (delegate* unmanaged<int, float*, nuint, ushort*, nuint, ushort*, nuint, int, void>)NativeLibrary.GetExport(c, "ggml_vec_dot_bf16"),
            CpuFp32ToFp16Row = (delegate* unmanaged<float*, ushort*, long, void>)NativeLibrary.GetExport(c, "ggml_cpu_fp32_to_fp16"),
            CpuFp32ToBf16Row = (delegate* unmanaged<float*, ushort*, long, void>)NativeLibrary.GetExport(c, "ggml_cpu_fp32_to_bf16"),
            SwigluF32 = (delegate* unmanaged<int, float*, float*, float*, void>)NativeLibrary.GetExport(c, "ggml_vec_swiglu_f32"),
            SoftMaxF32 = (delegate* unmanaged<int, float*, float*, float, double>)NativeLibrary.GetExport(c, "ggml_vec_soft_max_f32"),
            Fp32ToFp16 = (delegate* unmanaged<float, ushort>)NativeLibrary.GetExport(b, "ggml_fp32_to_fp16"),
            Fp16ToFp32 = (delegate* unmanaged<ushort, float>)NativeLibrary.GetExport(b, "ggml_fp16_to_fp32"),
            Fp32ToBf16 = (delegate* unmanaged<float, ushort>)NativeLibrary.GetExport(b, "ggml_fp32_to_bf16"),
            HasAvx2 = (delegate* unmanaged<int>)NativeLibrary.GetExport(c, "ggml_cpu_has_avx2"),
            HasFma = (delegate* unmanaged<int>)NativeLibrary.GetExport(c, "ggml_cpu_has_fma"),
        };
    }
}

/// <summary>Seeded inputs for kernel tests.</summary>
internal static class TestData
{
    /// <summary>Lengths just below, at and above each vector width.</summary>
    public static readonly int[] Lengths = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 259];

    public static float[] Gaussian(int n, int seed, float scale = 1f)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++)
        {
            double u1 = 1.0 - rng.NextDouble(), u2 = rng.NextDouble();
            x[i] = (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2)) * scale;
        }
        return x;
    }

    /// <summary>Rows that stress quantizers: Gaussian, uniform, outliers, constant and all-zero blocks, tiny values.</summary>
    public static IEnumerable<(string Name, float[] Values)> QuantizerInputs(int n, int seed)
    {
        var rng = new Random(seed);
        yield return ("gaussian", Gaussian(n, seed));
        yield return ("uniform", Enumerable.Range(0, n).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray());
        var outliers = Gaussian(n, seed + 1, 0.02f);
        for (int i = 0; i < n; i += 37) outliers[i] = (float)(rng.NextDouble() - 0.5) * 40;
        yield return ("outliers", outliers);
        var mixed = Gaussian(n, seed + 2);
        for (int i = 0; i < Math.Min(n, 256); i++) mixed[i] = 0;
        for (int i = 256; i < Math.Min(n, 512); i++) mixed[i] = 0.75f;
        yield return ("zero-and-constant-blocks", mixed);
        yield return ("positive", Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble() * 3).ToArray());
        yield return ("tiny", Gaussian(n, seed + 3, 1e-6f));
    }
}
