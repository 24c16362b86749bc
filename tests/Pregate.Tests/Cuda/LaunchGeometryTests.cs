// Launch shapes: every row, element and block covered exactly by the grid the kernels index with, blocks of whole warps.
using Pregate.Cuda;
using Xunit.Abstractions;

namespace Pregate.Tests.Cuda;

public sealed class LaunchGeometryTests(ITestOutputHelper output)
{
    public static TheoryData<int> Sizes => new() { 1, 2, 3, 4, 5, 31, 32, 33, 127, 128, 129, 4096, 151936 };

    [Theory]
    [MemberData(nameof(Sizes))]
    public void MatVecHasAWarpPerRow(int rows)
    {
        var g = Launches.MatVec(rows, 3);
        output.WriteLine($"rows {rows}: {g}");
        long warps = g.GridX * (long)(g.BlockX / Launches.WarpSize);
        Assert.Equal(0u, g.BlockX % Launches.WarpSize);
        Assert.True(warps >= rows && warps - rows < Launches.MatVecWarps, $"{warps} warps for {rows} rows");
        Assert.Equal(3u, g.GridY);
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void QuantizeHasAWarpPerBlock(int blocks)
    {
        var g = Launches.QuantizeQ8_0(blocks);
        long warps = g.GridX * (long)(g.BlockX / Launches.WarpSize);
        Assert.True(warps >= blocks && warps - blocks < g.BlockX / Launches.WarpSize);
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void ElementwiseGridsAreBoundedAndNonEmpty(int n)
    {
        var g = Launches.Elementwise(n);
        Assert.InRange(g.GridX, 1u, (uint)Launches.MaxElementBlocks);
        Assert.True(g.GridX == Launches.MaxElementBlocks || g.GridX * (long)g.BlockX >= n);
        Assert.True((g.GridX - 1) * (long)g.BlockX < n, "no block without an element");
    }

    [Theory]
    [InlineData(16)]
    [InlineData(24)]
    [InlineData(64)]
    [InlineData(128)]
    [InlineData(256)]
    public void RopeCoversEveryPairWithWholeWarps(int headDim)
    {
        var g = Launches.Rope(8, 1, headDim);
        Assert.Equal(0u, g.BlockX % Launches.WarpSize);
        Assert.True(g.BlockX >= Math.Min(headDim / 2, Launches.BlockThreads));
        Assert.Equal(8u, g.GridX);
    }

    [Fact]
    public void RouterAndAttentionShapes()
    {
        var r = Launches.Router(1, 128);
        Assert.Equal(32u, r.BlockX);
        Assert.Equal(128u * sizeof(int), r.SharedBytes);
        var a = Launches.Attention(32, 1);
        Assert.Equal((32u, 1u), (a.GridX, a.GridY));
        Assert.Equal(0u, a.BlockX % Launches.WarpSize);
        Assert.Throws<ArgumentOutOfRangeException>(() => Launches.MatVec(0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => Launches.Elementwise(0));
    }
}
