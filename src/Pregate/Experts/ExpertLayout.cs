// Where every routed expert's bytes live on disk, and how one expert is placed in a cache slot: the 4096-aligned ranges
// covering its parts (gate, up, down) are read back to back, and each part starts at its offset inside its range.
using Pregate.Core;

namespace Pregate.Experts;

/// <summary>One contiguous byte range of an expert (usually one matrix: gate, up or down) in a file.</summary>
public readonly record struct ExpertPart(string Path, long Offset, long Length);

/// <summary>
/// One tensor that stacks a matrix of every expert of a layer, expert-major ([E, out, in], as GGUF's
/// <c>ffn_gate_exps</c>): expert e occupies [<see cref="Offset"/> + e·<see cref="BytesPerExpert"/>, + <see cref="BytesPerExpert"/>).
/// </summary>
public readonly record struct StackedTensor(string Path, long Offset, long BytesPerExpert);

/// <summary>The parts of one expert, in the order model code expects them (e.g. gate, up, down).</summary>
public sealed class ExpertExtent
{
    /// <exception cref="ArgumentException">No parts, an empty path, a negative offset or a non-positive length.</exception>
    public ExpertExtent(IReadOnlyList<ExpertPart> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        if (parts.Count == 0) throw new ArgumentException("An expert needs at least one part.", nameof(parts));
        foreach (ExpertPart p in parts)
        {
            if (string.IsNullOrEmpty(p.Path)) throw new ArgumentException("An expert part has no file path.", nameof(parts));
            if (p.Offset < 0 || p.Length <= 0)
                throw new ArgumentException($"An expert part in '{p.Path}' has offset {p.Offset} and length {p.Length}; need offset ≥ 0 and length > 0.", nameof(parts));
        }
        Parts = parts.ToArray();
    }

    public IReadOnlyList<ExpertPart> Parts { get; }

    /// <summary>Σ part lengths (the expert's bytes in the file).</summary>
    public long ByteLength => Parts.Sum(p => p.Length);
}

/// <summary>
/// Extents of all experts of a model (<see cref="LayerCount"/> × <see cref="ExpertCount"/>) and the slot size they need.
/// Slot placement of an expert: parts are taken in order; a part whose 4096-aligned covering range starts inside (or right
/// after) the previous part's range in the same file extends that read, otherwise a new aligned read begins at the next
/// free slot offset. <see cref="SlotBytes"/> = max over experts of Σ aligned read lengths, which is at most
/// Σ (AlignUp(part length) + 4096) per expert.
/// </summary>
public sealed class ExpertLayout
{
    private readonly ExpertExtent[] _extents;   // [layer * ExpertCount + expert]
    private readonly ExpertReadPlan[] _plans;   // same index

