// Request and response bodies of the OpenAI API subset the server speaks (chat completions, legacy completions, models,
// errors), with a source-generated JSON context (no reflection, trim-safe). Reference: platform.openai.com/docs/api-reference.
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Pregate.Server;

/// <summary>Fields both completion endpoints share. Polymorphic fields (stop: string or array) stay raw JSON.</summary>
internal abstract class CompletionRequestBase
{
    public string? Model { get; set; }
    public int? MaxTokens { get; set; }
    public double? Temperature { get; set; }
    public double? TopP { get; set; }
    public long? Seed { get; set; }
    public JsonElement? Stop { get; set; }
    public int? N { get; set; }
    public bool? Stream { get; set; }
    public StreamOptions? StreamOptions { get; set; }

    // Extensions llama.cpp's server also accepts.
    public int? TopK { get; set; }
    public double? MinP { get; set; }
    public double? RepetitionPenalty { get; set; }
    /// <summary>Go on past the end-of-generation token (llama.cpp's and vLLM's ignore_eos): fixed-length runs for benchmarks.</summary>
    public bool? IgnoreEos { get; set; }
}

internal sealed class StreamOptions
{
    public bool? IncludeUsage { get; set; }
}

internal sealed class ChatCompletionRequest : CompletionRequestBase
{
    public List<ChatMessageBody?>? Messages { get; set; }
    public int? MaxCompletionTokens { get; set; }
}

/// <summary>content: a string, null, or an array of parts ({"type": "text", "text": ...}).</summary>
internal sealed class ChatMessageBody
{
    public string? Role { get; set; }
    public JsonElement? Content { get; set; }
}

/// <summary>prompt: a string, an array of one string, or an array of token ids.</summary>
internal sealed class CompletionRequest : CompletionRequestBase
{
    public JsonElement? Prompt { get; set; }
}

internal sealed record Usage(int PromptTokens, int CompletionTokens, int TotalTokens);

internal sealed record AssistantMessage(string Role, string Content);

internal sealed record ChatChoice(int Index, AssistantMessage Message, string FinishReason, string? Logprobs = null);

internal sealed record ChatCompletionResponse(
    string Id, string Object, long Created, string Model, IReadOnlyList<ChatChoice> Choices, Usage Usage, string? SystemFingerprint = null);

internal sealed record ChatDelta(
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Role,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Content);

internal sealed record ChatChunkChoice(int Index, ChatDelta Delta, string? FinishReason, string? Logprobs = null);

internal sealed record ChatCompletionChunk(
    string Id, string Object, long Created, string Model, IReadOnlyList<ChatChunkChoice> Choices,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] Usage? Usage, string? SystemFingerprint = null);

internal sealed record TextChoice(int Index, string Text, string? FinishReason, string? Logprobs = null);

/// <summary>A completion and, with stream = true, each chunk of one (same shape, "text_completion").</summary>
internal sealed record TextCompletionResponse(
    string Id, string Object, long Created, string Model, IReadOnlyList<TextChoice> Choices,
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] Usage? Usage);

internal sealed record ModelCard(string Id, string Object, long Created, string OwnedBy);

internal sealed record ModelList(string Object, IReadOnlyList<ModelCard> Data);

internal sealed record ErrorDetail(string Message, string Type, string? Param, string? Code);

internal sealed record ErrorResponse(ErrorDetail Error);

internal sealed record HealthResponse(string Status, string Model, int Running, int Queued);

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    MaxDepth = 64)]
[JsonSerializable(typeof(ChatCompletionRequest))]
[JsonSerializable(typeof(CompletionRequest))]
[JsonSerializable(typeof(ChatCompletionResponse))]
[JsonSerializable(typeof(ChatCompletionChunk))]
[JsonSerializable(typeof(TextCompletionResponse))]
[JsonSerializable(typeof(ModelCard))]
[JsonSerializable(typeof(ModelList))]
[JsonSerializable(typeof(ErrorResponse))]
[JsonSerializable(typeof(HealthResponse))]
internal sealed partial class ServerJson : JsonSerializerContext;
