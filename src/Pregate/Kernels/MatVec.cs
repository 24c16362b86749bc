// Matrix × vector(s): y[t, r] = Σ_c W[r, c]·x[t, c] for every supported weight type, rows split over a WorkerTeam.
// Each (row, token) result comes from the same VecDot call whatever the thread count or the number of tokens, so a
// mat-mul over n tokens is bit-identical to n mat-vecs.
using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Pregate.Core;

namespace Pregate.Kernels;

/// <summary>y = W·x for one input vector.</summary>
public static unsafe class MatVec
{
    /// <summary>
    /// y[r] = Σ_c W[r, c]·x[c] for r &lt; W.Rows, with x already loaded (one vector) into <paramref name="x"/>, quantized
    /// as the weight type needs on first use. Throws <see cref="ArgumentException"/> when x is not one vector of W.Cols
    /// values or y is shorter than W.Rows.
    /// </summary>
    public static void Run(in WeightMatrix w, ActivationQ8 x, Span<float> y, WorkerTeam? team = null)
    {
        if (x.Tokens != 1) throw new ArgumentException($"mat-vec takes one vector, got {x.Tokens}; use MatMul", nameof(x));
        MatMul.Run(w, x, y, team);
    }

    /// <summary>
    /// y[r] = Σ_c W[r, c]·x[c]. Quantized weights quantize x into temporary memory first (stack for small inputs, a pooled
    /// buffer otherwise); F16/BF16 weights multiply x as floats (<see cref="HalfWeightInput.Float"/>). To share the
    /// conversion between matrices or to round like llama.cpp, use the <see cref="ActivationQ8"/> overload.
    /// Throws <see cref="ArgumentException"/> on length mismatches.
    /// </summary>
    public static void Run(in WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, WorkerTeam? team = null)
    {
        if (x.Length != w.Cols) throw new ArgumentException($"input has {x.Length} values, matrix has {w.Cols} columns", nameof(x));
        if (y.Length < w.Rows) throw new ArgumentException($"output has {y.Length} values, matrix has {w.Rows} rows", nameof(y));
        switch (w.Type)
        {
            case DType.F32 or DType.F16 or DType.BF16:
                fixed (float* px = x) fixed (float* py = y) MatMul.Dispatch(w, (byte*)px, 0, 1, py, team);
                return;
            case DType.Q8_0 or DType.Q4_0:
                QuantizedRun(w, x, y, team, DTypes.ByteCount(DType.Q8_0, x.Length), static (src, dst) => Quantize.QuantizeQ8_0Activation(src, dst));
                return;
            default:
                QuantizedRun(w, x, y, team, (long)x.Length / BlockQ8_K.Size * Unsafe.SizeOf<BlockQ8_K>(), static (src, dst) => Quantize.QuantizeQ8_K(src, dst));
                return;
        }
    }

    private const int StackLimit = 32 * 1024;

    private static void QuantizedRun(in WeightMatrix w, ReadOnlySpan<float> x, Span<float> y, WorkerTeam? team, long bytes, QuantizeInto quantize)
    {
        int n = checked((int)bytes);
        byte[]? rented = null;
        Span<byte> scratch = n <= StackLimit ? stackalloc byte[n] : (rented = ArrayPool<byte>.Shared.Rent(n)).AsSpan(0, n);
        try
        {
            quantize(x, scratch);
            fixed (byte* px = scratch) fixed (float* py = y) MatMul.Dispatch(w, px, 0, 1, py, team);
        }
        finally
        {
            if (rented is not null) ArrayPool<byte>.Shared.Return(rented);
        }
    }

    private delegate void QuantizeInto(ReadOnlySpan<float> src, Span<byte> dst);
}

/// <summary>Y = X·Wᵀ for several input vectors (prefill, or all tokens routed to one expert).</summary>
public static unsafe class MatMul
{
    /// <summary>Tokens handled per pass over a row, so a row of W is read once per block of tokens.</summary>
    internal const int TokenBlock = 8;

