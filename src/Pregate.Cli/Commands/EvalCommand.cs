// `pregate eval`: perplexity on a text and the routing statistics that decide how well caching and prediction can work.
using System.CommandLine;
using System.Globalization;
using Pregate.Engine;

namespace Pregate.Cli.Commands;

internal static class EvalCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var engine = new EngineOptionSet();
        var text = new Option<string>("--text") { Description = "UTF-8 text to evaluate on", Required = true };
        var maxTokens = new Option<int>("--max-tokens") { Description = "use at most this many tokens", DefaultValueFactory = _ => 20_000 };
        var window = new Option<int>("--window") { Description = "tokens per window (each starts from an empty cache)", DefaultValueFactory = _ => 256 };
        var slots = new Option<string>("--lru-slots") { Description = "comma-separated slots per layer for the LRU simulation", DefaultValueFactory = _ => "2,4,8" };
        var cmd = new Command("eval", "Perplexity and routing statistics (expert reuse, load balance, next-gate recall, LRU hit rates) on a text") { text, maxTokens, window, slots };
        engine.AddTo(cmd);
        cmd.SetAction(p =>
        {
            string path = p.GetValue(text)!;
            if (!File.Exists(path)) throw new UserException($"{path}: no such file");
            var lru = LogitsCommand.ParseTokens(p.GetValue(slots)!);
            if (lru.Count == 0 || lru.Any(x => x < 1)) throw new UserException("--lru-slots must be positive integers");
            using var session = engine.Open(p);
            RoutingReport r;
            try { r = RoutingAnalysis.Run(session, File.ReadAllText(path), p.GetValue(maxTokens), p.GetValue(window), lru, new Progress<string>(m => stderr.WriteLine(m))); }
            catch (ArgumentException e) { throw new UserException(e.Message); }
            int k = session.Config.NumExpertsUsed;
            var inv = CultureInfo.InvariantCulture;
            stdout.WriteLine(string.Create(inv, $"tokens {r.Tokens}, perplexity {r.Perplexity:0.00} ({r.NllPerToken:0.0000} nats/token)"));
            stdout.WriteLine($"| layer | reuse t-1 | load max/mean | load entropy | next-gate top-{k} | top-{k + 1} | " + string.Join(" | ", lru.Select(x => $"LRU {x}")) + " |");
            stdout.WriteLine("|---|---|---|---|---|---|" + string.Concat(lru.Select(_ => "---|")));
            foreach (var l in r.Layers)
                stdout.WriteLine(string.Create(inv,
                    $"| {l.Layer} | {l.ConsecutiveReuse:0.000} | {l.LoadMaxOverMean:0.00} | {l.LoadEntropyRatio:0.000} | {Fmt(l.NextGateRecallTopK)} | {Fmt(l.NextGateRecallTopKPlus1)} | ") +
                    string.Join(" | ", lru.Select(x => l.LruHitRate[x].ToString("0.000", inv))) + " |");
            return 0;
        });
        return cmd;
    }

    private static string Fmt(double? v) => v is double d ? d.ToString("0.000", CultureInfo.InvariantCulture) : "–";
}
