// Shared pieces of the server tests: synthetic models (a tiny one, a slower one with a long context, copies with a chat
// template), a real server on a free loopback port, raw HTTP and server-sent-event helpers, and in-process reference runs.
using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net;
using System.Text;
using System.Text.Json;
using OpenAI;
using Pregate.Core;
using Pregate.Engine;
using Pregate.Formats;
using Pregate.Formats.Gguf;
using Pregate.Formats.Synth;
using Pregate.Server;
using Pregate.Tests.Models;
using TemplateMessage = Pregate.Engine.ChatTemplates.ChatMessage;

namespace Pregate.Tests.Server;

internal static class ServerTestSupport
{
    private static readonly object Gate = new();

    public static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(120);

    /// <summary>The tiny Mixtral-style GGUF (context 512, byte-level BPE vocabulary with &lt;|endoftext|&gt; as EOS).</summary>
    public static string TinyModel => ModelTestSupport.Synth("tiny", SynthShapes.Get("tiny"), DType.F32, gguf: true);

    /// <summary>A wider model with a 4096-token context: a full-length generation takes long enough to interrupt.</summary>
    public static string SlowModel => ModelTestSupport.Synth("server-slow", SynthShapes.Get("tiny") with
    {
        HiddenSize = 256, NumLayers = 8, NumHeads = 8, NumKvHeads = 2, HeadDim = 32, ExpertFfn = 512, MaxContext = 4096,
    }, DType.F32, gguf: true);

    /// <summary>A copy of <see cref="TinyModel"/> whose metadata holds tokenizer.chat_template = <paramref name="template"/>.</summary>
    public static unsafe string TinyModelWithTemplate(string name, string template)
    {
        string path = Path.Combine(Path.GetDirectoryName(TinyModel)!, $"tiny-template-{name}.gguf");
        lock (Gate)
        {
            if (File.Exists(path)) return path;
            using var source = GgufFile.Open(TinyModel);
            var w = new GgufWriter();
            foreach (string key in source.MetadataKeys) w.Set(key, source.Metadata[key]);
            w.Set("tokenizer.chat_template", GgufValue.FromString(template));
            foreach (var t in source.Tensors)
            {
                var view = t;
                w.AddTensor(new TensorData(view.Name, view.Type, view.Shape,
                    s => s.Write(new ReadOnlySpan<byte>((void*)view.Pointer, checked((int)view.ByteLength)))));
            }
            w.Write(path);
        }
        return path;
    }

    /// <summary>The greedy reply of the model at <paramref name="modelPath"/> to <paramref name="messages"/>, run in process.</summary>
    public static GenerationResult ReferenceChat(ModelSession session, IReadOnlyList<TemplateMessage> messages, int maxTokens,
        IReadOnlyList<string>? stops = null)
    {
        var format = ChatFormat.For(session);
        var options = format.WithStops(new GenerationOptions { MaxTokens = maxTokens, Sampling = SamplingOptions.Greedy, StopStrings = stops ?? [] });
        return session.CreateGenerator().Generate(format.Encode(messages), options);
    }

    public static GenerationResult ReferenceCompletion(ModelSession session, string prompt, int maxTokens, IReadOnlyList<string>? stops = null) =>
        session.CreateGenerator().Generate(prompt,
            new GenerationOptions { MaxTokens = maxTokens, Sampling = SamplingOptions.Greedy, StopStrings = stops ?? [] });

    public static string ChatBody(string user, int maxTokens, bool stream = false, string extra = "") =>
        $$"""{"messages":[{"role":"user","content":{{JsonSerializer.Serialize(user)}}}],"max_tokens":{{maxTokens}},"temperature":0,"stream":{{(stream ? "true" : "false")}}{{(stream ? ",\"stream_options\":{\"include_usage\":true}" : "")}}{{extra}}}""";
}

/// <summary>A server on a free loopback port over its own session of <see cref="ModelPath"/>.</summary>
internal sealed class TestServer : IAsyncDisposable
{
    private TestServer(string modelPath, ModelSession session, PregateServer server, StringWriter log)
    {
        ModelPath = modelPath;
        Session = session;
        Server = server;
        Log = log;
        Http = new HttpClient { BaseAddress = server.Address, Timeout = ServerTestSupport.RequestTimeout };
    }

    public string ModelPath { get; }
    public ModelSession Session { get; }
    public PregateServer Server { get; }
    public HttpClient Http { get; }
    public StringWriter Log { get; }
    public Uri Address => Server.Address!;

