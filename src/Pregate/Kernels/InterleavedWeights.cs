// Copies of Q8_0 / Q4_0 weight matrices with their rows interleaved block by block in groups of eight, as llama.cpp's CPU
// backend repacks weights at load (ggml-cpu repack: q4_0_8x8 and friends): a one-vector product then streams a group as
// one sequence with eight independent accumulators, where eight separate rows would defeat the hardware prefetcher. The
// blocks themselves are unchanged, so every row dot keeps its operations and the results stay bit-identical.
using System.Runtime.InteropServices;
using Pregate.Core;

namespace Pregate.Kernels;

/// <summary>
/// Owns interleaved copies of weight matrices (see <see cref="WeightMatrix.Interleave"/>); a copy stays valid as long as
/// this object lives. Not thread-safe: add from one thread, then share the matrices freely.
/// </summary>
public sealed unsafe partial class InterleavedWeights
{
    private readonly List<byte[]> _copies = [];

    /// <summary>Bytes held by the copies.</summary>
    public long Bytes { get; private set; }

    /// <summary>Matrices copied.</summary>
    public int Count => _copies.Count;

    /// <summary>
    /// True when <paramref name="w"/> would be interleaved: Q8_0 or Q4_0, row-major, rows a whole number of groups, under
    /// 2 GiB, on a CPU where the interleaved kernels run (AVX2 with FMA).
    /// </summary>
    public static bool CanInterleave(in WeightMatrix w) =>
        VecDot.UseAvx2 && w.Type is DType.Q8_0 or DType.Q4_0 && w.Interleave == 1 && w.Rows > 0 && w.Rows % WeightMatrix.GroupRows == 0
        && w.RowBytes * w.Rows < int.MaxValue;

    /// <summary>
    /// An interleaved copy of <paramref name="w"/>, or <paramref name="w"/> itself when <see cref="CanInterleave"/> is false.
    /// With <paramref name="releaseSource"/> the source's whole pages are then dropped from this process's page tables
    /// (madvise MADV_DONTNEED, Linux): only for a read-only file mapping, whose pages read back from the file when touched
    /// again; anonymous memory would be zeroed.
    /// </summary>
    public WeightMatrix Add(in WeightMatrix w, bool releaseSource = false)
    {
        if (!CanInterleave(w)) return w;
        int blockBytes = DTypes.BlockBytes(w.Type), nb = (int)(w.RowBytes / blockBytes), group = WeightMatrix.GroupRows;
        long rowBytes = w.RowBytes;
        var copy = GC.AllocateUninitializedArray<byte>(checked((int)(rowBytes * w.Rows)), pinned: true);
        fixed (byte* dst = copy)
        {
            for (int r = 0; r < w.Rows; r++)
            {
                byte* src = w.Row(r);
                byte* row = dst + (r - r % group) * rowBytes + r % group * blockBytes;
                for (int k = 0; k < nb; k++)
                    Buffer.MemoryCopy(src + k * blockBytes, row + (long)k * group * blockBytes, blockBytes, blockBytes);
            }
            if (releaseSource) Release(w);
            _copies.Add(copy);
            Bytes += copy.Length;
            return w.AsInterleaved((nint)dst);   // the array is pinned: its address holds while this object lives
        }
    }

    private static void Release(in WeightMatrix w)
    {
        if (!OperatingSystem.IsLinux()) return;
        long page = Environment.SystemPageSize;
        long start = (w.Data + page - 1) & ~(page - 1), end = (w.Data + w.RowStride * w.Rows) & ~(page - 1);
        if (end > start) _ = Madvise((void*)start, (nuint)(end - start), MadvDontNeed);
    }

    private const int MadvDontNeed = 4;

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);
}
