// Grid and block shapes of every kernel launch, in one place so they can be checked without a GPU: a warp per mat-vec
// row (4 rows per block), a warp per Q8_0 block, one block per norm row or attention (head, token), grid-stride loops for
// element-wise kernels.
namespace Pregate.Cuda;

/// <summary>A launch shape: grid (x, y) of blocks (x, y) threads and dynamic shared memory bytes.</summary>
public readonly record struct LaunchGeometry(uint GridX, uint GridY, uint BlockX, uint BlockY, uint SharedBytes)
{
    public override string ToString() => $"grid {GridX}×{GridY}, block {BlockX}×{BlockY}, shared {SharedBytes} B";
}

/// <summary>The launch shapes the kernels expect (they must agree with the constants in the .cu files).</summary>
public static class Launches
{
    public const int WarpSize = 32;

    /// <summary>Rows per mat-vec block (MATVEC_WARPS in matvec.cu).</summary>
    public const int MatVecWarps = 4;

    /// <summary>Threads of element-wise, norm and attention blocks.</summary>
    public const int BlockThreads = 256;

    /// <summary>Most blocks an element-wise grid-stride launch uses.</summary>
    public const int MaxElementBlocks = 1024;

    /// <summary>Threads of an attention block (4 warps share the keys of one (head, token)).</summary>
    public const int AttentionThreads = 128;

    /// <summary>Mat-vec of <paramref name="rows"/> rows for <paramref name="vectors"/> input vectors (tokens, or experts).</summary>
    public static LaunchGeometry MatVec(int rows, int vectors)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(vectors);
        return new((uint)((rows + MatVecWarps - 1) / MatVecWarps), (uint)vectors, MatVecWarps * WarpSize, 1, 0);
    }

    /// <summary>A grid-stride loop over <paramref name="n"/> elements.</summary>
    public static LaunchGeometry Elementwise(long n)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(n);
        long blocks = Math.Min((n + BlockThreads - 1) / BlockThreads, MaxElementBlocks);
        return new((uint)blocks, 1, BlockThreads, 1, 0);
    }

    /// <summary>One block per row (RMSNorm rows, a dot product).</summary>
    public static LaunchGeometry PerRow(int rows)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(rows);
        return new((uint)rows, 1, BlockThreads, 1, 0);
    }

    /// <summary>Quantizing <paramref name="blocks"/> Q8_0 blocks: a warp per block, 8 per thread block.</summary>
    public static LaunchGeometry QuantizeQ8_0(int blocks)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blocks);
        int perBlock = BlockThreads / WarpSize;
        return new((uint)((blocks + perBlock - 1) / perBlock), 1, BlockThreads, 1, 0);
    }

    /// <summary>RoPE over (heads, tokens), a thread per rotated pair.</summary>
    public static LaunchGeometry Rope(int heads, int tokens, int headDim) =>
        new((uint)heads, (uint)tokens, (uint)Math.Clamp((headDim / 2 + WarpSize - 1) / WarpSize * WarpSize, WarpSize, BlockThreads), 1, 0);

    /// <summary>Attention: a block per (head, token).</summary>
    public static LaunchGeometry Attention(int heads, int tokens) => new((uint)heads, (uint)tokens, AttentionThreads, 1, 0);

    /// <summary>Router softmax + top-k: a warp per token, an int per expert of shared memory.</summary>
    public static LaunchGeometry Router(int tokens, int experts) => new((uint)tokens, 1, WarpSize, 1, (uint)(experts * sizeof(int)));
}
