// GuessCalibration: a new table trusts every guess, converges to the routed share of each (lookahead, layer, rank,
// softmax bin) cell, tells layers apart, borrows from coarser cells where a cell has few guesses, and rejects guesses
// outside the table.
using Pregate.Experts.Prediction;
using Xunit.Abstractions;

namespace Pregate.Tests.Prediction;

public sealed class GuessCalibrationTests(ITestOutputHelper output)
{
    [Fact]
    public void ANewTableTrustsEveryGuess()
    {
        var c = new GuessCalibration(maxLookahead: 2, layers: 4, ranks: 3);
        foreach (double p in new[] { 0.0, 0.05, 0.5, 1.0 })
            Assert.Equal(1.0, c.Probability(2, 3, 2, p));
        Assert.Equal(0, c.Observed);
    }

    [Fact]
    public void ConvergesToTheRoutedShareOfEachCell()
    {
        var c = new GuessCalibration(maxLookahead: 1, layers: 3, ranks: 2);
        var random = new Random(7);
        // Layer 1: rank 0 at softmax 0.9 is right 90% of the time, rank 1 at 0.3 30%, rank 1 at 0.07 60%; layer 2: rank 0 at 0.9 50%.
        (int Layer, int Rank, double Softmax, double Right)[] cells = [(1, 0, 0.9, 0.9), (1, 1, 0.3, 0.3), (1, 1, 0.07, 0.6), (2, 0, 0.9, 0.5)];
        for (int i = 0; i < 40_000; i++)
        {
            var cell = cells[i % cells.Length];
            c.Observe(1, cell.Layer, cell.Rank, cell.Softmax, random.NextDouble() < cell.Right);
        }
        foreach (var cell in cells)
        {
            double p = c.Probability(1, cell.Layer, cell.Rank, cell.Softmax);
            output.WriteLine($"layer {cell.Layer}, rank {cell.Rank}, softmax {cell.Softmax}: calibrated {p:0.0000}, true {cell.Right} (tolerance 0.02)");
            Assert.InRange(p, cell.Right - 0.02, cell.Right + 0.02);
        }
        Assert.Equal(40_000, c.Observed);
    }

    [Fact]
    public void AnEmptyCellBorrowsTheShareOfItsLayerAndRank()
    {
        var c = new GuessCalibration(maxLookahead: 1, layers: 3, ranks: 2);
        for (int i = 0; i < 1000; i++) c.Observe(1, 2, 1, 0.42, routed: i % 4 == 0);
        for (int i = 0; i < 1000; i++) c.Observe(1, 1, 1, 0.42, routed: i % 4 != 0);
        double seen = c.Probability(1, 2, 1, 0.42), unseenBin = c.Probability(1, 2, 1, 0.97), unseenLayer = c.Probability(1, 0, 1, 0.42);
        double otherRank = c.Probability(1, 2, 0, 0.42);
        output.WriteLine($"layer 2 rank 1 at 0.42: {seen:0.000}; in an unseen bin: {unseenBin:0.000}; layer 0 (unseen) rank 1: {unseenLayer:0.000}; rank 0 (no evidence): {otherRank:0.000}");
        Assert.InRange(seen, 0.23, 0.27);
        Assert.InRange(unseenBin, 0.23, 0.27);
        Assert.InRange(unseenLayer, 0.48, 0.52); // the rank's share over both layers
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
        var c = new GuessCalibration(maxLookahead: 1, layers: 2, ranks: 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => c.Probability(2, 0, 0, 0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => c.Probability(1, 2, 0, 0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => c.Probability(1, 0, 2, 0.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => c.Observe(0, 0, 0, 0.5, true));
        Assert.Throws<ArgumentOutOfRangeException>(() => new GuessCalibration(1, 0, 2));
    }
}
