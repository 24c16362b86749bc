// `pregate chat`: a conversation in the terminal through the model's chat template (ChatML when it has none), replies
// streamed as they are generated. One input line is one user message; /reset starts over, /exit (or end of input) quits.
using System.CommandLine;
using Pregate.Engine;
using Pregate.Engine.ChatTemplates;

namespace Pregate.Cli.Commands;

internal static class ChatCommand
{
    public static Command Create(TextReader stdin, TextWriter stdout, TextWriter stderr)
    {
        var engine = new EngineOptionSet();
        var sampling = new SamplingOptionSet();
        var system = new Option<string?>("--system") { Description = "a system message that opens the conversation" };
        var count = new Option<int>("-n", "--max-tokens") { Description = "most tokens per reply", DefaultValueFactory = _ => 512 };
        var cmd = new Command("chat", "Chat with the model in the terminal (/reset clears the conversation, /exit quits)") { system, count };
        engine.AddTo(cmd);
        sampling.AddTo(cmd);
        cmd.SetAction((p, cancel) =>
        {
            int maxTokens = p.GetValue(count);
            if (maxTokens < 1) throw new UserException($"-n must be at least 1, not {maxTokens}");
            var baseSampling = sampling.Get(p);
            using var session = engine.Open(p, stderr);
            var format = ChatFormat.For(session);
            var generator = session.CreateGenerator();
            stderr.WriteLine(format.IsFallback
                ? $"chat format: ChatML ({format.FallbackReason})"
                : $"chat format: the model's template ({format.Origin})");
            stderr.WriteLine("type a message and press Enter; /reset clears the conversation, /exit quits");

            var history = new List<ChatMessage>();
            string? systemText = p.GetValue(system);
            void Reset()
            {
                history.Clear();
                if (!string.IsNullOrEmpty(systemText)) history.Add(new ChatMessage("system", systemText));
            }
            Reset();
            bool interactive = ReferenceEquals(stdin, Console.In) && !Console.IsInputRedirected;
            for (int turn = 0; !cancel.IsCancellationRequested; )
            {
                if (interactive) { stdout.Write("> "); stdout.Flush(); }
                string? line = stdin.ReadLine();
                if (line is null) break;
                string input = line.Trim();
                if (input.Length == 0) continue;
                if (input is "/exit" or "/quit") break;
                if (input == "/reset")
                {
                    Reset();
                    stderr.WriteLine("(conversation cleared)");
                    continue;
                }
                if (input.StartsWith('/'))
                {
                    stderr.WriteLine($"unknown command {input}; /reset clears the conversation, /exit quits");
                    continue;
                }
                history.Add(new ChatMessage("user", line));
                IReadOnlyList<int> prompt;
                try { prompt = format.Encode(history); }
                catch (ChatTemplateException e)
                {
                    history.RemoveAt(history.Count - 1);
                    stderr.WriteLine($"error: the chat template failed: {e.Message}");
                    continue;
                }
                if (prompt.Count >= session.State.Context)
                {
                    history.RemoveAt(history.Count - 1);
                    stderr.WriteLine($"error: the conversation has {prompt.Count} tokens and no longer fits the context of {session.State.Context}; /reset to start over");
                    continue;
                }
                var options = format.WithStops(new GenerationOptions
                {
                    MaxTokens = maxTokens,
                    Sampling = baseSampling with { Seed = baseSampling.Seed + (ulong)turn++ },
                });
                GenerationResult r;
                try { r = generator.Generate(prompt, options, s => { stdout.Write(s); stdout.Flush(); }, cancel); }
                catch (OperationCanceledException) { stdout.WriteLine(); break; }
                stdout.WriteLine();
                history.Add(new ChatMessage("assistant", r.Text));
            }
            return Task.FromResult(0);
        });
        return cmd;
    }
}
