// Writes any opened checkpoint (a Hugging Face folder or a GGUF file) as a GGUF file llama.cpp loads, with a chosen type per
// tensor and a pluggable matrix encoder (round to nearest per block by default; GPTQ for calibrated quantization). Metadata
// comes from the GGUF source as is, or for a Hugging Face source from its config and tokenizer (HfTokenizerGguf).
using Pregate.Core;
using Pregate.Formats.Gguf;

namespace Pregate.Formats.Export;

/// <summary>
/// Encodes one weight matrix. <paramref name="weights"/> is [rows, cols] row-major in GGUF row order (q/k rows already
/// permuted for the `llama` architecture) and may be modified; <paramref name="destination"/> receives
/// <c>rows · ByteCount(type, cols)</c> bytes. <paramref name="expert"/> is −1 outside routed experts.
/// </summary>
public delegate void MatrixEncoder(TensorSpec spec, int expert, float[] weights, int rows, int cols, DType type, Span<byte> destination);

/// <summary>An extra stacked-expert tensor stored beside the main one: <c>{GGUF name}{Suffix}</c> with experts in <see cref="Type"/>.</summary>
public sealed record ExtraExpertCopy(string Suffix, DType Type);

/// <summary>What to write: the type of each tensor, the encoder, the main weight type (general.file_type) and extra copies.</summary>
public sealed record GgufExportOptions
{
    /// <summary>The type of each tensor; must be F32 for <see cref="GgufLayout.KeepsF32"/> tensors other than the router.</summary>
    public required Func<TensorSpec, DType> TypeOf { get; init; }

    /// <summary>The file's main weight type (general.file_type).</summary>
    public required DType FileType { get; init; }

    /// <summary>Null: each row rounded to nearest with <see cref="Quantize.Row"/>.</summary>
    public MatrixEncoder? Encoder { get; init; }

    /// <summary>Low-precision copies of every routed-expert tensor, written right after the main one.</summary>
    public IReadOnlyList<ExtraExpertCopy> ExpertCopies { get; init; } = [];
}

public static class GgufExport
{
    /// <summary>Metadata keys the export sets itself and therefore never copies from a GGUF source.</summary>
    private static readonly string[] OwnKeys = [GgufFile.AlignmentKey, "general.file_type", "general.quantization_version"];

    /// <summary>Writes <paramref name="source"/> to <paramref name="path"/> atomically; <paramref name="progress"/> gets bytes written.</summary>
    /// <exception cref="ModelFormatException">The source's tokenizer cannot be converted.</exception>
    /// <exception cref="ArgumentException">A tensor's row length is not a whole number of its type's blocks.</exception>
    public static void Write(Checkpoint source, string path, GgufExportOptions o, IProgress<long>? progress = null)
    {
        var c = source.Config;
        var w = new GgufWriter();
        if (source.Gguf is { } g)
        {
            foreach (string key in g.MetadataKeys)
                if (Array.IndexOf(OwnKeys, key) < 0) w.Add(key, g.Metadata[key]);
        }
        else
        {
            // The tokenizer keys come first here (llama.cpp reads keys in any order); it names no bos/eos ids itself.
            (int? bos, int? eos) = HfTokenizerGguf.Write(w, source.Path, c.VocabSize);
            var withIds = c with { BosTokenId = c.BosTokenId ?? bos, EosTokenIds = c.EosTokenIds.Count > 0 || eos is null ? c.EosTokenIds : [eos.Value] };
            GgufModelConfig.Write(w, withIds, System.IO.Path.GetFileName(System.IO.Path.TrimEndingDirectorySeparator(source.Path)));
        }
        w.AddUInt32("general.file_type", GgufLayout.FileType(o.FileType));
        if (DTypes.IsQuantized(o.FileType)) w.AddUInt32("general.quantization_version", 2);
        foreach (var spec in source.Specs)
        {
            w.AddTensor(Tensor(source, spec, spec.GgufName, o.TypeOf(spec), o.Encoder));
            if (spec.IsRoutedExpert)
                foreach (var copy in o.ExpertCopies)
                    w.AddTensor(Tensor(source, spec, spec.GgufName + copy.Suffix, copy.Type, o.Encoder));
        }
        w.Write(path, progress);
    }

    /// <summary>Bytes of tensor data the export writes (for progress).</summary>
    public static long TensorBytes(Checkpoint source, GgufExportOptions o)
    {
        long total = 0;
        foreach (var spec in source.Specs)
        {
            long n = GgufLayout.Shape(spec, source.Config).Aggregate(1L, (a, b) => a * b);
            total += DTypes.ByteCount(o.TypeOf(spec), n);
            if (spec.IsRoutedExpert) foreach (var copy in o.ExpertCopies) total += DTypes.ByteCount(copy.Type, n);
        }
        return total;
    }

    /// <summary>
    /// One matrix of <paramref name="spec"/> (expert <paramref name="expert"/> of a routed-expert role, else −1) widened to
    /// float, [rows, cols] in GGUF row order: a Hugging Face source's q/k rows are permuted for the `llama` architecture.
    /// </summary>
    public static float[] ReadMatrix(Checkpoint ck, TensorSpec spec, int expert)
    {
        var view = spec.IsRoutedExpert ? ck.GetExpert(spec.Role, spec.Layer, expert) : ck.Get(spec.Role, spec.Layer);
        (int rows, int cols) = GgufLayout.Matrix(spec);
        var values = new float[checked((long)rows * cols)];
        long rowBytes = DTypes.ByteCount(view.Type, cols);
        bool permute = ck.Format == CheckpointFormat.HuggingFace && GgufLayout.PermutesRows(spec, ck.Config.Architecture);
        for (int r = 0; r < rows; r++)
        {
            int src = permute ? TensorCatalog.HfRowForGgufRow(r, ck.Config.HeadDim) : r;
            unsafe
            {
                var bytes = new ReadOnlySpan<byte>((byte*)view.Pointer + src * rowBytes, checked((int)rowBytes));
                Quantize.Dequantize(view.Type, bytes, values.AsSpan(r * cols, cols));
            }
        }
        return values;
    }

    private static TensorData Tensor(Checkpoint ck, TensorSpec spec, string name, DType type, MatrixEncoder? encoder)
    {
        var c = ck.Config;
        (int rows, int cols) = GgufLayout.Matrix(spec);
        int experts = spec.IsRoutedExpert ? c.NumExperts : 1;
        long rowBytes = DTypes.ByteCount(type, cols);
        if (cols % DTypes.BlockSize(type) != 0)
            throw new ArgumentException($"tensor '{name}' rows of {cols} are not whole {DTypes.Name(type)} blocks of {DTypes.BlockSize(type)}");
        return new TensorData(name, type, GgufLayout.Shape(spec, c), stream =>
        {
            var buffer = new byte[checked(rows * rowBytes)];
            for (int e = 0; e < experts; e++)
            {
                var weights = ReadMatrix(ck, spec, spec.IsRoutedExpert ? e : -1);
                if (encoder is not null && !spec.IsVector && DTypes.IsQuantized(type))
                    encoder(spec, spec.IsRoutedExpert ? e : -1, weights, rows, cols, type, buffer);
                else
                    for (int r = 0; r < rows; r++)
                        Quantize.Row(type, weights.AsSpan(r * cols, cols), buffer.AsSpan((int)(r * rowBytes), (int)rowBytes));
                stream.Write(buffer);
            }
        });
    }
}