    /// <summary>
    /// y[t·W.Rows + r] = Σ_c W[r, c]·x[t, c] for the x.Tokens vectors loaded into <paramref name="x"/> (y is [tokens, rows]
    /// row-major). Bit-identical to <see cref="MatVec"/> on each vector. Throws <see cref="ArgumentException"/> when
    /// x.Cols ≠ W.Cols or y is shorter than tokens·rows.
    /// </summary>
    public static void Run(in WeightMatrix w, ActivationQ8 x, Span<float> y, WorkerTeam? team = null)
    {
        if (x.Tokens == 0) throw new ArgumentException("no input loaded", nameof(x));
        if (x.Cols != w.Cols) throw new ArgumentException($"input has {x.Cols} values, matrix has {w.Cols} columns", nameof(x));
        if (y.Length < (long)x.Tokens * w.Rows) throw new ArgumentException($"output has {y.Length} values, {(long)x.Tokens * w.Rows} needed", nameof(y));
        x.Prepare(w.Type);
        fixed (float* py = y) Dispatch(w, (byte*)x.Base(w.Type), x.RowBytes(w.Type), x.Tokens, py, team, x.UsesHalfCopy(w.Type), ScaledInput(w, x, 0));
    }

    /// <summary>
    /// Runs several products as one job on the team (one hand-off instead of one per matrix): for each task,
    /// y[t·W.Rows + r] = Σ_c W[r, c]·x[FirstToken + t, c] for t &lt; Tokens. Every (row, token) value is bit-identical to
    /// <see cref="MatVec"/> on that vector. Activations are prepared on the calling thread first. Throws
    /// <see cref="ArgumentException"/> when a task's input does not match its matrix.
    /// </summary>
    public static void Run(ReadOnlySpan<MatMulTask> tasks, WorkerTeam? team = null)
    {
        const int StackTasks = 256;
        Span<Resolved> resolved = tasks.Length > StackTasks ? new Resolved[tasks.Length] : stackalloc Resolved[StackTasks];
        int count = 0, rows = 0;
        long work = 0;
        bool interleaved = false;
        foreach (ref readonly var t in tasks)
        {
            t.Validate();
            if (t.Tokens == 0 || t.W.Rows == 0) continue;
            t.X.Prepare(t.W.Type);
            resolved[count++] = new Resolved
            {
                W = t.W,
                X = (byte*)t.X.Base(t.W.Type) + t.FirstToken * t.X.RowBytes(t.W.Type),
                XStride = t.X.RowBytes(t.W.Type),
                Tokens = t.Tokens,
                Y = t.Y,
                HalfInput = t.X.UsesHalfCopy(t.W.Type),
                XScaled = ScaledInput(t.W, t.X, t.FirstToken),
                FirstRow = rows,
            };
            rows = checked(rows + t.W.Rows);
            work += (long)t.W.Rows * t.W.Cols * t.Tokens;
            interleaved |= t.W.Interleave != 1;
        }
        if (count == 0) return;
        fixed (Resolved* p = resolved)
        {
            var job = new MultiJob { Tasks = p, Count = count };
            if (team is null)
            {
                job.Execute(0, rows);
                return;
            }
            // Products of uneven cost (experts with more or fewer tokens) balance better in finer chunks.
            team.Run(ref job, rows, MinChunk(work / rows), count > 1 ? 16 : 4, interleaved ? WeightMatrix.GroupRows : 1);
        }
    }

    // The scaled input of F16Scaled for vector `first` on, where the activation has it (F16 weights only).
    private static float* ScaledInput(in WeightMatrix w, ActivationQ8 x, int first)
    {
        if (w.Type != DType.F16) return null;
        float* scaled = x.ScaledHalfInput();
        return scaled == null ? null : scaled + (long)first * x.Cols;
    }

