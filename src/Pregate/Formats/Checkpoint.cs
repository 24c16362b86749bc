// A model checkpoint opened for execution: a GGUF file or a Hugging Face folder, seen through one interface
// (config, tensors by role, experts by index) so model code never cares which format it came from.
using Pregate.Core;
using Pregate.Formats.Gguf;
using Pregate.Formats.Safetensors;

namespace Pregate.Formats;

public enum CheckpointFormat { Gguf, HuggingFace }

/// <summary>
/// An opened model. Every tensor the architecture needs is checked at open time against the shape
/// <see cref="TensorCatalog"/> expects; the views stay valid until <see cref="Dispose"/>.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    private readonly GgufFile? _gguf;
    private readonly SafetensorsCheckpoint? _st;
    private readonly Dictionary<(TensorRole, int), TensorView> _byRole = new();
    private readonly Dictionary<(TensorRole, int), TensorView[]> _experts = new();

    public string Path { get; }
    public CheckpointFormat Format { get; }
    public ModelConfig Config { get; }
    public IReadOnlyList<TensorSpec> Specs { get; }

    /// <summary>All tensors stored in the file(s), as stored.</summary>
    public IReadOnlyList<TensorView> Tensors => _gguf is not null ? _gguf.Tensors : _st!.Tensors;

    /// <summary>
    /// True when q/k rows are stored in llama.cpp's NORMAL rotary pairing (GGUF `llama` architecture): rotate adjacent
    /// pairs. False: HF's NEOX half-split pairing.
    /// </summary>
    public bool RopeAdjacentPairs { get; }

    /// <summary>The GGUF file when <see cref="Format"/> is GGUF (metadata such as the vocabulary lives there).</summary>
    public GgufFile? Gguf => _gguf;

    /// <summary>
    /// Types of the low-precision copies of the routed experts stored beside the main ones: GGUF tensors named
    /// <c>{stacked expert tensor}.{type}</c> (e.g. <c>blk.3.ffn_gate_exps.weight.q4_0</c>, written by
    /// <c>pregate quantize --dual</c>), in file order; empty when there are none (always for a Hugging Face folder).
    /// A type is listed when any expert tensor has such a copy; <see cref="GetExpertCopy"/> checks each one.
    /// </summary>
    public IReadOnlyList<DType> ExpertCopyTypes { get; }

    private Checkpoint(string path, CheckpointFormat format, ModelConfig config, GgufFile? gguf, SafetensorsCheckpoint? st)
    {
        Path = path;
        Format = format;
        Config = config;
        _gguf = gguf;
        _st = st;
        RopeAdjacentPairs = format == CheckpointFormat.Gguf && TensorCatalog.GgufUsesNormalRope(config.Architecture);
        Specs = TensorCatalog.For(config);
        Bind();
        ExpertCopyTypes = FindExpertCopyTypes();
    }

    /// <summary>Opens a GGUF file, or a Hugging Face folder holding config.json and safetensors.</summary>
    /// <exception cref="ModelFormatException">The files are missing, malformed, or disagree with the config.</exception>
    public static Checkpoint Open(string path)
    {
        if (Directory.Exists(path))
        {
            string cfg = System.IO.Path.Combine(path, "config.json");
            if (!File.Exists(cfg)) throw new ModelFormatException(path, "folder has no config.json (expected a Hugging Face checkpoint)");
            var config = HfConfig.Load(cfg);
            var st = SafetensorsCheckpoint.Open(path);
            try { return new Checkpoint(path, CheckpointFormat.HuggingFace, config, null, st); }
            catch { st.Dispose(); throw; }
        }
        if (!File.Exists(path)) throw new ModelFormatException(path, "no such file or folder");
        var gguf = GgufFile.Open(path);
        try { return new Checkpoint(path, CheckpointFormat.Gguf, GgufModelConfig.Read(gguf), gguf, null); }
        catch { gguf.Dispose(); throw; }
    }

    /// <summary>The tensor of <paramref name="role"/> in <paramref name="layer"/> (-1 for global tensors).</summary>
    public TensorView Get(TensorRole role, int layer = -1) =>
        _byRole.TryGetValue((role, layer), out var v) ? v
            : throw new ModelFormatException(Path, $"model has no {role} tensor{(layer >= 0 ? $" in layer {layer}" : "")}");

    public bool TryGet(TensorRole role, int layer, out TensorView view) => _byRole.TryGetValue((role, layer), out view);

    /// <summary>Expert <paramref name="expert"/>'s matrix of <paramref name="role"/> (ExpertGate/Up/Down) in <paramref name="layer"/>.</summary>
    public TensorView GetExpert(TensorRole role, int layer, int expert) => _experts[(role, layer)][expert];

    /// <summary>
    /// Expert <paramref name="expert"/>'s matrix of <paramref name="role"/> in <paramref name="layer"/> from its copy of
    /// <paramref name="type"/> (see <see cref="ExpertCopyTypes"/>): a slice of the stacked tensor <c>{name}.{type}</c>, as
    /// <see cref="GetExpert"/> slices the main one.
    /// </summary>
    /// <exception cref="ModelFormatException">The copy is missing, has another shape than the main tensor, or is stored in
    /// another type than its name says (the message names the tensor).</exception>
    public TensorView GetExpertCopy(TensorRole role, int layer, int expert, DType type)
    {
        var spec = Specs.FirstOrDefault(s => s.Role == role && s.Layer == layer && s.IsRoutedExpert)
                   ?? throw new ArgumentException($"{role} in layer {layer} is not a routed-expert tensor of this model", nameof(role));
        ArgumentOutOfRangeException.ThrowIfNegative(expert);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(expert, Config.NumExperts);
        string name = $"{spec.GgufName}.{DTypes.Name(type)}";
        if (_gguf is null || !_gguf.TryGetTensor(name, out var stacked))
            throw new ModelFormatException(Path, $"missing tensor '{name}' (the {DTypes.Name(type)} copy of '{spec.GgufName}')");
        int n = Config.NumExperts;
        CheckShape(stacked, [n, .. spec.Shape]);
        if (stacked.Type != type) throw new ModelFormatException(Path, $"tensor '{name}' is stored as {DTypes.Name(stacked.Type)}, not the {DTypes.Name(type)} its name says");
        CheckType(stacked, spec);
        long bytes = stacked.ByteLength / n;
        return new TensorView($"{name}[{expert}]", stacked.Type, spec.Shape, stacked.Pointer + (nint)(expert * bytes), bytes);
    }

    /// <summary>
    /// The file holding <paramref name="view"/>'s bytes and the offset of its first byte there, for reading a tensor (e.g. an
    /// expert's matrix) around the memory map. <paramref name="view"/> must come from this checkpoint.
    /// </summary>
    /// <exception cref="ArgumentException">The view does not lie in this checkpoint's files.</exception>
    public (string File, long Offset) Locate(in TensorView view)
    {
        if (_gguf is not null) return (_gguf.Path, _gguf.GetFileOffset(view));
        if (!_st!.TryGetTensor(view.Name, out var stored) || stored.Pointer != view.Pointer)
            throw new ArgumentException($"tensor '{view.Name}' does not belong to {Path}", nameof(view));
        var file = _st.GetFile(view.Name);
        return (file.Path, file.GetFileOffset(view.Name));
    }

    private void Bind()
    {
        foreach (var spec in Specs)
        {
            if (spec.IsRoutedExpert) BindExperts(spec);
            else _byRole[(spec.Role, spec.Layer)] = Find(spec);
        }
    }

    private TensorView Find(TensorSpec spec)
    {
        string name = _gguf is not null ? spec.GgufName : spec.HfName;
        if (!TryFind(name, out var v))
        {
            // A tied checkpoint may still carry an lm_head copy; an untied one must have it.
            throw new ModelFormatException(Path, $"missing tensor '{name}'");
        }
        long[] expected = _gguf is not null && spec.Role == TensorRole.SharedExpertGate ? [spec.Shape[^1]] : spec.Shape;
        CheckShape(v, expected);
        CheckType(v, spec);
        return v;
    }

    private void BindExperts(TensorSpec spec)
    {
        int n = Config.NumExperts;
        var views = new TensorView[n];
        if (_gguf is not null)
        {
            if (!TryFind(spec.GgufName, out var stacked)) throw new ModelFormatException(Path, $"missing tensor '{spec.GgufName}'");
            CheckShape(stacked, [n, .. spec.Shape]);
            CheckType(stacked, spec);
            long bytes = stacked.ByteLength / n;
            for (int e = 0; e < n; e++)
                views[e] = new TensorView($"{spec.GgufName}[{e}]", stacked.Type, spec.Shape, stacked.Pointer + (nint)(e * bytes), bytes);
        }
        else
        {
            for (int e = 0; e < n; e++)
            {
                string name = spec.HfNameOfExpert(e);
                if (!TryFind(name, out var v)) throw new ModelFormatException(Path, $"missing tensor '{name}'");
                CheckShape(v, spec.Shape);
                CheckType(v, spec);
                views[e] = v;
            }
        }
        _experts[(spec.Role, spec.Layer)] = views;
    }

    // The {type} suffixes of GGUF tensors named {routed expert tensor}.{type}.
    private DType[] FindExpertCopyTypes()
    {
        if (_gguf is null) return [];
        var experts = Specs.Where(s => s.IsRoutedExpert).Select(s => s.GgufName).ToHashSet(StringComparer.Ordinal);
        var types = new List<DType>();
        foreach (var t in _gguf.Tensors)
        {
            int dot = t.Name.LastIndexOf('.');
            if (dot > 0 && experts.Contains(t.Name[..dot]) && DTypes.TryParse(t.Name[(dot + 1)..], out var type)
                && DTypes.Name(type) == t.Name[(dot + 1)..] && !types.Contains(type)) types.Add(type);
        }
        return types.ToArray();
    }

    private bool TryFind(string name, out TensorView v) =>
        _gguf is not null ? _gguf.TryGetTensor(name, out v) : _st!.TryGetTensor(name, out v);

    private void CheckShape(TensorView v, long[] expected)
    {
        if (!v.Shape.AsSpan().SequenceEqual(expected))
            throw new ModelFormatException(Path, $"tensor '{v.Name}' has shape [{string.Join(", ", v.Shape)}], expected [{string.Join(", ", expected)}] from the config");
    }

    private void CheckType(TensorView v, TensorSpec spec)
    {
        bool ok = v.Type is DType.F32 or DType.F16 or DType.BF16
            || (!spec.IsVector && v.Type is DType.Q8_0 or DType.Q4_0 or DType.Q4_K or DType.Q6_K);
        if (!ok) throw new ModelFormatException(Path, $"tensor '{v.Name}' has type {DTypes.Name(v.Type)}, which Pregate cannot use for {spec.Role}");
    }

    public void Dispose()
    {
        _gguf?.Dispose();
        _st?.Dispose();
    }
}
