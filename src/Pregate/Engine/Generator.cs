// The prefill/decode loop: feeds the prompt, then samples token by token until EOS, a stop string or the token limit,
// streaming text as it becomes complete.
using System.Diagnostics;
using System.Text;
using Pregate.Formats.Tokenizers;
using Pregate.Kernels;
using Pregate.Models;

namespace Pregate.Engine;

/// <summary>What to generate. <see cref="MaxTokens"/> ≥ 1.</summary>
public sealed record GenerationOptions
{
    public int MaxTokens { get; init; } = 128;
    public SamplingOptions Sampling { get; init; } = new();
    public IReadOnlyList<string> StopStrings { get; init; } = [];
    /// <summary>Stop at the tokenizer's end-of-generation tokens.</summary>
    public bool StopAtEos { get; init; } = true;
    /// <summary>More token ids that end generation (not part of the output), e.g. a chat format's end-of-turn token.</summary>
    public IReadOnlyList<int> StopTokens { get; init; } = [];
}

public enum FinishReason { Stop, Length }

/// <summary>Outcome and timing of one generation.</summary>
public sealed record GenerationResult(
    string Text,
    IReadOnlyList<int> Tokens,
    int PromptTokens,
    FinishReason FinishReason,
    TimeSpan PrefillTime,
    TimeSpan DecodeTime)
{
    public double PrefillTokensPerSecond => PromptTokens / Math.Max(PrefillTime.TotalSeconds, 1e-9);

    /// <summary>Decode speed over the tokens after the first (the first comes from the prefill's logits).</summary>
    public double DecodeTokensPerSecond => Math.Max(Tokens.Count - 1, 0) / Math.Max(DecodeTime.TotalSeconds, 1e-9);
}

/// <summary>Runs generations for one model on one sequence state.</summary>
public sealed class Generator(MoeModel model, TextTokenizer tokenizer, InferenceState state, WorkerTeam? team)
{
    private readonly float[] _logits = new float[model.Config.VocabSize];

    public MoeModel Model => model;
    public TextTokenizer Tokenizer => tokenizer;
    public InferenceState State => state;

    /// <summary>Tokenizes <paramref name="prompt"/> (with BOS when the tokenizer asks for it) and generates.</summary>
    public GenerationResult Generate(string prompt, GenerationOptions o, Action<string>? onText = null, CancellationToken cancel = default) =>
        Generate(tokenizer.Encode(prompt, tokenizer.AddBosToken), o, onText, cancel);

    /// <summary>
    /// Starts a new sequence with <paramref name="promptIds"/> and generates up to <c>o.MaxTokens</c> tokens. Text is passed to
    /// <paramref name="onText"/> as soon as it is complete and cannot be the start of a stop string.
    /// </summary>
    /// <exception cref="ArgumentException">Empty prompt, a prompt that does not fit the context, a bad token id or options.</exception>
    public GenerationResult Generate(IReadOnlyList<int> promptIds, GenerationOptions o, Action<string>? onText = null, CancellationToken cancel = default)
    {
        var sequence = new SequenceDecoding(tokenizer, model.Config.VocabSize, state.Context, promptIds, o, onText);
        state.Reset();
        var clock = Stopwatch.StartNew();
        Forward(promptIds.ToArray(), _logits);
        var prefill = clock.Elapsed;

        clock.Restart();
        while (true)
        {
            cancel.ThrowIfCancellationRequested();
            if (!sequence.Accept(_logits, state.Position)) break;
            int next = sequence.NextToken;
            Forward(new ReadOnlySpan<int>(in next), _logits);
        }
        return sequence.Finish(prefill, clock.Elapsed);
    }

    // Runs tokens (the whole prompt as one batch, or one decoded token) and leaves the last position's logits.
    private void Forward(ReadOnlySpan<int> tokens, Span<float> logits) =>
        model.Forward(state, tokens, logits, allPositions: false, team);
}

/// <summary>
/// The sampling side of one generation, apart from the forward passes: samples each next token from the logits, stops at
/// EOS, a stop token, a stop string, the token limit or a full context, and streams the text. Shared by
/// <see cref="Generator"/> and the batched loop of <see cref="GenerationScheduler"/>, so both give the same tokens.
/// </summary>
internal sealed class SequenceDecoding
{
    private readonly TextTokenizer _tokenizer;
    private readonly GenerationOptions _options;
    private readonly Action<string>? _onText;
    private readonly int _context, _promptTokens;
    private readonly Sampler _sampler;
    private readonly List<int> _history;
    private readonly List<int> _generated = new();
    private readonly TokenStreamDecoder _decoder;
    private readonly StringBuilder _text = new();
    private readonly StopMatcher _stops;
    private FinishReason _finish = FinishReason.Length;

