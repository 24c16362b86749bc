// `pregate demo`: the main job on the built-in default model: generate from a few prompts and show the speed.
using System.CommandLine;
using System.Globalization;
using Pregate.Engine;
using Pregate.Formats;

namespace Pregate.Cli.Commands;

internal static class DemoCommand
{
    private static readonly string[] Prompts =
    [
        "The old man walked into the village and",
        "In the morning, the committee decided that",
    ];

    /// <summary>The demo offloads its experts to a cache of this share of their bytes unless --expert-memory says otherwise.</summary>
    private const double DemoExpertShare = 0.5;

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var engine = new EngineOptionSet { DefaultExpertMemory = ExpertMemory.OfFraction(DemoExpertShare) };
        var count = new Option<int>("-n", "--tokens-to-generate") { Description = "tokens to generate per prompt", DefaultValueFactory = _ => 48 };
        var seed = new Option<ulong>("--seed") { Description = "sampling seed", DefaultValueFactory = _ => 1 };
        var cmd = new Command("demo", $"Run the built-in default model ({DefaultModel.Name}) on a few prompts with its experts offloaded " +
            $"(a cache of {DemoExpertShare * 100:0}% of their bytes unless --expert-memory is given) and report speed and cache statistics") { count, seed };
        engine.AddTo(cmd);
        cmd.SetAction(p =>
        {
            using var session = engine.Open(p, stderr);
            var s = ModelSummary.Of(session.Checkpoint);
            var c = s.Config;
            stdout.WriteLine($"model: {session.Checkpoint.Path} ({c.ModelType}, {c.NumLayers} layers, {c.NumExperts} experts top-{c.NumExpertsUsed}, " +
                             $"{Units.Count(s.TotalParams)} parameters, {Units.Count(s.ActiveParams)} active per token)");
            stdout.WriteLine($"bytes: {Units.Bytes(s.ResidentBytes)} resident, {Units.Bytes(s.ExpertBytes)} in routed experts");
            var gen = session.CreateGenerator();
            var o = new GenerationOptions
            {
                MaxTokens = p.GetValue(count),
                Sampling = new SamplingOptions { Temperature = 0.7f, TopK = 40, TopP = 0.95f, MinP = 0.05f, RepetitionPenalty = 1.1f, Seed = p.GetValue(seed) },
            };
            if (o.MaxTokens < 1) throw new UserException($"-n must be at least 1, not {o.MaxTokens}");
            foreach (string prompt in Prompts)
            {
                stdout.WriteLine();
                stdout.Write(prompt);
                var before = session.ExpertStats;
                var r = gen.Generate(prompt, o, t => { stdout.Write(t); stdout.Flush(); });
                stdout.WriteLine();
                stdout.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"  [{r.PromptTokens} prompt tokens at {r.PrefillTokensPerSecond:0} tok/s, {r.Tokens.Count} generated at {r.DecodeTokensPerSecond:0} tok/s]"));
                stdout.WriteLine($"  [{EngineOptionSet.DescribeStats(session.ExpertPlacement, session.ExpertStats - before)}]");
            }
            return 0;
        });
        return cmd;
    }
}