    internal static void Dispatch(in WeightMatrix w, byte* x, long xStride, int tokens, float* y, WorkerTeam? team, bool halfInput = false, float* xScaled = null)
    {
        var job = new Job { Task = new Resolved { W = w, X = x, XStride = xStride, Tokens = tokens, Y = y, HalfInput = halfInput, XScaled = xScaled } };
        if (team is null || w.Rows == 0)
        {
            job.Execute(0, w.Rows);
            return;
        }
        team.Run(ref job, w.Rows, MinChunk((long)w.Cols * tokens), granule: w.Interleave);
    }

    // Enough work per chunk to amortise the hand-off (~16K multiply-adds).
    private static int MinChunk(long workPerRow) => (int)Math.Max(1, 16384 / Math.Max(1L, workPerRow));

    /// <summary>One product with its input resolved to the form its weights multiply; rows are numbered from FirstRow in a fused job.</summary>
    private struct Resolved
    {
        public WeightMatrix W;
        public byte* X;
        public long XStride;
        public int Tokens;
        public float* Y;
        public bool HalfInput;
        public float* XScaled;   // the first vector times 2^112 for F16Scaled (F16 weights), or null
        public int FirstRow;

        public readonly void Execute(int start, int end)
        {
            switch (W.Type)
            {
                case DType.F32: Rows<F32Row>(start, end); break;
                case DType.F16 when Tokens == 1 && XScaled != null: F16ScaledRows(start, end); break;
                case DType.F16 when HalfInput: Rows<F16xF16Row>(start, end); break;
                case DType.BF16 when HalfInput: Rows<BF16xBF16Row>(start, end); break;
                case DType.F16 when Tokens > 1 && W.Cols <= MaxWidenedCols && Vector256.IsHardwareAccelerated: F16Widened(start, end); break;
                case DType.F16: Rows<F16Row>(start, end); break;
                case DType.BF16: Rows<BF16Row>(start, end); break;
                case DType.Q8_0 when VecDot.UseAvx2: Q8_0Tiles(start, end); break;
                case DType.Q4_0 when Tokens == 1 && W.Interleave != 1 && VecDot.UseAvx2: Q4_0Groups(start, end); break;
                case DType.Q4_0 when Tokens > 1 && VecDot.UseAvx2: Q4_0Tiles(start, end); break;
                case DType.Q8_0 or DType.Q4_0 when W.Interleave != 1: throw new InvalidOperationException("interleaved weights need AVX2 with FMA");
                case DType.Q8_0: Rows<Q8_0Row>(start, end); break;
                case DType.Q4_0: Rows<Q4_0Row>(start, end); break;
                case DType.Q4_K: Rows<Q4_KRow>(start, end); break;
                case DType.Q6_K: Rows<Q6_KRow>(start, end); break;
                default: throw new InvalidOperationException($"unsupported weight type {W.Type}");
            }
        }

        private readonly void Rows<TRow>(int start, int end) where TRow : struct, IRowDot
        {
            int cols = W.Cols, rows = W.Rows;
            int rowTile = Tokens <= TokenBlock ? end - start : (int)Math.Max(1, RowTileBytes / Math.Max(1, W.RowStride));
            for (int r0 = start; r0 < end; r0 += rowTile)
            {
                int r1 = Math.Min(end, r0 + rowTile);
                for (int t0 = 0; t0 < Tokens; t0 += TokenBlock)
                {
                    int t1 = Math.Min(Tokens, t0 + TokenBlock);
                    for (int r = r0; r < r1; r++)
                    {
                        byte* row = W.Row(r);
                        for (int t = t0; t < t1; t++) Y[(long)t * rows + r] = TRow.Dot(row, X + t * XStride, cols);
                    }
                }
            }
        }

        // One vector against fp16 rows through F16Scaled: the same bits as F16Row / F16xF16Row (which take over for a row
        // holding inf or NaN weights).
        private readonly void F16ScaledRows(int start, int end)
        {
            int cols = W.Cols;
            for (int r = start; r < end; r++)
            {
                var row = (ushort*)W.Row(r);
                if (!VecDot.F16Scaled(row, XScaled, cols, out Y[r]))
                    Y[r] = HalfInput ? VecDot.F16xF16(row, (ushort*)X, cols) : VecDot.F16(row, (float*)X, cols);
            }
        }

