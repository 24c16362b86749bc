// The dtype strings of the safetensors header (huggingface/safetensors, Dtype enum) that map onto Pregate's DType.
using Pregate.Core;

namespace Pregate.Formats.Safetensors;

/// <summary>Names of the element types a safetensors header may carry and Pregate reads or writes.</summary>
public static class SafetensorsDType
{
    /// <summary>The header string of <paramref name="type"/> ("F32", "BF16" …), or null when safetensors cannot store it (quantized types).</summary>
    public static string? TryGetName(DType type) => type switch
    {
        DType.F32 => "F32",
        DType.F16 => "F16",
        DType.BF16 => "BF16",
        DType.F64 => "F64",
        DType.I64 => "I64",
        DType.I32 => "I32",
        DType.I16 => "I16",
        DType.I8 => "I8",
        _ => null,
    };

    /// <summary>Maps a header dtype string (case-sensitive, as the format defines it) to a <see cref="DType"/>.</summary>
    public static bool TryParse(string name, out DType type)
    {
        switch (name)
        {
            case "F32": type = DType.F32; return true;
            case "F16": type = DType.F16; return true;
            case "BF16": type = DType.BF16; return true;
            case "F64": type = DType.F64; return true;
            case "I64": type = DType.I64; return true;
            case "I32": type = DType.I32; return true;
            case "I16": type = DType.I16; return true;
            case "I8": type = DType.I8; return true;
            default: type = default; return false;
        }
    }
}
