// SlotPool: slot count from a byte budget, the minimum-budget error, and aligned, distinct, writable slots.
using Pregate.Experts;
using Xunit.Abstractions;

namespace Pregate.Tests.Experts;

public sealed unsafe class SlotPoolTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData(100_000L, 12_288L, 2, 8)]
    [InlineData(12_288L * 5, 12_288L, 5, 5)]
    [InlineData(12_288L * 5 - 1, 12_288L, 2, 4)]
    [InlineData(1_000_000L, 10_000L, 2, 81)] // 10 000 rounds up to 12 288 per slot
    public void SlotCountIsTheBudgetOverTheAlignedSlotSize(long budget, long slotBytes, int minimum, int expected)
    {
        Assert.Equal(expected, SlotPool.SlotCountForBudget(budget, slotBytes, minimum));
    }

    [Fact]
    public void SlotCountIsCappedAtTheMaximum()
    {
        Assert.Equal(16, SlotPool.SlotCountForBudget(1L << 40, 4096, minimumSlots: 2, maximumSlots: 16));
    }

    [Fact]
    public void BudgetBelowOneLayersExpertsNamesTheMinimumInBytes()
    {
        var e = Assert.Throws<ArgumentException>(() => SlotPool.SlotCountForBudget(3 * 8192 + 100, 8192, minimumSlots: 4));
        output.WriteLine(e.Message);
        Assert.Contains("32768 bytes", e.Message);
        Assert.Contains("4 experts", e.Message);
        Assert.Throws<ArgumentException>(() => SlotPool.ForBudget(0, 4096, 1));
    }

    [Fact]
    public void SlotsAreAlignedDistinctAndWritable()
    {
        using SlotPool pool = SlotPool.ForBudget(5 * 8192, 5000, minimumSlots: 2);
        Assert.Equal(8192, pool.SlotBytes);
        Assert.Equal(5, pool.SlotCount);
        Assert.Equal(5 * 8192, pool.TotalBytes);
        var starts = new HashSet<long>();
        for (int s = 0; s < pool.SlotCount; s++)
        {
            byte* p = pool.SlotPointer(s);
            Assert.Equal(0L, (long)p % DirectFileReader.Alignment);
            new Span<byte>(p, (int)pool.SlotBytes).Fill((byte)s);
            starts.Add((long)p);
        }
        for (int s = 0; s < pool.SlotCount; s++)
            Assert.True(new Span<byte>(pool.SlotPointer(s), (int)pool.SlotBytes).IndexOfAnyExcept((byte)s) < 0);
        Assert.Equal(pool.SlotCount, starts.Count);
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.SlotPointer(0));
    }
}
