// POST /v1/chat/completions and /v1/completions: waits for a sequence slot (429 when the queue is full), generates, and
// answers with one JSON body or a stream of server-sent events ("data: {chunk}" … "data: [DONE]") as OpenAI does.
// A client that goes away cancels its generation, which frees the slot.
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using System.Threading.Channels;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Pregate.Engine;

namespace Pregate.Server;

internal sealed class CompletionEndpoints(
    string modelId, RequestReader reader, GenerationScheduler scheduler, ServerMetrics metrics, CancellationToken stopping)
{
    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();
    private static readonly byte[] Done = "data: [DONE]\n\n"u8.ToArray();

    public async Task ChatAsync(HttpContext ctx)
    {
        long start = Stopwatch.GetTimestamp();
        var request = await RequestReader.ReadBodyAsync(ctx, ServerJson.Default.ChatCompletionRequest);
        await RunAsync(ctx, reader.Chat(request), new ChatShape(modelId), start);
    }

    public async Task CompletionAsync(HttpContext ctx)
    {
        long start = Stopwatch.GetTimestamp();
        var request = await RequestReader.ReadBodyAsync(ctx, ServerJson.Default.CompletionRequest);
        await RunAsync(ctx, reader.Completion(request), new TextShape(modelId), start);
    }

    private async Task RunAsync(HttpContext ctx, GenerationPlan plan, ResponseShape shape, long start)
    {
        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, stopping);
        GenerationLease lease;
        try
        {
            lease = await scheduler.AcquireAsync(cancel.Token);
        }
        catch (SchedulerFullException e)
        {
            throw ApiException.QueueFull(e.Message);
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested && !ctx.RequestAborted.IsCancellationRequested)
        {
            throw ShuttingDown();
        }
        using (lease)
        {
            int pieces = 0;
            void Observe() { if (pieces++ == 0) metrics.FirstToken(Stopwatch.GetElapsedTime(start)); }
            if (!plan.Stream)
            {
                GenerationResult r;
                try { r = await lease.GenerateAsync(plan.Prompt, plan.Options, _ => Observe(), cancel.Token); }
                catch (ArgumentException e) { throw ApiException.BadRequest(e.Message); }
                catch (OperationCanceledException) when (stopping.IsCancellationRequested && !ctx.RequestAborted.IsCancellationRequested)
                {
                    throw ShuttingDown();
                }
                metrics.GenerationFinished(r.PromptTokens, r.Tokens.Count);
                ctx.Response.ContentType = "application/json";
                await shape.WriteCompleteAsync(ctx.Response.Body, r, cancel.Token);
                return;
            }
            await StreamAsync(ctx, plan, shape, lease, Observe, cancel);
        }
    }

    private async Task StreamAsync(HttpContext ctx, GenerationPlan plan, ResponseShape shape, GenerationLease lease, Action observe,
        CancellationTokenSource cancel)
    {
        var pieces = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        var generation = lease.GenerateAsync(plan.Prompt, plan.Options, piece =>
        {
            observe();
            pieces.Writer.TryWrite(piece);
        }, cancel.Token);
        _ = generation.ContinueWith(_ => pieces.Writer.TryComplete(), CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

        var response = ctx.Response;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        ctx.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();
        try
        {
            if (shape.StartChunk() is { } opening) await WriteEventAsync(response, opening, cancel.Token);
            await foreach (string piece in pieces.Reader.ReadAllAsync(cancel.Token))
                await WriteEventAsync(response, shape.PieceChunk(piece), cancel.Token);
            GenerationResult r;
            try
            {
                r = await generation;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                var error = new ErrorResponse(new ErrorDetail($"Generation failed: {e.Message}", "server_error", null, "generation_failed"));
                await WriteEventAsync(response, JsonSerializer.SerializeToUtf8Bytes(error, ServerJson.Default.ErrorResponse), cancel.Token);
                await response.Body.WriteAsync(Done, cancel.Token);
                return;
            }
            metrics.GenerationFinished(r.PromptTokens, r.Tokens.Count);
            await WriteEventAsync(response, shape.FinishChunk(FinishReasonText(r.FinishReason)), cancel.Token);
            if (plan.IncludeUsage) await WriteEventAsync(response, shape.UsageChunk(UsageOf(r)), cancel.Token);
            await response.Body.WriteAsync(Done, cancel.Token);
            await response.Body.FlushAsync(cancel.Token);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // The client went away (or the server is stopping): stop generating; the lease frees the slot.
        }
        finally
        {
            if (!generation.IsCompleted) await cancel.CancelAsync();
            try { await generation; }
            catch (Exception e) when (e is OperationCanceledException or ArgumentException) { }
        }
    }

    private static async Task WriteEventAsync(HttpResponse response, byte[] json, CancellationToken cancel)
    {
        await response.Body.WriteAsync(DataPrefix, cancel);
        await response.Body.WriteAsync(json, cancel);
        await response.Body.WriteAsync(EventEnd, cancel);
        await response.Body.FlushAsync(cancel);
    }

    private static ApiException ShuttingDown() => new(503, "server_error", "shutting_down", "The server is shutting down.");

    internal static string FinishReasonText(FinishReason r) => r == FinishReason.Length ? "length" : "stop";

    internal static Usage UsageOf(GenerationResult r) => new(r.PromptTokens, r.Tokens.Count, r.PromptTokens + r.Tokens.Count);

    /// <summary>How one endpoint words its answer: a whole body, or the chunks of a stream.</summary>
    private abstract class ResponseShape(string prefix)
    {
        public string Id { get; } = prefix + Guid.NewGuid().ToString("N");
        public long Created { get; } = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

        public abstract Task WriteCompleteAsync(Stream body, GenerationResult r, CancellationToken cancel);
        public abstract byte[]? StartChunk();
        public abstract byte[] PieceChunk(string text);
        public abstract byte[] FinishChunk(string finishReason);
        public abstract byte[] UsageChunk(Usage usage);

        protected static byte[] Json<T>(T value, JsonTypeInfo<T> info) => JsonSerializer.SerializeToUtf8Bytes(value, info);
    }

    private sealed class ChatShape(string model) : ResponseShape("chatcmpl-")
    {
        private const string ChunkObject = "chat.completion.chunk";

        public override Task WriteCompleteAsync(Stream body, GenerationResult r, CancellationToken cancel) =>
            JsonSerializer.SerializeAsync(body, new ChatCompletionResponse(Id, "chat.completion", Created, model,
                [new ChatChoice(0, new AssistantMessage("assistant", r.Text), FinishReasonText(r.FinishReason))], UsageOf(r)),
                ServerJson.Default.ChatCompletionResponse, cancel);

        public override byte[] StartChunk() => Chunk(new ChatDelta("assistant", ""), null);
        public override byte[] PieceChunk(string text) => Chunk(new ChatDelta(null, text), null);
        public override byte[] FinishChunk(string finishReason) => Chunk(new ChatDelta(null, null), finishReason);

        public override byte[] UsageChunk(Usage usage) =>
            Json(new ChatCompletionChunk(Id, ChunkObject, Created, model, [], usage), ServerJson.Default.ChatCompletionChunk);

        private byte[] Chunk(ChatDelta delta, string? finish) =>
            Json(new ChatCompletionChunk(Id, ChunkObject, Created, model, [new ChatChunkChoice(0, delta, finish)], null),
                ServerJson.Default.ChatCompletionChunk);
    }

    private sealed class TextShape(string model) : ResponseShape("cmpl-")
    {
        private const string Object = "text_completion";

        public override Task WriteCompleteAsync(Stream body, GenerationResult r, CancellationToken cancel) =>
            JsonSerializer.SerializeAsync(body, new TextCompletionResponse(Id, Object, Created, model,
                [new TextChoice(0, r.Text, FinishReasonText(r.FinishReason))], UsageOf(r)),
                ServerJson.Default.TextCompletionResponse, cancel);

        public override byte[]? StartChunk() => null;
        public override byte[] PieceChunk(string text) => Chunk(text, null);
        public override byte[] FinishChunk(string finishReason) => Chunk("", finishReason);

        public override byte[] UsageChunk(Usage usage) =>
            Json(new TextCompletionResponse(Id, Object, Created, model, [], usage), ServerJson.Default.TextCompletionResponse);

        private byte[] Chunk(string text, string? finish) =>
            Json(new TextCompletionResponse(Id, Object, Created, model, [new TextChoice(0, text, finish)], null),
                ServerJson.Default.TextCompletionResponse);
    }
}
