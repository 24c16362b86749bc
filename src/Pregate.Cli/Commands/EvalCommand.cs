// `pregate eval`: perplexity on a text and the routing statistics that decide how well caching and prediction can work;
// with offloaded experts also the expert figures of the run (bytes read, experts computed from low-precision copies).
using System.CommandLine;
using System.Globalization;
using Pregate.Engine;
using Pregate.Experts;

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
        var reference = new Option<string?>("--reference")
        {
            Description = "a reference model (e.g. the unquantized original): also report per-layer top-k routing agreement with it and the share of greedy next tokens that change",
        };
        var cmd = new Command("eval", "Perplexity and routing statistics (expert reuse, load balance, next-gate recall, LRU hit rates) on a text") { text, maxTokens, window, slots, reference };
        engine.AddTo(cmd);
        cmd.SetAction(p =>
        {
            string path = p.GetValue(text)!;
            if (!File.Exists(path)) throw new UserException($"{path}: no such file");
            var lru = LogitsCommand.ParseTokens(p.GetValue(slots)!);
            if (lru.Count == 0 || lru.Any(x => x < 1)) throw new UserException("--lru-slots must be positive integers");
            using var session = engine.Open(p, stderr);
            RoutingReport r;
            try { r = RoutingAnalysis.Run(session, File.ReadAllText(path), p.GetValue(maxTokens), p.GetValue(window), lru, new Progress<string>(m => stderr.WriteLine(m))); }
            catch (ArgumentException e) { throw new UserException(e.Message); }
            int k = session.Config.NumExpertsUsed;
            var inv = CultureInfo.InvariantCulture;
            stdout.WriteLine(string.Create(inv, $"tokens {r.Tokens}, perplexity {r.Perplexity:0.00} ({r.NllPerToken:0.0000} nats/token)"));
            if (session.ExpertPlacement.Offloaded) stdout.WriteLine(EngineOptionSet.DescribeStats(session.ExpertPlacement, session.ExpertStats));
            stdout.WriteLine($"| layer | reuse t-1 | load max/mean | load entropy | next-gate top-{k} | top-{k + 1} | " + string.Join(" | ", lru.Select(x => $"LRU {x}")) + " |");
            stdout.WriteLine("|---|---|---|---|---|---|" + string.Concat(lru.Select(_ => "---|")));
            foreach (var l in r.Layers)
                stdout.WriteLine(string.Create(inv,
                    $"| {l.Layer} | {l.ConsecutiveReuse:0.000} | {l.LoadMaxOverMean:0.00} | {l.LoadEntropyRatio:0.000} | {Fmt(l.NextGateRecallTopK)} | {Fmt(l.NextGateRecallTopKPlus1)} | ") +
                    string.Join(" | ", lru.Select(x => l.LruHitRate[x].ToString("0.000", inv))) + " |");
            if (p.GetValue(reference) is string refPath)
            {
                if (!File.Exists(refPath) && !Directory.Exists(refPath)) throw new UserException($"{refPath}: no such reference model");
                using var refSession = OpenReference(engine, p, refPath);
                RoutingComparisonReport cmp;
                // Low-precision misses are decided per token in decode steps but per expert group in a prefill block, so the model
                // runs token by token here, as the perplexity pass does.
                bool stepwise = session.ExpertPlacement is { Offloaded: true, OnMiss: MissPolicy.LowPrecision };
                try { cmp = RoutingComparison.Run(session, refSession, File.ReadAllText(path), p.GetValue(maxTokens), p.GetValue(window), new Progress<string>(m => stderr.WriteLine(m)), stepwise); }
                catch (ArgumentException e) { throw new UserException(e.Message); }
                stdout.WriteLine(string.Create(inv, $"against {refPath} on {cmp.Tokens} tokens: top-{k} routing agreement {cmp.MeanAgreement:P2} (mean over layers), greedy next token changed at {cmp.GreedyChangeRate:P2} of positions, mean KL divergence from the reference {cmp.MeanKlDivergence:F6} nats/token"));
                stdout.WriteLine("| layer | top-k agreement |");
                stdout.WriteLine("|---|---|");
                for (int l = 0; l < cmp.LayerAgreement.Count; l++)
                    stdout.WriteLine(string.Create(inv, $"| {l} | {cmp.LayerAgreement[l]:P2} |"));
            }
            return 0;
        });
        return cmd;
    }

    // The reference runs with the model's engine options, except that it loads its misses at full precision: low precision
    // is what the comparison measures, and the reference (e.g. the unquantized original) has no copies.
    private static ModelSession OpenReference(EngineOptionSet engine, ParseResult p, string path)
    {
        var o = engine.Options(p);
        if (o.OnMiss == MissPolicy.LowPrecision) o = o with { OnMiss = MissPolicy.Load };
        try { return ModelSession.Open(path, o); }
        catch (ArgumentException e) { throw new UserException(e.Message); }
    }

    private static string Fmt(double? v) => v is double d ? d.ToString("0.000", CultureInfo.InvariantCulture) : "–";
}
