// A loaded model ready to run: checkpoint, bound model, tokenizer, worker threads and one sequence state.
// The library's entry point and what every CLI command that executes a model builds on.
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Tokenizers;
using Pregate.Kernels;
using Pregate.Models;

namespace Pregate.Engine;

/// <summary>Settings shared by everything that runs a model.</summary>
public sealed record EngineOptions
{
    /// <summary>Worker threads for the kernels; 0 = one per processor.</summary>
    public int Threads { get; init; }

    /// <summary>KV cache length in tokens; null = the model's context length, capped at <see cref="DefaultMaxContext"/>.</summary>
    public int? Context { get; init; }

    public const int DefaultMaxContext = 4096;

    public void Validate()
    {
        if (Threads < 0 || Threads > 1024) throw new ArgumentException($"threads must be between 1 and 1024 (0 = automatic), not {Threads}");
        if (Context is int c && c < 1) throw new ArgumentException($"context must be at least 1 token, not {c}");
    }
}

/// <summary>Opens a model and owns what running it needs. Dispose to unmap the file and stop the threads.</summary>
public sealed class ModelSession : IDisposable
{
    private readonly Lazy<TextTokenizer> _tokenizer;

    public Checkpoint Checkpoint { get; }
    public MoeModel Model { get; }
    public WorkerTeam Team { get; }
    public InferenceState State { get; }
    public ModelConfig Config => Model.Config;

    /// <summary>The model's tokenizer; throws <see cref="ModelFormatException"/> when the checkpoint has none.</summary>
    public TextTokenizer Tokenizer => _tokenizer.Value;

    private ModelSession(Checkpoint ck, EngineOptions o)
    {
        Checkpoint = ck;
        Model = MoeModel.Load(ck);
        int context = o.Context ?? Math.Min(ck.Config.MaxContext, EngineOptions.DefaultMaxContext);
        if (context > ck.Config.MaxContext)
            throw new ArgumentException($"context {context} exceeds the model's maximum of {ck.Config.MaxContext} tokens");
        State = Model.CreateState(context);
        Team = new WorkerTeam(o.Threads);
        _tokenizer = new Lazy<TextTokenizer>(() => CheckpointTokenizer.Load(ck));
    }

    /// <summary>Opens the GGUF file or HF folder at <paramref name="path"/>.</summary>
    /// <exception cref="ModelFormatException">The model files are malformed.</exception>
    /// <exception cref="ArgumentException">The options are invalid for this model.</exception>
    public static ModelSession Open(string path, EngineOptions? options = null)
    {
        var o = options ?? new EngineOptions();
        o.Validate();
        var ck = Checkpoint.Open(path);
        try { return new ModelSession(ck, o); }
        catch { ck.Dispose(); throw; }
    }

    public Generator CreateGenerator() => new(Model, Tokenizer, State, Team);

    /// <summary>
    /// Runs <paramref name="tokens"/> as a new sequence and returns the logits after every position (or only the last).
    /// </summary>
    /// <exception cref="ArgumentException">No tokens, an id outside the vocabulary, or more tokens than the context.</exception>
    public float[][] Logits(IReadOnlyList<int> tokens, bool allPositions)
    {
        if (tokens.Count == 0) throw new ArgumentException("no tokens given");
        if (tokens.Count > State.Context) throw new ArgumentException($"{tokens.Count} tokens exceed the context of {State.Context}; raise --ctx");
        foreach (int t in tokens)
            if ((uint)t >= (uint)Config.VocabSize) throw new ArgumentException($"token id {t} is outside the vocabulary (0..{Config.VocabSize - 1})");
        State.Reset();
        int vocab = Config.VocabSize, n = tokens.Count;
        var flat = new float[(allPositions ? n : 1) * (long)vocab];
        Model.Forward(State, tokens.ToArray(), flat, allPositions, Team);
        var rows = new float[allPositions ? n : 1][];
        for (int r = 0; r < rows.Length; r++) rows[r] = flat.AsSpan(r * vocab, vocab).ToArray();
        return rows;
    }

    public void Dispose()
    {
        Team.Dispose();
        Checkpoint.Dispose();
    }
}