        /// <summary>Longest fp16 row widened on the stack (64 KiB of floats), and the floats a tile of widened rows aims for.</summary>
        private const int MaxWidenedCols = 16384, WidenedTileFloats = 12288;

        /// <summary>Vectors per pass over a tile of widened rows: whole tiles of two and of three.</summary>
        private const int WidenedTokenBlock = 12;

        /// <summary>Rows this many bytes of weights at a time are reused across all tokens while they sit in L2.</summary>
        private const int RowTileBytes = 16 * 1024;

        // Rows of a tile of about RowTileBytes: a multiple of `multiple` (≤ 2), or whole groups of interleaved rows, whose
        // blocks a pass over two rows touches only in part.
        private readonly int TileRows(int multiple)
        {
            int rows = (int)Math.Max(multiple, RowTileBytes / Math.Max(1, W.RowStride));
            return W.Interleave == 1 ? rows / multiple * multiple : Math.Max(W.Interleave, rows / W.Interleave * W.Interleave);
        }

        private readonly void Q8_0Tiles(int start, int end)
        {
            int nb = W.Cols / BlockQ8_0.Size, rows = W.Rows;
            float* tile = stackalloc float[8];
            if (Tokens == 1)
            {
                // One vector streams the matrix from memory as one sequence: a row at a time, or eight rows at once where they
                // are interleaved (several separate rows at once defeat the hardware prefetcher: slower, even with software
                // prefetch).
                var x = (BlockQ8_0*)X;
                if (W.Interleave == 1)
                    for (int r = start; r < end; r++) Y[r] = VecDot.Q8_0Avx2((BlockQ8_0*)W.Row(r), x, nb);
                else
                {
                    var (first, last) = Groups(start, end);
                    for (int r = start; r < first; r++) Y[r] = VecDot.Q8_0Avx2((BlockQ8_0*)W.BlockRow(r), x, nb, W.BlockStride);
                    for (int r = first; r < last; r += WeightMatrix.GroupRows) VecDot.Q8_0Avx2Group8((BlockQ8_0*)W.BlockRow(r), x, nb, Y + r);
                    for (int r = Math.Max(first, last); r < end; r++) Y[r] = VecDot.Q8_0Avx2((BlockQ8_0*)W.BlockRow(r), x, nb, W.BlockStride);
                }
                return;
            }
            int rowTile = TileRows(2);
            for (int r0 = start; r0 < end; r0 += rowTile)
            {
                int r1 = Math.Min(end, r0 + rowTile);
                int t = 0;
                for (; t + 4 <= Tokens; t += 4) Q8_0TilePass(r0, r1, t, 4, nb, tile);
                // Two or three vectors left: a tile pass with the last vector repeated beats one row dot per vector.
                if (Tokens - t >= 2)
                {
                    Q8_0TilePass(r0, r1, t, Tokens - t, nb, tile);
                    t = Tokens;
                }
                for (; t < Tokens; t++) Q8_0Rows4(r0, r1, t, nb, tile);
            }
        }

        // [first, last): the whole interleaved groups inside [start, end) (first > last when there are none).
        private static (int First, int Last) Groups(int start, int end)
        {
            const int G = WeightMatrix.GroupRows;
            return ((start + G - 1) / G * G, end / G * G);
        }

        // One vector against interleaved Q4_0 rows: eight rows per pass over a group, single rows at a range's edges.
        private readonly void Q4_0Groups(int start, int end)
        {
            int nb = W.Cols / BlockQ4_0.Size;
            var x = (BlockQ8_0*)X;
            var (first, last) = Groups(start, end);
            for (int r = start; r < Math.Min(first, end); r++) Y[r] = VecDot.Q4_0Avx2((BlockQ4_0*)W.BlockRow(r), x, nb, W.BlockStride);
            for (int r = first; r < last; r += WeightMatrix.GroupRows) VecDot.Q4_0Avx2Group8((BlockQ4_0*)W.BlockRow(r), x, nb, Y + r);
            for (int r = Math.Max(first, last); r < end; r++) Y[r] = VecDot.Q4_0Avx2((BlockQ4_0*)W.BlockRow(r), x, nb, W.BlockStride);
        }

