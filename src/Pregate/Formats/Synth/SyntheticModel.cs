// Deterministic synthetic MoE checkpoints of real shapes, written as a GGUF file or a Hugging Face folder.
// The same seed gives the same weights in both formats: every row of every tensor comes from its own random
// stream named after the HF tensor and row, and the GGUF side applies llama.cpp's converter conventions
// (GgufLayout: stacked experts, q/k row permutation for the `llama` architecture, 1-D tensors and routers in F32).
using Pregate.Core;
using Pregate.Formats.Export;
using Pregate.Formats.Gguf;
using Pregate.Formats.Safetensors;

namespace Pregate.Formats.Synth;

/// <summary>What to synthesise: a configuration, the weight type and the seed.</summary>
public sealed record SynthOptions(ModelConfig Config, DType WeightType, ulong Seed = 0);

public static class SyntheticModel
{
    /// <summary>HF checkpoints above this size are split into shards, as transformers does.</summary>
    public const long MaxShardBytes = 4L << 30;

    /// <summary>Weight types a synthetic model can have.</summary>
    public static readonly DType[] SupportedTypes = [DType.F32, DType.F16, DType.BF16, DType.Q8_0, DType.Q4_0];

    /// <summary>Writes a GGUF file that llama.cpp loads; atomically.</summary>
    public static void WriteGguf(string path, SynthOptions o, IProgress<long>? progress = null)
    {
        Check(o);
        var vocab = SynthVocab.Get(o.Config);
        o = o with { Config = vocab.Apply(o.Config) };
        var c = o.Config;
        var w = new GgufWriter();
        GgufModelConfig.Write(w, c);
        vocab.WriteGguf(w);
        foreach (var spec in TensorCatalog.For(c))
            w.AddTensor(GgufTensor(spec, o));
        w.Write(path, progress);
    }

    /// <summary>Writes a Hugging Face folder (config.json, safetensors, tokenizer.json, tokenizer_config.json); atomically.</summary>
    public static void WriteHf(string directory, SynthOptions o, IProgress<long>? progress = null)
    {
        Check(o);
        if (DTypes.IsQuantized(o.WeightType))
            throw new ArgumentException($"Hugging Face checkpoints hold f32, f16 or bf16 weights; {DTypes.Name(o.WeightType)} needs --format gguf");
        var vocab = SynthVocab.Get(o.Config);
        o = o with { Config = vocab.Apply(o.Config) };
        var c = o.Config;
        var tensors = new List<TensorData>();
        foreach (var spec in TensorCatalog.For(c))
        {
            if (spec.IsRoutedExpert)
                for (int e = 0; e < c.NumExperts; e++)
                    tensors.Add(HfTensor(spec, spec.HfNameOfExpert(e), o));
            else
                tensors.Add(HfTensor(spec, spec.HfName, o));
        }
        AtomicFile.WriteDirectory(directory, tmp =>
        {
            File.WriteAllText(Path.Combine(tmp, "config.json"), HfConfig.ToJson(c, o.WeightType));
            vocab.WriteHf(tmp, c);
            SafetensorsWriter.WriteCheckpoint(tmp, tensors, MaxShardBytes, bytesWritten: progress);
        });
    }

    /// <summary>Total bytes the weights take in the given format (for progress reporting).</summary>
    public static long WeightBytes(SynthOptions o, bool gguf)
    {
        long total = 0;
        foreach (var spec in TensorCatalog.For(o.Config))
        {
            long n = spec.Shape.Aggregate(1L, (a, b) => a * b) * (spec.IsRoutedExpert ? o.Config.NumExperts : 1);
            total += DTypes.ByteCount(gguf ? GgufType(spec, o.WeightType) : o.WeightType, n);
        }
        return total;
    }

    private static void Check(SynthOptions o)
    {
        o.Config.Validate(null);
        if (Array.IndexOf(SupportedTypes, o.WeightType) < 0)
            throw new ArgumentException($"synthetic models can be {string.Join(", ", SupportedTypes.Select(DTypes.Name))}, not {DTypes.Name(o.WeightType)}");
    }

