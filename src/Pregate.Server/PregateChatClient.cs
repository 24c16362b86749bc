// Microsoft.Extensions.AI's IChatClient over an in-process model: messages go through the model's chat template,
// ChatOptions become sampling settings, and requests share the session through a GenerationScheduler.
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.AI;
using Pregate.Engine;
using TemplateMessage = Pregate.Engine.ChatTemplates.ChatMessage;

namespace Pregate.Server;

/// <summary>Defaults of a <see cref="PregateChatClient"/> for what <see cref="ChatOptions"/> leaves unset.</summary>
public sealed record PregateChatClientOptions
{
    /// <summary>The id reported as <see cref="ChatResponse.ModelId"/>; null = the model's file or folder name.</summary>
    public string? ModelId { get; init; }

    /// <summary>Sampling for unset options (the seed of a request without one is drawn at random).</summary>
    public SamplingOptions DefaultSampling { get; init; } = new();

    /// <summary>Tokens to generate when <see cref="ChatOptions.MaxOutputTokens"/> is unset; null = until the context is full.</summary>
    public int? DefaultMaxOutputTokens { get; init; }

    /// <summary>Sequences generating at once and requests waiting, when the client creates its own scheduler.</summary>
    public int MaxConcurrent { get; init; } = 1;
    public int MaxQueued { get; init; } = 16;
}

/// <summary>
/// An <see cref="IChatClient"/> that runs a Pregate model in this process. Thread-safe: concurrent calls wait for one of the
/// scheduler's sequence slots. ChatOptions used: Instructions (a system message first), Temperature, TopP, TopK, Seed,
/// MaxOutputTokens, StopSequences; AdditionalProperties "min_p" and "repetition_penalty" (numbers). Only text content is
/// passed to the model.
/// </summary>
public sealed class PregateChatClient : IChatClient
{
    private readonly GenerationScheduler _scheduler;
    private readonly ChatFormat _format;
    private readonly PregateChatClientOptions _options;
    private readonly ChatClientMetadata _metadata;

    /// <summary>A client with a scheduler of its own over <paramref name="session"/> (which must not be used elsewhere meanwhile).</summary>
    /// <exception cref="Core.ModelFormatException">The model's tokenizer or chat template entry is malformed.</exception>
    public PregateChatClient(ModelSession session, PregateChatClientOptions? options = null)
        : this(new GenerationScheduler(session, (options ?? new()).MaxConcurrent, (options ?? new()).MaxQueued), null, options)
    {
    }

    /// <summary>A client sharing <paramref name="scheduler"/> (e.g. with a <see cref="PregateServer"/>); <paramref name="format"/>
    /// null = the model's own chat format.</summary>
    public PregateChatClient(GenerationScheduler scheduler, ChatFormat? format, PregateChatClientOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(scheduler);
        _scheduler = scheduler;
        _options = options ?? new PregateChatClientOptions();
        _options.DefaultSampling.Validate();
        if (_options.DefaultMaxOutputTokens is < 1) throw new ArgumentException($"DefaultMaxOutputTokens must be at least 1, not {_options.DefaultMaxOutputTokens}");
        _format = format ?? ChatFormat.For(scheduler.Session);
        ModelId = _options.ModelId ?? PregateServer.DefaultModelId(scheduler.Session.Checkpoint.Path);
        _metadata = new ChatClientMetadata("pregate", null, ModelId);
    }

    public string ModelId { get; }

