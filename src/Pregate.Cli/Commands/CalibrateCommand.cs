// `pregate calibrate`: fit the pre-gate predictor on real text and save it next to the model.
using System.CommandLine;
using System.Globalization;
using Pregate.Engine;
using Pregate.Experts.Prediction;

namespace Pregate.Cli.Commands;

internal static class CalibrateCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var engine = new EngineOptionSet();
        var text = new Option<string>("--text") { Description = "UTF-8 text to record routing on (thousands of tokens or more)", Required = true };
        var output = new Option<string?>("--out") { Description = "predictor file (default: next to the model, where run/bench find it)" };
        var lookahead = new Option<int>("--lookahead") { Description = "layers ahead to fit: 1 (next layer) or 2", DefaultValueFactory = _ => 1 };
        var maxTokens = new Option<int>("--max-tokens") { Description = "use at most this many tokens of the text", DefaultValueFactory = _ => 50_000 };
        var cmd = new Command("calibrate", "Train the pre-gate predictor on the routing the model makes on a text") { text, output, lookahead, maxTokens };
        engine.AddTo(cmd);
        cmd.SetAction(p =>
        {
            string textPath = p.GetValue(text)!;
            if (!File.Exists(textPath)) throw new UserException($"{textPath}: no such file");
            string content = File.ReadAllText(textPath);
            using var session = engine.Open(p);
            string outPath = p.GetValue(output) ?? LinearPregate.DefaultPath(session.Checkpoint.Path);
            var o = new CalibrationOptions { Lookahead = p.GetValue(lookahead), MaxTokens = p.GetValue(maxTokens) };
            LinearPregate predictor;
            CalibrationReport r;
            try { (predictor, r) = PregateCalibrator.Calibrate(session, content, o, new Progress<string>(m => stderr.WriteLine(m))); }
            catch (ArgumentException e) { throw new UserException(e.Message); }
            predictor.Save(outPath);
            int k = session.Config.NumExpertsUsed;
            stdout.WriteLine($"wrote {outPath}");
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"fitted on {r.TrainTokens} tokens; recall of the next layer's top-{k} on {r.HeldOutTokens} held-out tokens with k, k+1, k+2 guesses:"));
            stdout.WriteLine($"| layer | pregate top-{k} | top-{k + 1} | top-{k + 2} | next-gate top-{k} | top-{k + 1} | top-{k + 2} |");
            stdout.WriteLine("|---|---|---|---|---|---|---|");
            static string Row(string label, double a, double b, double c, double d, double e, double f) =>
                string.Create(CultureInfo.InvariantCulture, $"| {label} | {a:P1} | {b:P1} | {c:P1} | {d:P1} | {e:P1} | {f:P1} |");
            for (int i = 0; i < r.Pregate.TopK.Length; i++)
                stdout.WriteLine(Row((i + 1).ToString(CultureInfo.InvariantCulture), r.Pregate.TopK[i], r.Pregate.TopKPlus1[i], r.Pregate.TopKPlus2[i],
                    r.NextGate.TopK[i], r.NextGate.TopKPlus1[i], r.NextGate.TopKPlus2[i]));
            stdout.WriteLine(Row("mean", r.Pregate.MeanTopK, r.Pregate.MeanTopKPlus1, r.Pregate.MeanTopKPlus2,
                r.NextGate.MeanTopK, r.NextGate.MeanTopKPlus1, r.NextGate.MeanTopKPlus2));
            stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"ridge (by layer): {string.Join(" ", r.Ridge.Select(x => x[0]).Where(x => !double.IsNaN(x)).Select(x => x.ToString("g2", CultureInfo.InvariantCulture)))}; refinement epochs: {string.Join(" ", r.Epochs.Select(x => x[0]).Where(x => x >= 0))}"));
            return 0;
        });
        return cmd;
    }
}