    /// <summary>Builds a layout from one extent per expert, indexed <c>layer · expertCount + expert</c>.</summary>
    /// <exception cref="ArgumentException">Wrong extent count, or experts with different part counts.</exception>
    /// <exception cref="ModelFormatException">A file is missing or a part lies beyond the end of its file.</exception>
    public ExpertLayout(int layerCount, int expertCount, IReadOnlyList<ExpertExtent> extents)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layerCount);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(expertCount);
        ArgumentNullException.ThrowIfNull(extents);
        if ((long)layerCount * expertCount != extents.Count)
            throw new ArgumentException($"Expected {layerCount} × {expertCount} = {(long)layerCount * expertCount} expert extents, got {extents.Count}.", nameof(extents));
        LayerCount = layerCount;
        ExpertCount = expertCount;
        _extents = extents.ToArray();
        PartCount = _extents[0].Parts.Count;
        ValidateAgainstFiles(_extents, PartCount);
        _plans = new ExpertReadPlan[_extents.Length];
        for (int i = 0; i < _extents.Length; i++)
        {
            _plans[i] = ExpertReadPlan.For(_extents[i]);
            SlotBytes = Math.Max(SlotBytes, _plans[i].SlotBytes);
            TotalBytes += _extents[i].ByteLength;
        }
    }

    /// <summary>
    /// A layout from stacked tensors (GGUF style): <paramref name="layers"/>[l] lists the tensors of layer l in part order;
    /// expert e's part p is [offset + e·bytesPerExpert, + bytesPerExpert) of tensor p.
    /// </summary>
    /// <exception cref="ArgumentException">An empty layer list or a non-positive bytes-per-expert.</exception>
    /// <exception cref="ModelFormatException">A stacked tensor passes the end of its file.</exception>
    public static ExpertLayout FromStacked(int expertCount, IReadOnlyList<IReadOnlyList<StackedTensor>> layers)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(expertCount);
        ArgumentNullException.ThrowIfNull(layers);
        if (layers.Count == 0) throw new ArgumentException("At least one layer is needed.", nameof(layers));
        var extents = new ExpertExtent[checked(layers.Count * expertCount)];
        for (int l = 0; l < layers.Count; l++)
        {
            IReadOnlyList<StackedTensor> tensors = layers[l];
            foreach (StackedTensor t in tensors)
                if (t.BytesPerExpert <= 0 || t.Offset < 0)
                    throw new ArgumentException($"Stacked tensor in '{t.Path}' at layer {l}: offset {t.Offset}, {t.BytesPerExpert} bytes per expert.", nameof(layers));
            for (int e = 0; e < expertCount; e++)
            {
                var parts = new ExpertPart[tensors.Count];
                for (int p = 0; p < parts.Length; p++)
                    parts[p] = new ExpertPart(tensors[p].Path, checked(tensors[p].Offset + e * tensors[p].BytesPerExpert), tensors[p].BytesPerExpert);
                extents[l * expertCount + e] = new ExpertExtent(parts);
            }
        }
        return new ExpertLayout(layers.Count, expertCount, extents);
    }

    public int LayerCount { get; }
    public int ExpertCount { get; }

    /// <summary>Parts per expert (the same for every expert).</summary>
    public int PartCount { get; }

    /// <summary>Bytes one cache slot needs so that any expert fits (aligned reads included).</summary>
    public long SlotBytes { get; }

    /// <summary>Σ expert bytes in the files (the base of a percentage budget).</summary>
    public long TotalBytes { get; }

    /// <summary>Distinct files holding expert bytes.</summary>
    public IReadOnlyList<string> Files => _extents.SelectMany(x => x.Parts).Select(p => p.Path).Distinct(StringComparer.Ordinal).ToArray();

    /// <exception cref="ArgumentOutOfRangeException">The key is outside the model.</exception>
    public ExpertExtent Extent(ExpertKey key) => _extents[Index(key)];

    /// <summary>Offset of part <paramref name="part"/> of <paramref name="key"/> from the start of its slot.</summary>
    public long PartOffsetInSlot(ExpertKey key, int part) => _plans[Index(key)].PartSlotOffsets[part];

    internal ExpertReadPlan Plan(ExpertKey key) => _plans[Index(key)];

    private int Index(ExpertKey key)
    {
        if ((uint)key.Layer >= (uint)LayerCount || (uint)key.Expert >= (uint)ExpertCount)
            throw new ArgumentOutOfRangeException(nameof(key), $"Expert {key} is outside the model ({LayerCount} layers × {ExpertCount} experts).");
        return key.Layer * ExpertCount + key.Expert;
    }

    private static void ValidateAgainstFiles(ExpertExtent[] extents, int partCount)
    {
        var lengths = new Dictionary<string, long>(StringComparer.Ordinal);
        for (int i = 0; i < extents.Length; i++)
        {
            if (extents[i].Parts.Count != partCount)
                throw new ArgumentException($"Every expert needs the same number of parts: the first has {partCount}, extent {i} has {extents[i].Parts.Count}.", nameof(extents));
            foreach (ExpertPart p in extents[i].Parts)
            {
                if (!lengths.TryGetValue(p.Path, out long fileLength))
                {
                    var info = new FileInfo(p.Path);
                    if (!info.Exists) throw new ModelFormatException(p.Path, "expert file not found");
                    lengths[p.Path] = fileLength = info.Length;
                }
                if (p.Offset > fileLength || p.Length > fileLength - p.Offset)
                    throw new ModelFormatException(p.Path, $"expert extent {i} has bytes [{p.Offset}, {p.Offset + p.Length}) beyond the end of the file ({fileLength} bytes)");
            }
        }
    }
}

/// <summary>The aligned reads that place one expert in a slot, and where each part lands.</summary>
internal sealed class ExpertReadPlan
{
    /// <summary>
    /// One read: the file bytes [DataStart, DataEnd) of Path are wanted; the aligned range covering them,
    /// [AlignDown(DataStart), AlignUp(DataEnd)), lands in the slot at SlotOffset.
    /// </summary>
    internal readonly record struct Region(string Path, long DataStart, long DataEnd, long SlotOffset)
    {
        public long FileOffset => DirectFileReader.AlignDown(DataStart);
        public long AlignedLength => DirectFileReader.AlignUp(DataEnd) - FileOffset;
    }

    public required Region[] Regions { get; init; }
    public required long[] PartSlotOffsets { get; init; }
    public required long[] PartLengths { get; init; }
    public long SlotBytes { get; init; }

    public static ExpertReadPlan For(ExpertExtent extent)
    {
        int n = extent.Parts.Count;
        var regions = new List<Region>();
        var regionOfPart = new int[n];
        for (int p = 0; p < n; p++)
        {
            ExpertPart part = extent.Parts[p];
            long partEnd = part.Offset + part.Length;
            if (regions.Count > 0)
            {
                Region last = regions[^1];
                long alignedStart = DirectFileReader.AlignDown(part.Offset);
                if (last.Path == part.Path && alignedStart >= last.FileOffset && alignedStart <= last.FileOffset + last.AlignedLength)
                {
                    regions[^1] = last with { DataStart = Math.Min(last.DataStart, part.Offset), DataEnd = Math.Max(last.DataEnd, partEnd) };
                    regionOfPart[p] = regions.Count - 1;
                    continue;
                }
            }
            regions.Add(new Region(part.Path, part.Offset, partEnd, 0));
            regionOfPart[p] = regions.Count - 1;
        }
        long slotEnd = 0;
        for (int r = 0; r < regions.Count; r++)
        {
            regions[r] = regions[r] with { SlotOffset = slotEnd };
            slotEnd += regions[r].AlignedLength;
        }
        var partOffsets = new long[n];
        var partLengths = new long[n];
        for (int p = 0; p < n; p++)
        {
            Region r = regions[regionOfPart[p]];
            partOffsets[p] = r.SlotOffset + extent.Parts[p].Offset - r.FileOffset;
            partLengths[p] = extent.Parts[p].Length;
        }
        return new ExpertReadPlan { Regions = regions.ToArray(), PartSlotOffsets = partOffsets, PartLengths = partLengths, SlotBytes = slotEnd };
    }
}