        // Several vectors (prefill) against Q4_0 rows: tiles of two rows × four vectors, as Q8_0TilePass; a vector left over
        // runs rows two at a time (the second row sharing the activation's loads and its 8·Σx).
        private readonly void Q4_0Tiles(int start, int end)
        {
            int nb = W.Cols / BlockQ4_0.Size, rows = W.Rows;
            float* tile = stackalloc float[8];
            int rowTile = TileRows(2);
            // Row-major pairs prefetch the next pair; interleaved rows are one stream the hardware follows.
            long prefetch = W.Interleave == 1 ? 2 * W.RowStride : 0;
            for (int r0 = start; r0 < end; r0 += rowTile)
            {
                int r1 = Math.Min(end, r0 + rowTile);
                int t = 0;
                for (; t + 4 <= Tokens; t += 4) Q4_0TilePass(r0, r1, t, 4, nb, tile);
                if (Tokens - t >= 2)
                {
                    Q4_0TilePass(r0, r1, t, Tokens - t, nb, tile);
                    t = Tokens;
                }
                for (; t < Tokens; t++)
                {
                    var x = (BlockQ8_0*)(X + t * XStride);
                    int r = r0;
                    for (; r + 2 <= r1; r += 2)
                        VecDot.Q4_0Avx2Rows2((BlockQ4_0*)W.BlockRow(r), (BlockQ4_0*)W.BlockRow(r + 1), x, nb, prefetch,
                            out Y[(long)t * rows + r], out Y[(long)t * rows + r + 1], W.BlockStride);
                    for (; r < r1; r++) Y[(long)t * rows + r] = VecDot.Q4_0Avx2((BlockQ4_0*)W.BlockRow(r), x, nb, W.BlockStride);
                }
            }
        }

        // Q4_0 rows [r0, r1) against vectors t .. t+count−1 (count 2..4; missing vectors repeat the last and are not stored).
        private readonly void Q4_0TilePass(int r0, int r1, int t, int count, int nb, float* tile)
        {
            int rows = W.Rows;
            var x0 = (BlockQ8_0*)(X + t * XStride);
            var x1 = (BlockQ8_0*)(X + (t + 1) * XStride);
            var x2 = (BlockQ8_0*)(X + (t + Math.Min(2, count - 1)) * XStride);
            var x3 = (BlockQ8_0*)(X + (t + Math.Min(3, count - 1)) * XStride);
            int r = r0;
            for (; r + 2 <= r1; r += 2)
            {
                VecDot.Q4_0Avx2Tile2x4((BlockQ4_0*)W.BlockRow(r), (BlockQ4_0*)W.BlockRow(r + 1), x0, x1, x2, x3, nb, tile, W.BlockStride);
                for (int i = 0; i < count; i++)
                {
                    Y[(long)(t + i) * rows + r] = tile[i];
                    Y[(long)(t + i) * rows + r + 1] = tile[4 + i];
                }
            }
            for (; r < r1; r++)
                for (int i = 0; i < count; i++)
                    Y[(long)(t + i) * rows + r] = VecDot.Q4_0Avx2((BlockQ4_0*)W.BlockRow(r), (BlockQ8_0*)(X + (t + i) * XStride), nb, W.BlockStride);
        }

