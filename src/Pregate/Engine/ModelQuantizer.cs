// `pregate quantize`: an unquantized checkpoint (GGUF or Hugging Face folder) to a quantized GGUF file, by round-to-nearest
// per block or by GPTQ on calibration activations (per expert on the tokens routed to it, optionally expert-balanced).
// Routers and norms stay F32 (the router F16 on request), the token embedding F16; matrices whose rows are not whole blocks
// of the type fall back as llama.cpp's quantizer does (q4_k → q4_0, q6_k → q8_0, else f16).
using System.Globalization;
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Export;

namespace Pregate.Engine;

public enum QuantMethod { Rtn, Calibrated }

/// <summary>What <see cref="ModelQuantizer.Run"/> writes.</summary>
public sealed record QuantizeOptions
{
    /// <summary>Target type of the weight matrices: q8_0, q4_0, q4_k or q6_k.</summary>
    public required DType Type { get; init; }
    public QuantMethod Method { get; init; } = QuantMethod.Rtn;

    /// <summary>Calibration text (required for <see cref="QuantMethod.Calibrated"/>).</summary>
    public string? CalibrationText { get; init; }
    public QuantCalibrationOptions Calibration { get; init; } = new();

    /// <summary>Type of the router (ffn_gate_inp): f32 (default) or f16.</summary>
    public DType RouterType { get; init; } = DType.F32;

    /// <summary>Types of low-precision expert copies stored beside the main experts as {name}.{type}.</summary>
    public IReadOnlyList<DType> DualTypes { get; init; } = [];

    public static readonly DType[] SupportedTypes = [DType.Q8_0, DType.Q4_0, DType.Q4_K, DType.Q6_K];
}

/// <summary>Squared output error Σ‖(W − Ŵ)X‖² on the calibration inputs, summed over a group of matrices, for RTN and GPTQ.</summary>
public sealed record QuantError(string Group, int Matrices, double Rtn, double Gptq);

public sealed record QuantizeReport(DType Type, QuantMethod Method, long FileBytes, long ExpertBytesPerToken, QuantCalibrationData? Calibration, IReadOnlyList<QuantError> Errors);

