// A weight matrix as the kernels see it: element type, shape [rows, cols] (PyTorch Linear layout [out, in]), a pointer to
// row 0 and the byte distance between rows, or the rows interleaved block by block in groups of eight (a copy made by
// InterleavedWeights). Owns nothing; the memory (a memory map, a cache slot or a copy) must outlive use.
using Pregate.Core;

namespace Pregate.Kernels;

/// <summary>
/// A row-major weight matrix W [Rows, Cols] of <see cref="Type"/> at <see cref="Data"/>; row r starts at
/// Data + r·RowStride. Cols must be a whole number of blocks of the type.
/// </summary>
public readonly unsafe struct WeightMatrix
{
    public DType Type { get; }
    public int Rows { get; }
    public int Cols { get; }
    public nint Data { get; }
    public long RowStride { get; }

    /// <summary>
    /// Rows per interleaved group: 1 for row-major rows; <see cref="GroupRows"/> when the rows are stored in groups of that
    /// many, block by block (block k of row r at block ((r / 8)·nb + k)·8 + r % 8, nb blocks per row; RowStride is then the
    /// bytes of one row), so a group streams as one sequence. Only Q8_0 and Q4_0 matrices are interleaved.
    /// </summary>
    public int Interleave { get; }

    /// <summary>Rows per group of an interleaved matrix.</summary>
    public const int GroupRows = 8;

    /// <summary>
    /// Describes a matrix. Throws <see cref="ArgumentException"/> when the type is not one the mat-vec supports
    /// (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K), Cols is not whole blocks, RowStride is shorter than a row, or Data is null
    /// for a non-empty matrix.
    /// </summary>
    public WeightMatrix(DType type, int rows, int cols, nint data, long rowStride)
    {
        if (type is not (DType.F32 or DType.F16 or DType.BF16 or DType.Q8_0 or DType.Q4_0 or DType.Q4_K or DType.Q6_K))
            throw new ArgumentException($"mat-vec does not support {DTypes.Name(type)} weights", nameof(type));
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(cols);
        long rowBytes = DTypes.TryByteCount(type, cols)
            ?? throw new ArgumentException($"{cols} columns is not a whole number of {DTypes.Name(type)} blocks", nameof(cols));
        if (rowStride < rowBytes) throw new ArgumentException($"row stride {rowStride} is shorter than a row ({rowBytes} bytes)", nameof(rowStride));
        if (data == 0 && rows > 0 && cols > 0) throw new ArgumentException("null data", nameof(data));
        Type = type;
        Rows = rows;
        Cols = cols;
        Data = data;
        RowStride = rowStride;
        Interleave = 1;
    }

    // An interleaved copy (see Interleave): rows a multiple of GroupRows, rows packed densely.
    private WeightMatrix(DType type, int rows, int cols, nint data, int interleave)
        : this(type, rows, cols, data)
    {
        Interleave = interleave;
    }

    /// <summary>The interleaved layout of this matrix's shape at <paramref name="data"/> (filled by InterleavedWeights).</summary>
    internal WeightMatrix AsInterleaved(nint data) => new(Type, Rows, Cols, data, GroupRows);

    /// <summary>A densely packed matrix (RowStride = bytes of one row).</summary>
    public WeightMatrix(DType type, int rows, int cols, nint data)
        : this(type, rows, cols, data, DTypes.TryByteCount(type, cols) ?? 0)
    {
    }

    /// <summary>Bytes of one row.</summary>
    public long RowBytes => DTypes.ByteCount(Type, Cols);

    /// <summary>Pointer to row <paramref name="r"/> of a row-major matrix (Interleave 1).</summary>
    public byte* Row(int r) => (byte*)Data + r * RowStride;

    /// <summary>
    /// Pointer to the first block of row <paramref name="r"/>, whose next blocks follow <see cref="BlockStride"/> blocks
    /// apart (for a row-major matrix, the row itself and 1).
    /// </summary>
    internal byte* BlockRow(int r) => Interleave == 1 ? Row(r)
        : (byte*)Data + (r & ~(GroupRows - 1)) * RowStride + (r & (GroupRows - 1)) * DTypes.BlockBytes(Type);

    /// <summary>Blocks between consecutive blocks of one row.</summary>
    internal int BlockStride => Interleave;

    /// <summary>
    /// Rows [start, start+count) as a matrix (of an interleaved matrix: whole groups only). Throws
    /// <see cref="ArgumentOutOfRangeException"/> outside the matrix or across a group.
    /// </summary>
    public WeightMatrix RowRange(int start, int count)
    {
        if (start < 0 || count < 0 || start > Rows - count) throw new ArgumentOutOfRangeException(nameof(start));
        if (Interleave == 1) return new WeightMatrix(Type, count, Cols, Data + (nint)(start * RowStride), RowStride);
        if (start % GroupRows != 0 || count % GroupRows != 0) throw new ArgumentOutOfRangeException(nameof(start), $"rows [{start}, {start + count}) split a group of {GroupRows} interleaved rows");
        return new WeightMatrix(Type, count, Cols, Data + (nint)(start * RowStride), Interleave);
    }

    /// <summary>A rank-2 tensor [out, in] as a matrix. Throws <see cref="ArgumentException"/> for another rank or a size mismatch.</summary>
    public static WeightMatrix FromTensor(in TensorView t)
    {
        if (t.Rank != 2) throw new ArgumentException($"{t.Name}: expected a rank-2 tensor, got [{string.Join(", ", t.Shape)}]", nameof(t));
        return Slice(t, checked((int)t.Shape[0]), checked((int)t.Shape[1]), 0);
    }

    /// <summary>
    /// Matrix <paramref name="index"/> of a rank-3 tensor [E, out, in] (stacked experts). Throws
    /// <see cref="ArgumentException"/> for another rank or a size mismatch, <see cref="ArgumentOutOfRangeException"/> for a bad index.
    /// </summary>
    public static WeightMatrix FromTensor(in TensorView t, int index)
    {
        if (t.Rank != 3) throw new ArgumentException($"{t.Name}: expected a rank-3 tensor, got [{string.Join(", ", t.Shape)}]", nameof(t));
        if (index < 0 || index >= t.Shape[0]) throw new ArgumentOutOfRangeException(nameof(index), index, $"{t.Name} has {t.Shape[0]} matrices");
        return Slice(t, checked((int)t.Shape[1]), checked((int)t.Shape[2]), index);
    }

    private static WeightMatrix Slice(in TensorView t, int rows, int cols, int index)
    {
        long rowBytes = DTypes.TryByteCount(t.Type, cols)
            ?? throw new ArgumentException($"{t.Name}: {cols} columns is not a whole number of {DTypes.Name(t.Type)} blocks", nameof(t));
        long matrixBytes = rowBytes * rows;
        long total = t.Rank == 3 ? matrixBytes * t.Shape[0] : matrixBytes;
        if (t.ByteLength < total) throw new ArgumentException($"{t.Name}: {t.ByteLength} bytes, shape needs {total}", nameof(t));
        return new WeightMatrix(t.Type, rows, cols, t.Pointer + (nint)(index * matrixBytes), rowBytes);
    }

    public override string ToString() => Interleave == 1 ? $"{DTypes.Name(Type)} [{Rows}, {Cols}]" : $"{DTypes.Name(Type)} [{Rows}, {Cols}] in groups of {Interleave} rows";
}