    private static DType GgufType(TensorSpec spec, DType weightType) => GgufLayout.KeepsF32(spec) ? DType.F32 : weightType;

    private static TensorData GgufTensor(TensorSpec spec, SynthOptions o)
    {
        var c = o.Config;
        DType type = GgufType(spec, o.WeightType);
        bool permute = GgufLayout.PermutesRows(spec, c.Architecture);
        (int rows, int cols) = GgufLayout.Matrix(spec);
        return new TensorData(spec.GgufName, type, GgufLayout.Shape(spec, c), stream =>
        {
            var rw = new RowWriter(stream, type, cols);
            int experts = spec.IsRoutedExpert ? c.NumExperts : 1;
            for (int e = 0; e < experts; e++)
            {
                string name = spec.IsRoutedExpert ? spec.HfNameOfExpert(e) : spec.HfName;
                for (int r = 0; r < rows; r++)
                {
                    int src = permute ? TensorCatalog.HfRowForGgufRow(r, c.HeadDim) : r;
                    Generate(spec, name, src, o, rw.Row);
                    rw.Flush();
                }
            }
            rw.Finish();
        });
    }

    private static TensorData HfTensor(TensorSpec spec, string name, SynthOptions o)
    {
        (int rows, int cols) = GgufLayout.Matrix(spec);
        return new TensorData(name, o.WeightType, spec.Shape, stream =>
        {
            var rw = new RowWriter(stream, o.WeightType, cols);
            for (int r = 0; r < rows; r++)
            {
                Generate(spec, name, r, o, rw.Row);
                rw.Flush();
            }
            rw.Finish();
        });
    }

    // Row `row` of tensor `name`: uniform values scaled per role.
    private static void Generate(TensorSpec spec, string name, int row, SynthOptions o, Span<float> dst)
    {
        var rng = new SeededRandom(o.Seed, name + "#" + row.ToString(System.Globalization.CultureInfo.InvariantCulture));
        long fanIn = spec.Shape[^1];
        float unit = MathF.Sqrt(3f / fanIn); // uniform ±unit has variance 1/fanIn: y = W·x keeps x's scale
        (float scale, float offset) = spec.Role switch
        {
            TensorRole.TokenEmbedding => (1f, 0f),
            TensorRole.AttnNorm or TensorRole.FfnNorm or TensorRole.OutputNorm or TensorRole.AttnQNorm or TensorRole.AttnKNorm => (0.2f, 1f),
            TensorRole.AttnQBias or TensorRole.AttnKBias or TensorRole.AttnVBias => (0.2f, 0f),
            TensorRole.Router => (3f * unit, 0f),   // spread router logits so routing differs by token
            TensorRole.Output => (2f * unit, 0f),
            _ => (unit, 0f),
        };
        rng.Fill(dst, scale, offset);
        if (o.WeightType is DType.F16 or DType.BF16)
        {
            // Round through the weight type so F32 copies of 1-D tensors in GGUF hold exactly the values the HF file holds.
            Span<byte> tmp = dst.Length <= 16384 ? stackalloc byte[dst.Length * 2] : new byte[dst.Length * 2];
            Quantize.Row(o.WeightType, dst, tmp);
            Quantize.Dequantize(o.WeightType, tmp, dst);
        }
    }

    // Buffers encoded rows and writes them in large chunks.
    private sealed class RowWriter(Stream stream, DType type, int cols)
    {
        private readonly float[] _row = new float[cols];
        private readonly byte[] _buffer = new byte[Math.Max(1 << 20, (int)DTypes.ByteCount(type, cols))];
        private readonly int _rowBytes = (int)DTypes.ByteCount(type, cols);
        private int _used;

        public Span<float> Row => _row;

        public void Flush()
        {
            if (_used + _rowBytes > _buffer.Length) Finish();
            Quantize.Row(type, _row, _buffer.AsSpan(_used, _rowBytes));
            _used += _rowBytes;
        }

        public void Finish()
        {
            stream.Write(_buffer, 0, _used);
            _used = 0;
        }
    }
}