        // Rows [r0, r1) against vectors t .. t+count−1 (count 2..4; missing vectors repeat the last and are not stored).
        private readonly void Q8_0TilePass(int r0, int r1, int t, int count, int nb, float* tile)
        {
            int rows = W.Rows;
            var x0 = (BlockQ8_0*)(X + t * XStride);
            var x1 = (BlockQ8_0*)(X + (t + 1) * XStride);
            var x2 = (BlockQ8_0*)(X + (t + Math.Min(2, count - 1)) * XStride);
            var x3 = (BlockQ8_0*)(X + (t + Math.Min(3, count - 1)) * XStride);
            int r = r0;
            for (; r + 2 <= r1; r += 2)
            {
                var w0 = (BlockQ8_0*)W.BlockRow(r);
                var w1 = (BlockQ8_0*)W.BlockRow(r + 1);
                if (AvxVnni.IsSupported) VecDot.Q8_0VnniTile2x4(w0, w1, x0, x1, x2, x3, nb, tile, W.BlockStride);
                else VecDot.Q8_0Avx2Tile2x4(w0, w1, x0, x1, x2, x3, nb, tile, W.BlockStride);
                for (int i = 0; i < count; i++)
                {
                    Y[(long)(t + i) * rows + r] = tile[i];
                    Y[(long)(t + i) * rows + r + 1] = tile[4 + i];
                }
            }
            for (; r < r1; r++)
                for (int i = 0; i < count; i++)
                    Y[(long)(t + i) * rows + r] = VecDot.Q8_0Avx2((BlockQ8_0*)W.BlockRow(r), (BlockQ8_0*)(X + (t + i) * XStride), nb, W.BlockStride);
        }

        // fp16 rows widened once per tile of rows (on the stack, ≤ 48 KiB unless one row is longer), then dotted with every
        // vector, eight vectors at a time so the tile and those vectors stay in cache.
        private readonly void F16Widened(int start, int end)
        {
            int cols = W.Cols, rows = W.Rows;
            // Rows per tile: about WidenedTileFloats, a multiple of three (the AVX2 tile) while rows are short.
            int tileRows = Math.Max(1, WidenedTileFloats / cols);
            if (cols <= WidenedTileFloats / 3) tileRows = (tileRows + 2) / 3 * 3;
            float* wide = stackalloc float[tileRows * cols];
            float* quad = stackalloc float[4];
            float* oct = stackalloc float[9];
            for (int r0 = start; r0 < end; r0 += tileRows)
            {
                int r1 = Math.Min(end, r0 + tileRows);
                for (int r = r0; r < r1; r++)
                    VecDot.WidenF16Row((ushort*)W.Row(r), wide + (r - r0) * cols, cols);
                for (int t0 = 0; t0 < Tokens; t0 += WidenedTokenBlock)
                {
                    int t1 = Math.Min(Tokens, t0 + WidenedTokenBlock);
                    int r = r0;
                    if (Vector512.IsHardwareAccelerated)
                    {
                        for (; r + 4 <= r1; r += 4)
                        {
                            float* w0 = wide + (r - r0) * cols;
                            int t = t0;
                            for (; t + 2 <= t1; t += 2)
                            {
                                VecDot.F16WidenedVector512x4x2(w0, cols, (float*)(X + t * XStride), (float*)(X + (t + 1) * XStride), cols, oct);
                                for (int i = 0; i < 4; i++)
                                {
                                    Y[(long)t * rows + r + i] = oct[2 * i];
                                    Y[(long)(t + 1) * rows + r + i] = oct[2 * i + 1];
                                }
                            }
                            for (; t < t1; t++)
                                for (int i = 0; i < 4; i++) Y[(long)t * rows + r + i] = VecDot.F16WidenedVector256(w0 + i * cols, (float*)(X + t * XStride), cols);
                        }
                    }
                    else if (Fma.IsSupported)
                    {
                        for (; r + 3 <= r1; r += 3)
                        {
                            float* w0 = wide + (r - r0) * cols;
                            int t = t0;
                            for (; t + 3 <= t1; t += 3)
                            {
                                VecDot.F16WidenedVector256x3x3(w0, cols, (float*)(X + t * XStride), XStride / sizeof(float), cols, oct);
                                for (int i = 0; i < 9; i++) Y[(long)(t + i % 3) * rows + r + i / 3] = oct[i];
                            }
                            for (int i = 0; i < 3 && t < t1; i++)
                            {
                                float* w = w0 + i * cols;
                                if (t + 2 <= t1)
                                {
                                    VecDot.F16WidenedVector256x2(w, (float*)(X + t * XStride), (float*)(X + (t + 1) * XStride), cols, out float y0, out float y1);
                                    Y[(long)t * rows + r + i] = y0;
                                    Y[(long)(t + 1) * rows + r + i] = y1;
                                }
                                else Y[(long)t * rows + r + i] = VecDot.F16WidenedVector256(w, (float*)(X + t * XStride), cols);
                            }
                        }
                    }
                    if (Avx512F.VL.IsSupported)
                    {
                        for (; r + 2 <= r1; r += 2)
                        {
                            float* w0 = wide + (r - r0) * cols;
                            int t = t0;
                            for (; t + 2 <= t1; t += 2)
                            {
                                VecDot.F16WidenedVector256x2x2(w0, w0 + cols, (float*)(X + t * XStride), (float*)(X + (t + 1) * XStride), cols, quad);
                                Y[(long)t * rows + r] = quad[0];
                                Y[(long)(t + 1) * rows + r] = quad[1];
                                Y[(long)t * rows + r + 1] = quad[2];
                                Y[(long)(t + 1) * rows + r + 1] = quad[3];
                            }
                            if (t < t1)
                            {
                                Y[(long)t * rows + r] = VecDot.F16WidenedVector256(w0, (float*)(X + t * XStride), cols);
                                Y[(long)t * rows + r + 1] = VecDot.F16WidenedVector256(w0 + cols, (float*)(X + t * XStride), cols);
                            }
                        }
                    }
                    for (; r < r1; r++)
                    {
                        float* w = wide + (r - r0) * cols;
                        int t = t0;
                        for (; t + 2 <= t1; t += 2)
                        {
                            VecDot.F16WidenedVector256x2(w, (float*)(X + t * XStride), (float*)(X + (t + 1) * XStride), cols, out float y0, out float y1);
                            Y[(long)t * rows + r] = y0;
                            Y[(long)(t + 1) * rows + r] = y1;
                        }
                        if (t < t1) Y[(long)t * rows + r] = VecDot.F16WidenedVector256(w, (float*)(X + t * XStride), cols);
                    }
                }
            }
        }

