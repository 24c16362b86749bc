// Options shared by every command that runs a model (run, logits, bench, serve, chat), and opening the model from them.
using System.CommandLine;
using Pregate.Engine;

namespace Pregate.Cli;

internal sealed class EngineOptionSet
{
    public readonly Option<string?> Model = new("--model") { Description = $"GGUF file or Hugging Face checkpoint folder (default: the shipped {DefaultModel.Name})" };
    public readonly Option<int> Threads = new("--threads") { Description = "worker threads (default: one per processor)", DefaultValueFactory = _ => 0 };
    public readonly Option<int?> Context = new("--ctx") { Description = $"context length in tokens (default: the model's, at most {EngineOptions.DefaultMaxContext})" };

    public void AddTo(Command c)
    {
        c.Options.Add(Model);
        c.Options.Add(Threads);
        c.Options.Add(Context);
    }

    public string ModelPath(ParseResult p) => p.GetValue(Model) ?? DefaultModel.Require();

    public ModelSession Open(ParseResult p)
    {
        var o = new EngineOptions { Threads = p.GetValue(Threads), Context = p.GetValue(Context) };
        try { return ModelSession.Open(ModelPath(p), o); }
        catch (ArgumentException e) { throw new UserException(e.Message); }
    }
}
