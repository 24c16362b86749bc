// Turns OpenAI request bodies into what the engine runs: prompt tokens and generation options, checking every field
// (types, ranges, the model name, the context length) and refusing with an OpenAI-style 400/404 otherwise.
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using Microsoft.AspNetCore.Http;
using Pregate.Engine;
using Pregate.Engine.ChatTemplates;
using Pregate.Formats.Tokenizers;

namespace Pregate.Server;

/// <summary>A validated request: the prompt, how to generate, and how to answer.</summary>
internal sealed record GenerationPlan(IReadOnlyList<int> Prompt, GenerationOptions Options, bool Stream, bool IncludeUsage);

internal sealed class RequestReader(string modelId, TextTokenizer tokenizer, ChatFormat chat, int context, SamplingOptions defaults)
{
    private const int MaxStopStrings = 16;
    private const int MaxStopLength = 1024;
    private const int MaxMessages = 100_000;

    /// <summary>Reads the JSON body as <typeparamref name="T"/>; malformed or wrong-typed JSON is a 400.</summary>
    public static async Task<T> ReadBodyAsync<T>(HttpContext ctx, JsonTypeInfo<T> info) where T : class
    {
        try
        {
            return await JsonSerializer.DeserializeAsync(ctx.Request.Body, info, ctx.RequestAborted)
                ?? throw ApiException.BadRequest("The request body must be a JSON object, not null.");
        }
        catch (JsonException e)
        {
            string where = e.Path is { Length: > 0 } p && p != "$" ? $" at {p}" : "";
            throw ApiException.BadRequest($"The request body is not valid JSON for this endpoint{where}: {Describe(e)}", ParamOf(e.Path));
        }
        catch (BadHttpRequestException e)
        {
            throw new ApiException(e.StatusCode, "invalid_request_error", "bad_request", e.Message);
        }
    }

    public GenerationPlan Chat(ChatCompletionRequest r)
    {
        CheckCommon(r);
        if (r.Messages is null) throw ApiException.BadRequest("'messages' is required.", "messages");
        if (r.Messages.Count == 0) throw ApiException.BadRequest("'messages' must contain at least one message.", "messages");
        if (r.Messages.Count > MaxMessages) throw ApiException.BadRequest($"'messages' may hold at most {MaxMessages} messages.", "messages");
        var messages = new List<ChatMessage>(r.Messages.Count);
        for (int i = 0; i < r.Messages.Count; i++)
        {
            var m = r.Messages[i] ?? throw ApiException.BadRequest($"messages[{i}] must be an object.", $"messages[{i}]");
            if (string.IsNullOrEmpty(m.Role)) throw ApiException.BadRequest($"messages[{i}].role is required.", $"messages[{i}].role");
            messages.Add(new ChatMessage(m.Role, ContentText(m.Content, i)));
        }
        IReadOnlyList<int> prompt;
        try { prompt = chat.Encode(messages); }
        catch (ChatTemplateException e)
        {
            throw ApiException.BadRequest($"The chat template could not format these messages: {e.Message}", "messages");
        }
        int? max = r.MaxCompletionTokens ?? r.MaxTokens;
        string maxParam = r.MaxCompletionTokens is not null ? "max_completion_tokens" : "max_tokens";
        return Plan(r, prompt, max, maxParam, chat.WithStops);
    }

    public GenerationPlan Completion(CompletionRequest r)
    {
        CheckCommon(r);
        return Plan(r, PromptTokens(r.Prompt), r.MaxTokens, "max_tokens", o => o);
    }

    private void CheckCommon(CompletionRequestBase r)
    {
        if (!string.IsNullOrEmpty(r.Model) && r.Model != modelId) throw ApiException.ModelNotFound(r.Model, modelId);
        if (r.N is int n && n != 1) throw ApiException.BadRequest($"Only n = 1 is supported, not {n}.", "n");
    }

    private GenerationPlan Plan(CompletionRequestBase r, IReadOnlyList<int> prompt, int? maxTokens, string maxParam,
        Func<GenerationOptions, GenerationOptions> addStops)
    {
        if (maxTokens is int m && (m < 1 || m > context))
            throw ApiException.BadRequest($"'{maxParam}' must be between 1 and the context length of {context} tokens, not {m}.", maxParam);
        if (prompt.Count == 0) throw ApiException.BadRequest("The prompt is empty.", "prompt");
        if (prompt.Count >= context)
            throw ApiException.BadRequest(
                $"This model's context holds {context} tokens, but the prompt has {prompt.Count}; shorten the prompt.",
                r is ChatCompletionRequest ? "messages" : "prompt", "context_length_exceeded");

        var s = defaults with { Seed = r.Seed is long seed ? unchecked((ulong)seed) : unchecked((ulong)Random.Shared.NextInt64()) };
        if (r.Temperature is double t)
        {
            if (!(t >= 0 && t <= 2)) throw ApiException.BadRequest($"'temperature' must be between 0 and 2, not {t}.", "temperature");
            s = s with { Temperature = (float)t };
        }
        if (r.TopP is double p)
        {
            if (!(p > 0 && p <= 1)) throw ApiException.BadRequest($"'top_p' must be in (0, 1], not {p}.", "top_p");
            s = s with { TopP = (float)p };
        }
        if (r.TopK is int k)
        {
            if (k < 0) throw ApiException.BadRequest($"'top_k' must be ≥ 0 (0 = off), not {k}.", "top_k");
            s = s with { TopK = k };
        }
        if (r.MinP is double minP)
        {
            if (!(minP >= 0 && minP < 1)) throw ApiException.BadRequest($"'min_p' must be in [0, 1), not {minP}.", "min_p");
            s = s with { MinP = (float)minP };
        }
        if (r.RepetitionPenalty is double rp)
        {
            if (!(rp > 0 && rp <= 100)) throw ApiException.BadRequest($"'repetition_penalty' must be in (0, 100], not {rp}.", "repetition_penalty");
            s = s with { RepetitionPenalty = (float)rp };
        }
        var options = addStops(new GenerationOptions
        {
            MaxTokens = maxTokens ?? context,
            Sampling = s,
            StopStrings = StopStrings(r.Stop),
            StopAtEos = r.IgnoreEos != true,
        });
        return new GenerationPlan(prompt, options, r.Stream ?? false, r.StreamOptions?.IncludeUsage ?? false);
    }