        // Rows [start, end) of a tile already in cache against vector t, four rows per pass.
        private readonly void Q8_0Rows4(int start, int end, int t, int nb, float* tile)
        {
            var x = (BlockQ8_0*)(X + t * XStride);
            float* y = Y + (long)t * W.Rows;
            int r = start;
            long prefetch = W.Interleave == 1 ? 4 * W.RowStride : 0;   // interleaved rows are one stream already
            for (; r + 4 <= end; r += 4)
            {
                VecDot.Q8_0Avx2Rows4((BlockQ8_0*)W.BlockRow(r), (BlockQ8_0*)W.BlockRow(r + 1), (BlockQ8_0*)W.BlockRow(r + 2), (BlockQ8_0*)W.BlockRow(r + 3),
                    x, nb, prefetch, tile, W.BlockStride);
                y[r] = tile[0];
                y[r + 1] = tile[1];
                y[r + 2] = tile[2];
                y[r + 3] = tile[3];
            }
            for (; r < end; r++) y[r] = VecDot.Q8_0Avx2((BlockQ8_0*)W.BlockRow(r), x, nb, W.BlockStride);
        }
    }

    private struct Job : IRowJob
    {
        public Resolved Task;

        public readonly void Execute(int start, int end) => Task.Execute(start, end);
    }

    private struct MultiJob : IRowJob
    {
        public Resolved* Tasks;
        public int Count;

        public readonly void Execute(int start, int end)
        {
            // The last task starting at or before `start`, then on through the tasks the range covers.
            int lo = 0, hi = Count - 1;
            while (lo < hi)
            {
                int mid = (lo + hi + 1) >> 1;
                if (Tasks[mid].FirstRow <= start) lo = mid; else hi = mid - 1;
            }
            for (int i = lo; i < Count && start < end; i++)
            {
                ref readonly var t = ref Tasks[i];
                int taskEnd = t.FirstRow + t.W.Rows;
                int stop = Math.Min(end, taskEnd);
                if (stop > start) t.Execute(start - t.FirstRow, stop - t.FirstRow);
                start = Math.Max(start, stop);
            }
        }
    }