    public static async Task<TestServer> StartAsync(string modelPath, ServerOptions? options = null, EngineOptions? engine = null)
    {
        var session = ModelSession.Open(modelPath, engine ?? new EngineOptions { Threads = 1 });
        try
        {
            var log = new StringWriter();
            var server = PregateServer.Create(session, (options ?? new ServerOptions()) with { Host = "127.0.0.1", Port = 0 }, TextWriter.Synchronized(log));
            await server.StartAsync();
            return new TestServer(modelPath, session, server, log);
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    /// <summary>The official OpenAI client pointed at this server, without retries (a 429 must show as one).</summary>
    public OpenAIClient OpenAi(string apiKey = "no-key") => new(new ApiKeyCredential(apiKey), new OpenAIClientOptions
    {
        Endpoint = new Uri(Address, "v1"),
        NetworkTimeout = ServerTestSupport.RequestTimeout,
        RetryPolicy = new ClientRetryPolicy(maxRetries: 0),
    });

    public async Task<(HttpStatusCode Status, JsonElement Body)> PostAsync(string path, string json, HttpClient? client = null)
    {
        using var content = new StringContent(json, Encoding.UTF8, "application/json");
        using var response = await (client ?? Http).PostAsync(path, content);
        string text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, JsonDocument.Parse(text).RootElement.Clone());
    }

    public async Task<(HttpStatusCode Status, JsonElement Body)> GetAsync(string path)
    {
        using var response = await Http.GetAsync(path);
        return (response.StatusCode, JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone());
    }

    /// <summary>Posts a streaming request and reads every event up to "data: [DONE]" (which must come last).</summary>
    public async Task<List<JsonElement>> StreamAsync(string path, string json, HttpClient? client = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        using var response = await (client ?? Http).SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        var events = new List<JsonElement>();
        bool done = false;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.Length == 0) continue;
            Assert.StartsWith("data: ", line);
            Assert.False(done, "an event followed data: [DONE]");
            string data = line["data: ".Length..];
            if (data == "[DONE]") { done = true; continue; }
            events.Add(JsonDocument.Parse(data).RootElement.Clone());
        }
        Assert.True(done, "the stream ended without data: [DONE]");
        return events;
    }

    /// <summary>The text, finish reason and usage of a chat or completion stream.</summary>
    public static (string Text, string? Finish, JsonElement? Usage, int Pieces) Collect(List<JsonElement> events)
    {
        var text = new StringBuilder();
        string? finish = null;
        JsonElement? usage = null;
        int pieces = 0;
        foreach (var e in events)
        {
            if (e.TryGetProperty("usage", out var u) && u.ValueKind == JsonValueKind.Object) usage = u;
            foreach (var choice in e.GetProperty("choices").EnumerateArray())
            {
                string? piece = choice.TryGetProperty("delta", out var delta)
                    ? delta.TryGetProperty("content", out var c) ? c.GetString() : null
                    : choice.GetProperty("text").GetString();
                if (!string.IsNullOrEmpty(piece)) { text.Append(piece); pieces++; }
                if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String)
                {
                    Assert.Null(finish);
                    finish = choice.GetProperty("finish_reason").GetString();
                }
            }
        }
        return (text.ToString(), finish, usage, pieces);
    }

    /// <summary>Polls /health until <paramref name="ready"/> holds for its running and queued counts (bounded wait).</summary>
    public async Task WaitForHealthAsync(Func<int, int, bool> ready, string what)
    {
        for (int i = 0; i < 600; i++)
        {
            var (_, h) = await GetAsync("/health");
            if (ready(h.GetProperty("running").GetInt32(), h.GetProperty("queued").GetInt32())) return;
            await Task.Delay(50);
        }
        Assert.Fail($"the server did not reach '{what}' within 30 s");
    }

    public async Task<string> MetricsAsync() => await Http.GetStringAsync("/metrics");

    /// <summary>The value of one sample line of the Prometheus text (e.g. "pregate_completion_tokens_total").</summary>
    public static double Sample(string metrics, string series)
    {
        foreach (string line in metrics.Split('\n'))
            if (line.StartsWith(series + " ", StringComparison.Ordinal))
                return double.Parse(line[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
        throw new Xunit.Sdk.XunitException($"no sample '{series}' in the metrics:\n{metrics}");
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await Server.StopAsync();
        await Server.DisposeAsync();
        Session.Dispose();
    }
}