    private static string ContentText(JsonElement? content, int index)
    {
        if (content is not { } c || c.ValueKind == JsonValueKind.Null) return "";
        if (c.ValueKind == JsonValueKind.String) return c.GetString()!;
        if (c.ValueKind != JsonValueKind.Array)
            throw ApiException.BadRequest($"messages[{index}].content must be a string or an array of text parts.", $"messages[{index}].content");
        var text = new StringBuilder();
        int j = 0;
        foreach (var part in c.EnumerateArray())
        {
            if (part.ValueKind != JsonValueKind.Object
                || !part.TryGetProperty("type", out var type) || type.ValueKind != JsonValueKind.String || type.GetString() != "text"
                || !part.TryGetProperty("text", out var t) || t.ValueKind != JsonValueKind.String)
                throw ApiException.BadRequest($"messages[{index}].content[{j}]: only parts of type \"text\" with a string \"text\" are supported.",
                    $"messages[{index}].content");
            text.Append(t.GetString());
            j++;
        }
        return text.ToString();
    }

    private IReadOnlyList<int> PromptTokens(JsonElement? prompt)
    {
        if (prompt is not { } p || p.ValueKind == JsonValueKind.Null) throw ApiException.BadRequest("'prompt' is required.", "prompt");
        if (p.ValueKind == JsonValueKind.String) return tokenizer.Encode(p.GetString()!, tokenizer.AddBosToken);
        if (p.ValueKind != JsonValueKind.Array)
            throw ApiException.BadRequest("'prompt' must be a string, an array of one string, or an array of token ids.", "prompt");
        int count = p.GetArrayLength();
        if (count == 0) throw ApiException.BadRequest("The prompt is empty.", "prompt");
        var first = p[0];
        if (first.ValueKind == JsonValueKind.String)
        {
            if (count > 1) throw ApiException.BadRequest("Only one prompt per request is supported.", "prompt");
            return tokenizer.Encode(first.GetString()!, tokenizer.AddBosToken);
        }
        if (count >= context)
            throw ApiException.BadRequest($"This model's context holds {context} tokens, but the prompt has {count}; shorten the prompt.",
                "prompt", "context_length_exceeded");
        var ids = new int[count];
        int i = 0;
        foreach (var e in p.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int id) || (uint)id >= (uint)tokenizer.VocabSize)
                throw ApiException.BadRequest($"prompt[{i}] must be a token id between 0 and {tokenizer.VocabSize - 1}.", "prompt");
            ids[i++] = id;
        }
        return ids;
    }

    private static IReadOnlyList<string> StopStrings(JsonElement? stop)
    {
        if (stop is not { } s || s.ValueKind == JsonValueKind.Null) return [];
        if (s.ValueKind == JsonValueKind.String) return [CheckStop(s.GetString()!)];
        if (s.ValueKind != JsonValueKind.Array) throw ApiException.BadRequest("'stop' must be a string or an array of strings.", "stop");
        if (s.GetArrayLength() > MaxStopStrings) throw ApiException.BadRequest($"'stop' may hold at most {MaxStopStrings} strings.", "stop");
        var list = new List<string>();
        foreach (var e in s.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.String) throw ApiException.BadRequest("'stop' must be a string or an array of strings.", "stop");
            list.Add(CheckStop(e.GetString()!));
        }
        return list;
    }

    private static string CheckStop(string s) =>
        s.Length <= MaxStopLength ? s : throw ApiException.BadRequest($"A stop string may be at most {MaxStopLength} characters long.", "stop");

    private static string Describe(JsonException e)
    {
        // "The JSON value could not be converted to System.Nullable`1[System.Int32]. Path: ..." names .NET types; say it plainly.
        if (e.Message.StartsWith("The JSON value could not be converted", StringComparison.Ordinal))
            return "the value has the wrong type (see the API reference for the field)";
        // Other messages end with "Path: $.x | LineNumber: 0 | BytePositionInLine: 5."; the path is reported separately.
        string m = e.Message;
        int cut = m.IndexOf(" Path: ", StringComparison.Ordinal);
        return cut > 0 ? m[..cut] : m;
    }

    private static string? ParamOf(string? path) =>
        path is { Length: > 2 } p && p.StartsWith("$.", StringComparison.Ordinal) ? p[2..] : null;
}