    /// <exception cref="ArgumentException">Empty prompt, a prompt that does not fit the context, a bad token id or options.</exception>
    public SequenceDecoding(TextTokenizer tokenizer, int vocab, int context, IReadOnlyList<int> promptIds, GenerationOptions o, Action<string>? onText)
    {
        if (o.MaxTokens < 1) throw new ArgumentException($"the number of tokens to generate must be at least 1, not {o.MaxTokens}");
        if (promptIds.Count == 0) throw new ArgumentException("the prompt is empty: give at least one token");
        if (promptIds.Count >= context)
            throw new ArgumentException($"the prompt has {promptIds.Count} tokens but the context holds {context}; shorten the prompt or raise --ctx");
        foreach (int id in promptIds)
            if ((uint)id >= (uint)vocab) throw new ArgumentException($"token id {id} is outside the vocabulary (0..{vocab - 1})");
        _tokenizer = tokenizer;
        _options = o;
        _onText = onText;
        _context = context;
        _promptTokens = promptIds.Count;
        _sampler = new Sampler(o.Sampling, vocab);
        _history = new List<int>(promptIds);
        _decoder = tokenizer.CreateStreamDecoder(skipSpecialTokens: true);
        _stops = new StopMatcher(o.StopStrings);
    }

    /// <summary>The token to run next (valid after <see cref="Accept"/> returned true).</summary>
    public int NextToken { get; private set; }

    /// <summary>
    /// Samples a token from <paramref name="logits"/> (the sequence holds <paramref name="position"/> tokens) and streams
    /// its text. True: generation goes on with <see cref="NextToken"/>; false: it has ended.
    /// </summary>
    public bool Accept(ReadOnlySpan<float> logits, int position)
    {
        int next = _sampler.Sample(logits, _history);
        if ((_options.StopAtEos && _tokenizer.IsEndOfGeneration(next)) || _options.StopTokens.Contains(next)) { _finish = FinishReason.Stop; return false; }
        _generated.Add(next);
        _history.Add(next);
        if (_stops.Push(_decoder.Append(next), _text, _onText)) { _finish = FinishReason.Stop; return false; }
        if (_generated.Count >= _options.MaxTokens || position >= _context) return false;
        NextToken = next;
        return true;
    }

    /// <summary>Flushes the held-back text and returns the outcome.</summary>
    public GenerationResult Finish(TimeSpan prefill, TimeSpan decode)
    {
        if (!_stops.Matched) _stops.Push(_decoder.Flush(), _text, _onText);
        _stops.Finish(_text, _onText);
        return new GenerationResult(_text.ToString(), _generated, _promptTokens, _finish, prefill, decode);
    }
}

/// <summary>Holds back text that might begin a stop string; cuts the output at the first stop string.</summary>
internal sealed class StopMatcher(IReadOnlyList<string> stops)
{
    private readonly StringBuilder _pending = new();

    public bool Matched { get; private set; }

    /// <summary>Adds decoded text; returns true when a stop string completed (text before it is emitted).</summary>
    public bool Push(string piece, StringBuilder all, Action<string>? onText)
    {
        if (Matched || piece.Length == 0) return Matched;
        _pending.Append(piece);
        string p = _pending.ToString();
        int cut = -1;
        foreach (string s in stops)
        {
            if (s.Length == 0) continue;
            int i = p.IndexOf(s, StringComparison.Ordinal);
            if (i >= 0 && (cut < 0 || i < cut)) cut = i;
        }
        if (cut >= 0)
        {
            Emit(p[..cut], all, onText);
            _pending.Clear();
            Matched = true;
            return true;
        }
        // Keep the longest suffix that is a prefix of some stop string.
        int keep = 0;
        foreach (string s in stops)
            for (int n = Math.Min(s.Length - 1, p.Length); n > keep; n--)
                if (p.AsSpan(p.Length - n).SequenceEqual(s.AsSpan(0, n))) { keep = n; break; }
        Emit(p[..^keep], all, onText);
        _pending.Clear().Append(p, p.Length - keep, keep);
        return false;
    }

    public void Finish(StringBuilder all, Action<string>? onText)
    {
        if (!Matched) Emit(_pending.ToString(), all, onText);
        _pending.Clear();
    }

    private static void Emit(string s, StringBuilder all, Action<string>? onText)
    {
        if (s.Length == 0) return;
        all.Append(s);
        onText?.Invoke(s);
    }
}
