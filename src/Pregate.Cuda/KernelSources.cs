// The kernel sources shipped inside the assembly (Kernels/*.cu, *.cuh as embedded resources) and the one program NVRTC
// compiles from them: common.cuh first, then every .cu file in name order.
using System.Reflection;

namespace Pregate.Cuda;

/// <summary>Embedded CUDA sources and the kernels they define.</summary>
public static class KernelSources
{
    private const string Prefix = "Pregate.Cuda.Kernels.";

    /// <summary>The header every kernel file uses; it opens the combined program.</summary>
    public const string CommonHeader = "common.cuh";

    /// <summary>Every kernel the engine launches (extern "C" names).</summary>
    public static IReadOnlyList<string> KernelNames { get; } =
    [
        "embed_row", "rms_norm_rows", "rope", "attention", "matvec", "matvec_experts", "quantize_q8_0", "dequantize_f16",
        "float_to_f16", "softmax_topk", "silu_mul", "moe_combine", "dot", "sigmoid_gated_add", "add",
    ];

    /// <summary>File names of the embedded sources: the header first, then the .cu files in ordinal order.</summary>
    public static IReadOnlyList<string> FileNames()
    {
        var names = typeof(KernelSources).Assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith(Prefix, StringComparison.Ordinal))
            .Select(n => n[Prefix.Length..])
            .Where(n => n != CommonHeader && n.EndsWith(".cu", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal);
        return [CommonHeader, .. names];
    }

    /// <summary>The text of embedded source <paramref name="fileName"/>; throws <see cref="FileNotFoundException"/> when absent.</summary>
    public static string Read(string fileName)
    {
        using var stream = typeof(KernelSources).Assembly.GetManifestResourceStream(Prefix + fileName)
            ?? throw new FileNotFoundException($"kernel source {fileName} is not embedded in {typeof(KernelSources).Assembly.GetName().Name}");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    /// <summary>The program NVRTC compiles: every file of <see cref="FileNames"/> in order, each after a #line marker.</summary>
    public static string CombinedSource()
    {
        var text = new System.Text.StringBuilder();
        foreach (string name in FileNames())
        {
            text.Append("#line 1 \"").Append(name).Append("\"\n");
            text.Append(Read(name)).Append('\n');
        }
        return text.ToString();
    }
}