    private interface IRowDot
    {
        static abstract float Dot(byte* w, byte* x, int cols);
    }

    private struct F32Row : IRowDot
    {
        public static float Dot(byte* w, byte* x, int cols) => VecDot.F32((float*)w, (float*)x, cols);
    }

    private struct F16Row : IRowDot
    {
        public static float Dot(byte* w, byte* x, int cols) => VecDot.F16((ushort*)w, (float*)x, cols);
    }

    private struct BF16Row : IRowDot
    {
        public static float Dot(byte* w, byte* x, int cols) => VecDot.BF16((ushort*)w, (float*)x, cols);
    }

    private struct F16xF16Row : IRowDot
    {
        public static float Dot(byte* w, byte* x, int cols) => VecDot.F16xF16((ushort*)w, (ushort*)x, cols);
    }

    private struct BF16xBF16Row : IRowDot
    {
        public static float Dot(byte* w, byte* x, int cols) => VecDot.BF16xBF16((ushort*)w, (ushort*)x, cols);
    }

    private struct Q8_0Row : IRowDot
    {
        public static float Dot(byte* w, byte* x, int cols) => VecDot.Q8_0((BlockQ8_0*)w, (BlockQ8_0*)x, cols / BlockQ8_0.Size);
    }

    private struct Q4_0Row : IRowDot
    {
        public static float Dot(byte* w, byte* x, int cols) => VecDot.Q4_0((BlockQ4_0*)w, (BlockQ8_0*)x, cols / BlockQ4_0.Size);
    }

    private struct Q4_KRow : IRowDot
    {
        public static float Dot(byte* w, byte* x, int cols) => VecDot.Q4_K((BlockQ4_K*)w, (BlockQ8_K*)x, cols / BlockQ4_K.Size);
    }

    private struct Q6_KRow : IRowDot
    {
        public static float Dot(byte* w, byte* x, int cols) => VecDot.Q6_K((BlockQ6_K*)w, (BlockQ8_K*)x, cols / BlockQ6_K.Size);
    }
}

/// <summary>
/// One product of a fused <see cref="MatMul.Run(ReadOnlySpan{MatMulTask}, WorkerTeam?)"/>: y[t·W.Rows + r] =
/// Σ_c W[r, c]·x[FirstToken + t, c] for t &lt; Tokens and r &lt; W.Rows. <see cref="Y"/> points to Tokens·W.Rows floats
/// that stay in place (pinned or native memory) during the run.
/// </summary>
public readonly unsafe struct MatMulTask(in WeightMatrix w, ActivationQ8 x, int firstToken, int tokens, float* y)
{
    public WeightMatrix W { get; } = w;
    public ActivationQ8 X { get; } = x;
    public int FirstToken { get; } = firstToken;
    public int Tokens { get; } = tokens;
    public float* Y { get; } = y;

    /// <summary>All vectors loaded in <paramref name="x"/>.</summary>
    public MatMulTask(in WeightMatrix w, ActivationQ8 x, float* y) : this(w, x, 0, x.Tokens, y)
    {
    }

    internal void Validate()
    {
        ArgumentNullException.ThrowIfNull(X);
        if (FirstToken < 0 || Tokens < 0 || FirstToken > X.Tokens - Tokens)
            throw new ArgumentException($"vectors [{FirstToken}, {FirstToken + Tokens}) outside the {X.Tokens} loaded");
        if (Tokens > 0 && X.Cols != W.Cols) throw new ArgumentException($"input has {X.Cols} values, matrix has {W.Cols} columns");
        if (Tokens > 0 && W.Rows > 0 && Y == null) throw new ArgumentException("null output");
    }
}
