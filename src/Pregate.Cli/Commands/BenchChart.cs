// chart.png of a bench matrix (ScottPlot 5): decode tokens/s per configuration as bars grouped by expert-memory budget (and
// batch size, when the matrix has several), with each bar's expert-cache hit rate as a marker on the right axis.
using Pregate.Engine;
using ScottPlot;

namespace Pregate.Cli.Commands;

internal static class BenchChart
{
    /// <summary>
    /// The PNG bytes of the chart of <paramref name="rows"/> (the rows that ran; skipped and failed ones leave gaps);
    /// <paramref name="batched"/>: groups are (budget, batch size), labelled "budget ×N".
    /// </summary>
    public static byte[] Render(string mode, IReadOnlyList<BenchRow> rows, string modelName, bool batched = false)
    {
        string Group(BenchRow r) => batched ? $"{r.Job.Budget} ×{r.Job.Batch}" : r.Job.Budget;
        var budgets = rows.Select(Group).Distinct().ToList();
        var configs = rows.Select(r => r.Job.Config).Distinct().ToList();
        var palette = new ScottPlot.Palettes.Category10();
        var plot = new Plot();
        double groupWidth = 0.8, barWidth = groupWidth / Math.Max(1, configs.Count);
        var hitX = new List<double>();
        var hitY = new List<double>();
        for (int c = 0; c < configs.Count; c++)
        {
            var bars = new List<Bar>();
            for (int b = 0; b < budgets.Count; b++)
            {
                var row = rows.FirstOrDefault(r => r.Job.Config == configs[c] && Group(r) == budgets[b]);
                if (row?.Number("decode_tok_s") is not double tokS) continue;
                // Within a group the present configurations sit side by side, centred on the budget's tick.
                var present = configs.Where(x => rows.Any(r => r.Job.Config == x && Group(r) == budgets[b] && r.Number("decode_tok_s") is not null)).ToList();
                double x = b - barWidth * (present.Count - 1) / 2 + barWidth * present.IndexOf(configs[c]);
                bars.Add(new Bar { Position = x, Value = tokS, FillColor = palette.GetColor(c), Size = barWidth * 0.9 });
                if (row.Number("expert_hit_rate") is double hit)
                {
                    hitX.Add(x);
                    hitY.Add(hit * 100);
                }
            }
            if (bars.Count == 0) continue;
            var series = plot.Add.Bars(bars);
            series.LegendText = configs[c];
        }
        if (hitX.Count > 0)
        {
            var hits = plot.Add.ScatterPoints(hitX.ToArray(), hitY.ToArray());
            hits.Axes.YAxis = plot.Axes.Right;
            hits.MarkerShape = MarkerShape.FilledDiamond;
            hits.MarkerSize = 9;
            hits.Color = Colors.Black;
            hits.LegendText = "hit rate (right axis)";
            plot.Axes.Right.Label.Text = "expert cache hit rate (%)";
        }
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, budgets.Count).Select(i => (double)i).ToArray(), budgets.ToArray());
        plot.Axes.Bottom.Label.Text = batched ? "expert memory budget ×batch (sequences decoding together)" : "expert memory budget";
        plot.Axes.Left.Label.Text = "decode tokens/s";
        plot.Axes.Margins(bottom: 0);
        plot.Axes.AutoScale();
        if (hitX.Count > 0) plot.Axes.SetLimitsY(0, 105, plot.Axes.Right); // after the autoscale, so it stays
        plot.Title($"pregate bench {mode}: {modelName}");
        plot.ShowLegend(Alignment.UpperLeft);
        return plot.GetImageBytes(Math.Max(800, 160 * budgets.Count + 200), 500, ImageFormat.Png);
    }
}
