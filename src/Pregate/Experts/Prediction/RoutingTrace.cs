// The routing of one recorded run: for every token step (in the order tokens passed layer 0) and layer, the router's top-k
// expert ids. Recorded through the forward observer from a resident run; replayed by the oracle predictor.
using System.Buffers.Binary;
using Pregate.Core;
using Pregate.Models;

namespace Pregate.Experts.Prediction;

/// <summary>
/// Top-k expert ids per (token step, layer) of a recorded run. Steps count tokens in the order they ran through layer 0
/// (a prefill block's tokens in order, then each decoded token).
/// </summary>
public sealed class RoutingTrace
{
    private static ReadOnlySpan<byte> Magic => "PGRT"u8;
    private readonly List<int[]> _steps = new(); // [step] → [layer · topK + j]

    /// <exception cref="ArgumentOutOfRangeException">Fewer than one layer or expert per token.</exception>
    public RoutingTrace(int layerCount, int topK)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layerCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(topK);
        LayerCount = layerCount;
        TopK = topK;
    }

    public int LayerCount { get; }
    public int TopK { get; }

    /// <summary>Token steps recorded.</summary>
    public int StepCount => _steps.Count;

    /// <summary>The ids layer <paramref name="layer"/> routed token step <paramref name="step"/> to, in the router's order.</summary>
    public ReadOnlySpan<int> Experts(int step, int layer) => _steps[step].AsSpan(layer * TopK, TopK);

    /// <summary>Appends a step with no routing yet; returns its index.</summary>
    public int AddStep()
    {
        _steps.Add(new int[LayerCount * TopK]);
        return _steps.Count - 1;
    }

    /// <summary>Sets what <paramref name="layer"/> routed step <paramref name="step"/> to.</summary>
    /// <exception cref="ArgumentException">Not exactly <see cref="TopK"/> ids.</exception>
    public void Set(int step, int layer, ReadOnlySpan<int> ids)
    {
        if (ids.Length != TopK) throw new ArgumentException($"{ids.Length} ids; the trace holds {TopK} per layer", nameof(ids));
        ids.CopyTo(_steps[step].AsSpan(layer * TopK, TopK));
    }

    /// <summary>Writes "PGRT", then int32 layers, top-k, steps (little-endian), then the ids step by step.</summary>
    public void Save(Stream stream)
    {
        Span<byte> header = stackalloc byte[16];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteInt32LittleEndian(header[4..], LayerCount);
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], TopK);
        BinaryPrimitives.WriteInt32LittleEndian(header[12..], StepCount);
        stream.Write(header);
        var row = new byte[LayerCount * TopK * 4];
        foreach (int[] step in _steps)
        {
            for (int i = 0; i < step.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(row.AsSpan(i * 4), step[i]);
            stream.Write(row);
        }
    }

    /// <summary>Reads a trace written by <see cref="Save"/> for a model of <paramref name="expertCount"/> experts per layer.</summary>
    /// <exception cref="ModelFormatException">Not a trace, truncated, or an id outside [0, expertCount).</exception>
    public static RoutingTrace Load(string path, int expertCount)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 16 || !bytes.AsSpan(0, 4).SequenceEqual(Magic)) throw new ModelFormatException(path, "not a routing trace (no PGRT header)");
        int layers = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(4)), topK = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(8));
        int steps = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(12));
        if (layers < 1 || topK < 1 || steps < 0 || (long)layers * topK * steps * 4 != bytes.Length - 16)
            throw new ModelFormatException(path, $"routing trace of {layers} layers × top-{topK} × {steps} steps does not match its {bytes.Length} bytes");
        var trace = new RoutingTrace(layers, topK);
        int at = 16;
        for (int s = 0; s < steps; s++)
        {
            var row = new int[layers * topK];
            for (int i = 0; i < row.Length; i++, at += 4)
            {
                row[i] = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(at));
                if ((uint)row[i] >= (uint)expertCount) throw new ModelFormatException(path, $"expert id {row[i]} at step {s} is outside 0..{expertCount - 1}");
            }
            trace._steps.Add(row);
        }
        return trace;
    }
}

/// <summary>
/// A forward observer that records the routing of every token into a <see cref="RoutingTrace"/>: a token's layer-0 routing
/// opens a step, later layers' routing of the same position fills it.
/// </summary>
public sealed class RoutingRecorder(int layerCount, int topK) : IForwardObserver
{
    private readonly Dictionary<int, int> _stepOfPosition = new(); // position → its latest step

    public RoutingTrace Trace { get; } = new(layerCount, topK);

    public void OnTensor(string name, int layer, int position, ReadOnlySpan<float> values) { }

    public void OnRouting(int layer, int position, ReadOnlySpan<float> probs, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights)
    {
        if (layer == 0) _stepOfPosition[position] = Trace.AddStep();
        Trace.Set(_stepOfPosition[position], layer, ids);
    }
}
