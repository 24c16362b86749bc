// `pregate logits`: the model's next-token logits for a token sequence, as JSON (used by oracle checks).
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;

namespace Pregate.Cli.Commands;

internal static class LogitsCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var engine = new EngineOptionSet();
        var tokens = new Option<string>("--tokens") { Description = "comma-separated token ids, e.g. 1,2,3", Required = true };
        var positions = new Option<string>("--positions") { Description = "all (one row per token) or last", DefaultValueFactory = _ => "all" };
        var stats = new Option<bool>("--stats") { Description = "print the forward speed and expert cache statistics (a table per layer) to stderr (the tokens are fed as given: teacher forcing)" };
        var cmd = new Command("logits", "Print the logits after each token as JSON {\"logits\": [[...], ...]}") { tokens, positions, stats };
        engine.AddTo(cmd);
        cmd.SetAction(p =>
        {
            var ids = ParseTokens(p.GetValue(tokens)!);
            string pos = p.GetValue(positions)!;
            if (pos is not ("all" or "last")) throw new UserException($"--positions must be all or last, not '{pos}'");
            using var session = engine.Open(p, stderr);
            float[][] rows;
            var before = session.ExpertStats;
            long start = Stopwatch.GetTimestamp();
            try { rows = session.Logits(ids, pos == "all"); }
            catch (ArgumentException e) { throw new UserException(e.Message); }
            if (p.GetValue(stats))
            {
                double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
                stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"forward: {ids.Count} tokens in {seconds:0.000} s, {ids.Count / Math.Max(seconds, 1e-9):0.00} tok/s, logits at {pos} positions"));
                var stretch = session.ExpertStats - before;
                stderr.WriteLine(EngineOptionSet.DescribeStats(session.ExpertPlacement, stretch));
                ExpertStatsTable.Write(stderr, session.ExpertPlacement, stretch);
            }
            for (int r = 0; r < rows.Length; r++)
                for (int i = 0; i < rows[r].Length; i++)
                    if (!float.IsFinite(rows[r][i])) throw new UserException($"the model produced a non-finite logit ({rows[r][i]}) at row {r}, token {i}");
            // float.ToString gives the shortest text that round-trips to the same float32.
            stdout.Write("{\"logits\": [");
            for (int r = 0; r < rows.Length; r++)
            {
                stdout.Write(r == 0 ? "[" : ", [");
                var row = rows[r];
                for (int i = 0; i < row.Length; i++)
                {
                    if (i > 0) stdout.Write(", ");
                    stdout.Write(row[i].ToString(CultureInfo.InvariantCulture));
                }
                stdout.Write("]");
            }
            stdout.Write("]}");
            stdout.WriteLine();
            return 0;
        });
        return cmd;
    }

    internal static List<int> ParseTokens(string s)
    {
        var ids = new List<int>();
        foreach (string part in s.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int id))
                throw new UserException($"--tokens: '{part}' is not a token id (expected comma-separated non-negative integers)");
            ids.Add(id);
        }
        return ids;
    }
}
