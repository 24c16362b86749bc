// GuessCalibration: a new table trusts every guess, converges to the routed share of each (lookahead, rank, softmax bin)
// cell, borrows from the rank's share where a cell has few guesses, and rejects guesses outside the table.
using Pregate.Experts.Prediction;
using Xunit.Abstractions;

namespace Pregate.Tests.Prediction;

public sealed class GuessCalibrationTests(ITestOutputHelper output)
{
    [Fact]
    public void ANewTableTrustsEveryGuess()
    {
        var c = new GuessCalibration(maxLookahead: 2, ranks: 3);
        foreach (double p in new[] { 0.0, 0.05, 0.5, 1.0 })
            Assert.Equal(1.0, c.Probability(2, 2, p));
        Assert.Equal(0, c.Observed);
    }

    [Fact]
    public void ConvergesToTheRoutedShareOfEachCell()
    {
        var c = new GuessCalibration(maxLookahead: 1, ranks: 2);
        var random = new Random(7);
        // Rank 0 at softmax 0.9 is right 90% of the time, rank 1 at 0.3 is right 30%, rank 1 at 0.07 is right 60%.
        (int Rank, double Softmax, double Right)[] cells = [(0, 0.9, 0.9), (1, 0.3, 0.3), (1, 0.07, 0.6)];
        for (int i = 0; i < 20_000; i++)
        {
            var cell = cells[i % cells.Length];
            c.Observe(1, cell.Rank, cell.Softmax, random.NextDouble() < cell.Right);
        }
        foreach (var cell in cells)
        {
            double p = c.Probability(1, cell.Rank, cell.Softmax);
            output.WriteLine($"rank {cell.Rank}, softmax {cell.Softmax}: calibrated {p:0.0000}, true {cell.Right} (tolerance 0.02)");
            Assert.InRange(p, cell.Right - 0.02, cell.Right + 0.02);
        }
        Assert.Equal(20_000, c.Observed);
    }

    [Fact]
    public void AnEmptyCellBorrowsTheShareOfItsRank()
    {
        var c = new GuessCalibration(maxLookahead: 1, ranks: 2);
        for (int i = 0; i < 1000; i++) c.Observe(1, 1, 0.42, routed: i % 4 == 0);
        double rank = c.Probability(1, 1, 0.42), unseenBin = c.Probability(1, 1, 0.97), otherRank = c.Probability(1, 0, 0.42);
        output.WriteLine($"rank 1 at 0.42: {rank:0.000}; rank 1 in an unseen bin: {unseenBin:0.000}; rank 0 (no evidence): {otherRank:0.000}");
        Assert.InRange(rank, 0.23, 0.27);
        Assert.InRange(unseenBin, 0.23, 0.27);
        Assert.Equal(1.0, otherRank);
    }

    [Fact]
    public void BinsAndBoundsAreChecked()
    {
        Assert.Equal(0, GuessCalibration.Bucket(double.NaN));
        Assert.Equal(0, GuessCalibration.Bucket(-1));
        Assert.Equal(1, GuessCalibration.Bucket(0.05));
        Assert.Equal(GuessCalibration.Buckets - 1, GuessCalibration.Bucket(1));
        Assert.Equal(GuessCalibration.Buckets - 1, GuessCalibration.Bucket(7));
        var c = new GuessCalibration(maxLookahead: 1, ranks: 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => c.Probability(2, 0, 0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => c.Probability(1, 2, 0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => c.Observe(0, 0, 0.5, true));
        Assert.Throws<ArgumentOutOfRangeException>(() => new GuessCalibration(0, 2));
    }
}