public static class ModelQuantizer
{
    /// <summary>Quantizes <paramref name="input"/> into <paramref name="output"/> (written atomically).</summary>
    /// <exception cref="ModelFormatException">The input is malformed or already quantized.</exception>
    /// <exception cref="ArgumentException">Unsupported type or options, or calibration without text.</exception>
    public static QuantizeReport Run(string input, string output, QuantizeOptions o, IProgress<string>? log = null, IProgress<long>? bytesWritten = null)
    {
        if (Array.IndexOf(QuantizeOptions.SupportedTypes, o.Type) < 0)
            throw new ArgumentException($"quantize types are {string.Join(", ", QuantizeOptions.SupportedTypes.Select(DTypes.Name))}, not {DTypes.Name(o.Type)}");
        if (o.RouterType is not (DType.F32 or DType.F16)) throw new ArgumentException($"the router stays f32 or f16, not {DTypes.Name(o.RouterType)}");
        foreach (var t in o.DualTypes)
            if (Array.IndexOf(QuantizeOptions.SupportedTypes, t) < 0) throw new ArgumentException($"expert copies can be {string.Join(", ", QuantizeOptions.SupportedTypes.Select(DTypes.Name))}, not {DTypes.Name(t)}");
        if (o.Method == QuantMethod.Calibrated && o.CalibrationText is null) throw new ArgumentException("calibrated quantization needs a calibration text");

        QuantCalibrationData? calibration = null;
        if (o.Method == QuantMethod.Calibrated)
        {
            using var session = ModelSession.Open(input, new EngineOptions { Context = o.Calibration.Window });
            CheckUnquantized(session.Checkpoint);
            calibration = QuantCalibration.Run(session, o.CalibrationText!, o.Calibration, log);
        }

        using var ck = Checkpoint.Open(input);
        CheckUnquantized(ck);
        var errors = new Dictionary<string, (int Count, double Rtn, double Gptq)>();
        MatrixEncoder? encoder = calibration is null ? null : (spec, expert, weights, rows, cols, type, dst) =>
        {
            var h = BlockGrid.Supports(type) ? calibration.For(spec, expert) : null;
            if (h is null)
            {
                RoundToNearest(type, weights, rows, cols, dst);
                return;
            }
            var rtn = new byte[dst.Length];
            RoundToNearest(type, weights, rows, cols, rtn);
            string group = Group(spec);
            double eRtn, eGptq;
            if (spec.Role == TensorRole.Output && calibration.OutputRows is { } stats)
            {
                // Each vocabulary row on its own probability-weighted Hessian; the error reported is in that metric.
                log?.Report(string.Create(CultureInfo.InvariantCulture,
                    $"output matrix: per-row Hessians from {stats.Positions} positions, {stats.StoredProbabilities} stored probabilities ({stats.StoredMass:P1} of the mass)"));
                group += " (probability-weighted)";
                (eRtn, eGptq) = (0, 0);
                var hv = new double[cols * cols];
                int rowBytes = (int)DTypes.ByteCount(type, cols);
                for (int r = 0; r < rows; r++)
                {
                    stats.RowHessian(r, h, hv);
                    var wr = weights.AsSpan(r * cols, cols);
                    var dr = dst.Slice(r * rowBytes, rowBytes);
                    Gptq.QuantizeMatrix(type, wr, 1, cols, hv, dr);
                    eRtn += Gptq.OutputError(type, wr, rtn.AsSpan(r * rowBytes, rowBytes), 1, cols, hv);
                    eGptq += Gptq.OutputError(type, wr, dr, 1, cols, hv);
                }
            }
            else
            {
                Gptq.QuantizeMatrix(type, weights, rows, cols, h, dst);
                (eRtn, eGptq) = (Gptq.OutputError(type, weights, rtn, rows, cols, h), Gptq.OutputError(type, weights, dst, rows, cols, h));
            }
            errors.TryGetValue(group, out var e);
            errors[group] = (e.Count + 1, e.Rtn + eRtn, e.Gptq + eGptq);
        };
        var options = new GgufExportOptions
        {
            TypeOf = spec => TypeOf(spec, o.Type, o.RouterType),
            FileType = o.Type,
            Encoder = encoder,
            ExpertCopies = o.DualTypes.Select(t => new ExtraExpertCopy("." + DTypes.Name(t), t)).ToArray(),
        };
        log?.Report($"writing {output}");
        GgufExport.Write(ck, output, options, bytesWritten);

        long expertBytes = 0;
        foreach (var spec in ck.Specs)
            if (spec.IsRoutedExpert) expertBytes += DTypes.ByteCount(options.TypeOf(spec), spec.Shape.Aggregate(1L, (a, b) => a * b));
        var c = ck.Config;
        return new QuantizeReport(o.Type, o.Method, new FileInfo(output).Length, expertBytes * c.NumExpertsUsed, calibration,
            errors.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => new QuantError(kv.Key, kv.Value.Count, kv.Value.Rtn, kv.Value.Gptq)).ToArray());
    }

    /// <summary>Bytes of tensor data <see cref="Run"/> writes for <paramref name="input"/> (for progress).</summary>
    /// <exception cref="ModelFormatException">The input is malformed.</exception>
    public static long TensorBytes(string input, QuantizeOptions o)
    {
        using var ck = Checkpoint.Open(input);
        return GgufExport.TensorBytes(ck, new GgufExportOptions
        {
            TypeOf = spec => TypeOf(spec, o.Type, o.RouterType),
            FileType = o.Type,
            ExpertCopies = o.DualTypes.Select(t => new ExtraExpertCopy("." + DTypes.Name(t), t)).ToArray(),
        });
    }

    /// <summary>
    /// The type a tensor gets: F32 for norms and biases, <paramref name="router"/> for the router, F16 for the token embedding,
    /// else <paramref name="type"/> — or its fallback when the rows are not whole blocks (q4_k → q4_0, q6_k → q8_0, then f16).
    /// </summary>
    public static DType TypeOf(TensorSpec spec, DType type, DType router = DType.F32)
    {
        if (spec.Role == TensorRole.Router) return router;
        if (GgufLayout.KeepsF32(spec)) return DType.F32;
        if (spec.Role == TensorRole.TokenEmbedding) return DType.F16;
        long cols = spec.Shape[^1];
        foreach (var t in type switch { DType.Q4_K => new[] { DType.Q4_K, DType.Q4_0 }, DType.Q6_K => [DType.Q6_K, DType.Q8_0], _ => [type] })
            if (cols % DTypes.BlockSize(t) == 0) return t;
        return DType.F16;
    }

    private static void CheckUnquantized(Checkpoint ck)
    {
        foreach (var t in ck.Tensors)
            if (DTypes.IsQuantized(t.Type))
                throw new ModelFormatException(ck.Path, $"the model is already quantized (tensor '{t.Name}' is {DTypes.Name(t.Type)}); quantize from an f32, f16 or bf16 model");
    }

    private static void RoundToNearest(DType type, float[] weights, int rows, int cols, Span<byte> dst)
    {
        int rowBytes = (int)DTypes.ByteCount(type, cols);
        for (int r = 0; r < rows; r++) Quantize.Row(type, weights.AsSpan(r * cols, cols), dst.Slice(r * rowBytes, rowBytes));
    }

    private static string Group(TensorSpec spec) => spec.Role switch
    {
        TensorRole.AttnQ or TensorRole.AttnK or TensorRole.AttnV or TensorRole.AttnOutput => "attention",
        TensorRole.ExpertGate or TensorRole.ExpertUp => "expert gate/up",
        TensorRole.ExpertDown => "expert down",
        TensorRole.SharedGate or TensorRole.SharedUp or TensorRole.SharedDown => "shared expert",
        TensorRole.Output => "output",
        _ => spec.Role.ToString(),
    };
}
