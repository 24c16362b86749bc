// The embedded kernel sources: every file present, every kernel the engine launches defined exactly once, and the
// constants the kernels share with the CPU side (ggml type ids, the Q8_0/Q4_0 block layouts, launch constants) in agreement.
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using Pregate.Core;
using Pregate.Cuda;
using Xunit.Abstractions;

namespace Pregate.Tests.Cuda;

public sealed class KernelSourcesTests(ITestOutputHelper output)
{
    [Fact]
    public void EveryKernelFileIsEmbeddedHeaderFirst()
    {
        var files = KernelSources.FileNames();
        output.WriteLine(string.Join(", ", files));
        Assert.Equal("common.cuh", files[0]);
        foreach (string expected in new[] { "attention.cu", "elementwise.cu", "embed.cu", "matvec.cu", "moe.cu", "quantize.cu", "rmsnorm.cu", "rope.cu" })
            Assert.Contains(expected, files);
        foreach (string f in files) Assert.False(string.IsNullOrWhiteSpace(KernelSources.Read(f)), f);
        Assert.Throws<FileNotFoundException>(() => KernelSources.Read("missing.cu"));
    }

    [Fact]
    public void EveryLaunchedKernelIsDefinedOnce()
    {
        string source = KernelSources.CombinedSource();
        var defined = Regex.Matches(source, @"extern ""C"" __global__ void (\w+)\(").Select(m => m.Groups[1].Value).ToList();
        output.WriteLine($"{defined.Count} kernels: {string.Join(", ", defined)}");
        Assert.Equal(defined.Count, defined.Distinct().Count());
        Assert.Equal(KernelSources.KernelNames.Order(), defined.Order());
    }

    [Fact]
    public void TypeIdsMatchDType()
    {
        string common = KernelSources.Read("common.cuh");
        int Define(string name) => int.Parse(Regex.Match(common, $@"#define {name} (\d+)").Groups[1].Value);
        Assert.Equal((int)DType.F32, Define("TYPE_F32"));
        Assert.Equal((int)DType.F16, Define("TYPE_F16"));
        Assert.Equal((int)DType.BF16, Define("TYPE_BF16"));
        Assert.Equal((int)DType.Q8_0, Define("TYPE_Q8_0"));
        Assert.Equal((int)DType.Q4_0, Define("TYPE_Q4_0"));
        Assert.Equal(BlockQ8_0.Size, Define("QK"));
    }

    [Fact]
    public void QuantBlocksMatchTheCpuLayout()
    {
        // The device structs: fp16 scale first, then the quants; sizes asserted in the source as on the CPU.
        string common = KernelSources.Read("common.cuh");
        Assert.Contains("struct __align__(2) block_q8_0 { unsigned short d; signed char qs[QK]; };", common);
        Assert.Contains("struct __align__(2) block_q4_0 { unsigned short d; unsigned char qs[QK / 2]; };", common);
        Assert.Contains("static_assert(sizeof(block_q8_0) == 34", common);
        Assert.Contains("static_assert(sizeof(block_q4_0) == 18", common);
        Assert.Equal(34, Unsafe.SizeOf<BlockQ8_0>());
        Assert.Equal(18, Unsafe.SizeOf<BlockQ4_0>());
        Assert.Equal(34, DTypes.BlockBytes(DType.Q8_0));
        unsafe
        {
            var b = new BlockQ8_0();
            Assert.Equal(2, (int)((byte*)b.Qs - (byte*)&b));
        }
    }

    [Fact]
    public void LaunchConstantsMatchTheKernels()
    {
        Assert.Contains($"#define MATVEC_WARPS {Launches.MatVecWarps}", KernelSources.Read("matvec.cu"));
    }

    [Fact]
    public void QuantizedActivationBytesMatchTheCpuQuantizer()
    {
        // quantize_q8_0 writes blocks the CPU's VecDot.Q8_0 reads: the engine sizes its buffer with DTypes.ByteCount.
        var x = new float[64];
        for (int i = 0; i < x.Length; i++) x[i] = (i - 20) * 0.37f;
        var q = new byte[DTypes.ByteCount(DType.Q8_0, x.Length)];
        Quantize.QuantizeQ8_0Activation(x, q);
        Assert.Equal(68, q.Length);
        float d = (float)BitConverter.ToHalf(q, 0);
        Assert.Equal(MathF.Abs(x[0]) / 127f, d, 1e-3f);
        Assert.Equal(-127, (sbyte)q[2]);
    }
}