    /// <inheritdoc/>
    /// <exception cref="ArgumentException">Invalid options, or a prompt that does not fit the context.</exception>
    /// <exception cref="SchedulerFullException">Every slot is busy and the queue is full.</exception>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var (prompt, generation) = Prepare(messages, options);
        using var lease = await _scheduler.AcquireAsync(cancellationToken).ConfigureAwait(false);
        var r = await lease.GenerateAsync(prompt, generation, null, cancellationToken).ConfigureAwait(false);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, r.Text))
        {
            ResponseId = NewId(),
            ModelId = ModelId,
            CreatedAt = DateTimeOffset.UtcNow,
            FinishReason = FinishReasonOf(r),
            Usage = UsageOf(r),
        };
    }

    /// <inheritdoc/>
    /// <remarks>One update per piece of text as it is generated, then one with the finish reason and a <see cref="UsageContent"/>.</remarks>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (prompt, generation) = Prepare(messages, options);
        string id = NewId();
        var created = DateTimeOffset.UtcNow;
        using var lease = await _scheduler.AcquireAsync(cancellationToken).ConfigureAwait(false);
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var pieces = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var task = lease.GenerateAsync(prompt, generation, piece => pieces.Writer.TryWrite(piece), cancel.Token);
        _ = task.ContinueWith(_ => pieces.Writer.TryComplete(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        try
        {
            await foreach (string piece in pieces.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
                yield return new ChatResponseUpdate(ChatRole.Assistant, piece) { ResponseId = id, MessageId = id, ModelId = ModelId, CreatedAt = created };
            var r = await task.ConfigureAwait(false);
            yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(UsageOf(r))])
            {
                ResponseId = id, MessageId = id, ModelId = ModelId, CreatedAt = created, FinishReason = FinishReasonOf(r),
            };
        }
        finally
        {
            // The consumer stopped early or failed: stop the generation before the slot is given back.
            if (!task.IsCompleted) await cancel.CancelAsync().ConfigureAwait(false);
            await task.ContinueWith(_ => { }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default)
                .ConfigureAwait(false);
        }
    }

    /// <inheritdoc/>
    /// <remarks>Gives <see cref="ChatClientMetadata"/>, this client, its <see cref="GenerationScheduler"/>, <see cref="ModelSession"/> and <see cref="ChatFormat"/>.</remarks>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return _metadata;
        if (serviceType.IsInstanceOfType(this)) return this;
        if (serviceType == typeof(GenerationScheduler)) return _scheduler;
        if (serviceType == typeof(ModelSession)) return _scheduler.Session;
        if (serviceType == typeof(ChatFormat)) return _format;
        return null;
    }

    /// <summary>Nothing to release: the session belongs to the caller.</summary>
    public void Dispose() { }

    private (IReadOnlyList<int> Prompt, GenerationOptions Options) Prepare(IEnumerable<ChatMessage> messages, ChatOptions? o)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var list = new List<TemplateMessage>();
        if (o?.Instructions is { Length: > 0 } instructions) list.Add(new TemplateMessage("system", instructions));
        foreach (var m in messages) list.Add(new TemplateMessage(m.Role.Value, m.Text));
        if (list.Count == 0) throw new ArgumentException("no messages given", nameof(messages));

        var s = _options.DefaultSampling with { Seed = o?.Seed is long seed ? unchecked((ulong)seed) : unchecked((ulong)Random.Shared.NextInt64()) };
        if (o?.Temperature is float t) s = s with { Temperature = t };
        if (o?.TopP is float p) s = s with { TopP = p };
        if (o?.TopK is int k) s = s with { TopK = k };
        if (Number(o, "min_p") is double minP) s = s with { MinP = (float)minP };
        if (Number(o, "repetition_penalty") is double rp) s = s with { RepetitionPenalty = (float)rp };
        s.Validate();
        if (o?.MaxOutputTokens is < 1) throw new ArgumentException($"MaxOutputTokens must be at least 1, not {o.MaxOutputTokens}");
        var generation = _format.WithStops(new GenerationOptions
        {
            MaxTokens = o?.MaxOutputTokens ?? _options.DefaultMaxOutputTokens ?? _scheduler.Session.State.Context,
            Sampling = s,
            StopStrings = o?.StopSequences is { } stops ? [.. stops] : [],
        });
        return (_format.Encode(list), generation);
    }

    private static double? Number(ChatOptions? o, string key) =>
        o?.AdditionalProperties?.TryGetValue(key, out object? v) == true
            ? v switch
            {
                double d => d,
                float f => f,
                int i => i,
                long l => l,
                decimal m => (double)m,
                _ => throw new ArgumentException($"ChatOptions.AdditionalProperties[\"{key}\"] must be a number"),
            }
            : null;

    private static string NewId() => "chatcmpl-" + Guid.NewGuid().ToString("N");

    private static ChatFinishReason FinishReasonOf(GenerationResult r) =>
        r.FinishReason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

    private static UsageDetails UsageOf(GenerationResult r) => new()
    {
        InputTokenCount = r.PromptTokens,
        OutputTokenCount = r.Tokens.Count,
        TotalTokenCount = r.PromptTokens + r.Tokens.Count,
    };
}
