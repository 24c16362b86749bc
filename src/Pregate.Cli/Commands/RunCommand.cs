// `pregate run`: generate text from a prompt, streaming it to stdout; speed to stderr.
using System.CommandLine;
using System.Globalization;
using Pregate.Engine;

namespace Pregate.Cli.Commands;

internal static class RunCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var engine = new EngineOptionSet();
        var sampling = new SamplingOptionSet();
        var prompt = new Option<string>("--prompt") { Description = "the prompt text", DefaultValueFactory = _ => "Once upon a time" };
        var count = new Option<int>("-n", "--tokens-to-generate") { Description = "tokens to generate", DefaultValueFactory = _ => 64 };
        var stop = new Option<string[]>("--stop") { Description = "stop when this text is generated (repeatable)", AllowMultipleArgumentsPerToken = false };
        var stats = new Option<bool>("--stats") { Description = "print expert cache statistics (hit rate, bytes read, stalls; a table per layer) to stderr" };
        var cmd = new Command("run", "Generate text from a prompt") { prompt, count, stop, stats };
        engine.AddTo(cmd);
        sampling.AddTo(cmd);
        cmd.SetAction(p =>
        {
            var o = new GenerationOptions
            {
                MaxTokens = p.GetValue(count),
                Sampling = sampling.Get(p),
                StopStrings = p.GetValue(stop) ?? [],
            };
            if (o.MaxTokens < 1) throw new UserException($"-n must be at least 1, not {o.MaxTokens}");
            using var session = engine.Open(p, stderr);
            var gen = session.CreateGenerator();
            string text = p.GetValue(prompt)!;
            stdout.Write(text);
            var before = session.ExpertStats;
            GenerationResult r;
            try { r = gen.Generate(text, o, s => { stdout.Write(s); stdout.Flush(); }); }
            catch (ArgumentException e) { throw new UserException(e.Message); }
            stdout.WriteLine();
            stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"prompt: {r.PromptTokens} tokens, {r.PrefillTokensPerSecond:0.0} tok/s | generated: {r.Tokens.Count} tokens, {r.DecodeTokensPerSecond:0.0} tok/s | finish: {r.FinishReason.ToString().ToLowerInvariant()}"));
            if (p.GetValue(stats))
            {
                var stretch = session.ExpertStats - before;
                stderr.WriteLine(EngineOptionSet.DescribeStats(session.ExpertPlacement, stretch));
                ExpertStatsTable.Write(stderr, session.ExpertPlacement, stretch);
            }
            return 0;
        });
        return cmd;
    }
}

/// <summary>Sampling options shared by run, chat and serve defaults.</summary>
internal sealed class SamplingOptionSet
{
    public readonly Option<float> Temperature = new("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.8f };
    public readonly Option<int> TopK = new("--top-k") { Description = "keep the k most likely tokens (0 = off)", DefaultValueFactory = _ => 40 };
    public readonly Option<float> TopP = new("--top-p") { Description = "nucleus sampling mass (1 = off)", DefaultValueFactory = _ => 0.95f };
    public readonly Option<float> MinP = new("--min-p") { Description = "drop tokens below this fraction of the best (0 = off)", DefaultValueFactory = _ => 0.05f };
    public readonly Option<float> RepeatPenalty = new("--repeat-penalty") { Description = "penalty for recent tokens (1 = off)", DefaultValueFactory = _ => 1.0f };
    public readonly Option<ulong> Seed = new("--seed") { Description = "random seed", DefaultValueFactory = _ => 0 };

    public void AddTo(Command c)
    {
        foreach (var o in new Option[] { Temperature, TopK, TopP, MinP, RepeatPenalty, Seed }) c.Options.Add(o);
    }

    public SamplingOptions Get(ParseResult p)
    {
        var s = new SamplingOptions
        {
            Temperature = p.GetValue(Temperature),
            TopK = p.GetValue(TopK),
            TopP = p.GetValue(TopP),
            MinP = p.GetValue(MinP),
            RepetitionPenalty = p.GetValue(RepeatPenalty),
            Seed = p.GetValue(Seed),
        };
        try { s.Validate(); }
        catch (ArgumentException e) { throw new UserException(e.Message); }
        return s;
    }
}
