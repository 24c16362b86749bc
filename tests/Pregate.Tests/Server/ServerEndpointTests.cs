// The server end to end over loopback with the tiny synthetic model: the official OpenAI client and raw HTTP, chat and
// completions, JSON and streamed, compared with the same greedy generation run in process; every refusal in OpenAI's
// error shape with the server still answering afterwards; eight concurrent streams that do not mix.
using System.Net;
using System.Text.Json;
using OpenAI.Chat;
using Pregate.Engine;
using Xunit.Abstractions;
using TemplateMessage = Pregate.Engine.ChatTemplates.ChatMessage;

namespace Pregate.Tests.Server;

/// <summary>One server (4 sequence slots, queue 16) and one reference session for the whole class.</summary>
public sealed class TinyServerFixture : IAsyncLifetime
{
    internal TestServer Server { get; private set; } = null!;
    internal ModelSession Reference { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Server = await TestServer.StartAsync(ServerTestSupport.TinyModel, new Pregate.Server.ServerOptions { MaxConcurrent = 4, MaxQueued = 16 });
        Reference = ModelSession.Open(ServerTestSupport.TinyModel, new EngineOptions { Threads = 1 });
    }

    public async Task DisposeAsync()
    {
        await Server.DisposeAsync();
        Reference.Dispose();
    }
}

public sealed class ServerEndpointTests(TinyServerFixture fixture, ITestOutputHelper output) : IClassFixture<TinyServerFixture>
{
    private const int TestTimeoutMs = 180_000;
    private TestServer S => fixture.Server;

    private GenerationResult Reference(string user, int maxTokens, IReadOnlyList<string>? stops = null)
    {
        lock (fixture.Reference) return ServerTestSupport.ReferenceChat(fixture.Reference, [new TemplateMessage("user", user)], maxTokens, stops);
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task ModelsListsTheServedModel()
    {
        var (status, body) = await S.GetAsync("/v1/models");
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("list", body.GetProperty("object").GetString());
        var model = Assert.Single(body.GetProperty("data").EnumerateArray());
        Assert.Equal(S.Server.ModelId, model.GetProperty("id").GetString());
        Assert.Equal("model", model.GetProperty("object").GetString());
        Assert.Equal("tiny-f32-s1", S.Server.ModelId);

        var (one, card) = await S.GetAsync($"/v1/models/{S.Server.ModelId}");
        Assert.Equal(HttpStatusCode.OK, one);
        Assert.Equal(S.Server.ModelId, card.GetProperty("id").GetString());
        var (missing, error) = await S.GetAsync("/v1/models/gpt-4");
        Assert.Equal(HttpStatusCode.NotFound, missing);
        Assert.Equal("model_not_found", error.GetProperty("error").GetProperty("code").GetString());

        var (health, h) = await S.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, health);
        Assert.Equal("ok", h.GetProperty("status").GetString());
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task ChatWithTheOpenAiClientMatchesTheInProcessGeneration()
    {
        const string user = "Tell me a story about the sea.";
        var expected = Reference(user, 24);
        var chat = S.OpenAi().GetChatClient(S.Server.ModelId);
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 24 };

        ChatCompletion completion = await chat.CompleteChatAsync([new UserChatMessage(user)], options);
        output.WriteLine($"reply: {JsonSerializer.Serialize(completion.Content[0].Text)} ({completion.Usage.OutputTokenCount} tokens, {completion.FinishReason})");
        Assert.Equal(expected.Text, completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
        Assert.Equal(expected.PromptTokens, completion.Usage.InputTokenCount);
        Assert.Equal(expected.Tokens.Count, completion.Usage.OutputTokenCount);
        Assert.Equal(24, completion.Usage.OutputTokenCount);
        Assert.Equal(expected.PromptTokens + 24, completion.Usage.TotalTokenCount);
        Assert.Equal(S.Server.ModelId, completion.Model);

        var text = new System.Text.StringBuilder();
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        int updates = 0;
        await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage(user)], options))
        {
            foreach (var part in u.ContentUpdate) text.Append(part.Text);
            usage ??= u.Usage;
            finish ??= u.FinishReason;
            updates++;
        }
        output.WriteLine($"streamed in {updates} updates");
        Assert.Equal(expected.Text, text.ToString());
        Assert.Equal(ChatFinishReason.Length, finish);
        Assert.NotNull(usage);
        Assert.Equal(expected.Tokens.Count, usage.OutputTokenCount);
        Assert.Equal(expected.PromptTokens, usage.InputTokenCount);
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task AStopStringEndsTheReplyWithFinishReasonStop()
    {
        const string user = "Write about mountains.";
        var full = Reference(user, 32);
        // A two-character stop string from the middle of the greedy reply (no replacement characters).
        int at = Enumerable.Range(full.Text.Length / 3, full.Text.Length / 2)
            .First(i => i + 2 <= full.Text.Length && !full.Text.AsSpan(i, 2).Contains('\uFFFD') && !char.IsSurrogate(full.Text[i]) && !char.IsSurrogate(full.Text[i + 1]));
        string stop = full.Text.Substring(at, 2);
        string expected = full.Text[..full.Text.IndexOf(stop, StringComparison.Ordinal)];
        var cut = Reference(user, 32, [stop]);
        output.WriteLine($"reply {JsonSerializer.Serialize(full.Text)}, stop {JsonSerializer.Serialize(stop)} -> {JsonSerializer.Serialize(expected)}");
        Assert.Equal(expected, cut.Text);

        var chat = S.OpenAi().GetChatClient(S.Server.ModelId);
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 32 };
        options.StopSequences.Add(stop);
        ChatCompletion c = await chat.CompleteChatAsync([new UserChatMessage(user)], options);
        Assert.Equal(expected, c.Content.Count == 0 ? "" : c.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, c.FinishReason);
        Assert.Equal(cut.Tokens.Count, c.Usage.OutputTokenCount);

        // Raw HTTP, stop as a plain string and streamed.
        var (status, body) = await S.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody(user, 32, extra: $",\"stop\":{JsonSerializer.Serialize(stop)}"));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("stop", body.GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        var events = await S.StreamAsync("/v1/chat/completions", ServerTestSupport.ChatBody(user, 32, stream: true, extra: $",\"stop\":[{JsonSerializer.Serialize(stop)}]"));
        var (text, finish, usage, _) = TestServer.Collect(events);
        Assert.Equal(expected, text);
        Assert.Equal("stop", finish);
        Assert.Equal(cut.Tokens.Count, usage!.Value.GetProperty("completion_tokens").GetInt32());
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task CompletionsAnswerAsJsonAndAsAStream()
    {
        const string prompt = "Once upon a time";
        GenerationResult expected;
        lock (fixture.Reference) expected = ServerTestSupport.ReferenceCompletion(fixture.Reference, prompt, 20);
        string json = $$"""{"model":"{{S.Server.ModelId}}","prompt":"{{prompt}}","max_tokens":20,"temperature":0}""";

        var (status, body) = await S.PostAsync("/v1/completions", json);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        var choice = Assert.Single(body.GetProperty("choices").EnumerateArray());
        Assert.Equal(expected.Text, choice.GetProperty("text").GetString());
        Assert.Equal("length", choice.GetProperty("finish_reason").GetString());
        var usage = body.GetProperty("usage");
        Assert.Equal(expected.PromptTokens, usage.GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(20, usage.GetProperty("completion_tokens").GetInt32());
        Assert.Equal(expected.PromptTokens + 20, usage.GetProperty("total_tokens").GetInt32());

        var events = await S.StreamAsync("/v1/completions", json.Replace("}", ",\"stream\":true,\"stream_options\":{\"include_usage\":true}}"));
        var (text, finish, streamedUsage, pieces) = TestServer.Collect(events);
        output.WriteLine($"{pieces} text pieces for {expected.Tokens.Count} tokens");
        Assert.Equal(expected.Text, text);
        Assert.Equal("length", finish);
        Assert.Equal(20, streamedUsage!.Value.GetProperty("completion_tokens").GetInt32());
        Assert.All(events, e => Assert.Equal("text_completion", e.GetProperty("object").GetString()));
        Assert.Single(events.Select(e => e.GetProperty("id").GetString()).Distinct());

        // Token ids as the prompt give the same continuation.
        string ids = string.Join(',', fixture.Reference.Tokenizer.Encode(prompt, fixture.Reference.Tokenizer.AddBosToken));
        var (idStatus, idBody) = await S.PostAsync("/v1/completions", $$"""{"prompt":[{{ids}}],"max_tokens":20,"temperature":0}""");
        Assert.Equal(HttpStatusCode.OK, idStatus);
        Assert.Equal(expected.Text, idBody.GetProperty("choices")[0].GetProperty("text").GetString());
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task ChatStreamsStartWithTheRoleAndEndWithUsage()
    {
        var expected = Reference("Hi!", 12);
        var events = await S.StreamAsync("/v1/chat/completions", ServerTestSupport.ChatBody("Hi!", 12, stream: true));
        Assert.Equal("assistant", events[0].GetProperty("choices")[0].GetProperty("delta").GetProperty("role").GetString());
        Assert.All(events, e => Assert.Equal("chat.completion.chunk", e.GetProperty("object").GetString()));
        var last = events[^1];
        Assert.Empty(last.GetProperty("choices").EnumerateArray());
        Assert.Equal(expected.Tokens.Count, last.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        var (text, finish, _, _) = TestServer.Collect(events);
        Assert.Equal(expected.Text, text);
        Assert.Equal("length", finish);

        // Without include_usage no usage chunk is sent.
        var plain = await S.StreamAsync("/v1/chat/completions",
            """{"messages":[{"role":"user","content":"Hi!"}],"max_tokens":12,"temperature":0,"stream":true}""");
        Assert.DoesNotContain(plain, e => e.TryGetProperty("usage", out _));
        Assert.Equal(expected.Text, TestServer.Collect(plain).Text);
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task EveryBadRequestGetsAnOpenAiErrorAndTheServerStaysUp()
    {
        string longPrompt = string.Concat(Enumerable.Repeat("the quick brown fox jumps over the lazy dog ", 200));
        (string Name, string Path, string Body, HttpStatusCode Status, string Code)[] cases =
        [
            ("malformed JSON", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("not JSON at all", "/v1/chat/completions", "hello", HttpStatusCode.BadRequest, "invalid_request"),
            ("JSON null", "/v1/chat/completions", "null", HttpStatusCode.BadRequest, "invalid_request"),
            ("an array body", "/v1/chat/completions", "[]", HttpStatusCode.BadRequest, "invalid_request"),
            ("missing messages", "/v1/chat/completions", """{"max_tokens": 4}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("empty messages", "/v1/chat/completions", """{"messages": []}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("messages of the wrong type", "/v1/chat/completions", """{"messages": "hi"}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("a message without role", "/v1/chat/completions", """{"messages": [{"content": "hi"}]}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("an image part", "/v1/chat/completions", """{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("max_tokens as a string", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("max_tokens as a fraction", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("negative max_tokens", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": -5}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("zero max_completion_tokens", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("absurd max_tokens", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000000000}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("max_tokens beyond int", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 99999999999999}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("temperature as a string", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("temperature out of range", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "temperature": 7}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("top_p out of range", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "top_p": 0}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("stop of the wrong type", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "stop": 5}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("n = 2", "/v1/chat/completions", """{"messages": [{"role": "user", "content": "hi"}], "n": 2}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("a prompt longer than the context", "/v1/chat/completions", ServerTestSupport.ChatBody(longPrompt, 4), HttpStatusCode.BadRequest, "context_length_exceeded"),
            ("a completion prompt longer than the context", "/v1/completions", $$"""{"prompt": {{JsonSerializer.Serialize(longPrompt)}}}""", HttpStatusCode.BadRequest, "context_length_exceeded"),
            ("token ids outside the vocabulary", "/v1/completions", """{"prompt": [1, 2, 100000]}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("two prompts", "/v1/completions", """{"prompt": ["a", "b"]}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("missing prompt", "/v1/completions", """{"max_tokens": 3}""", HttpStatusCode.BadRequest, "invalid_request"),
            ("an unknown model", "/v1/chat/completions", """{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}""", HttpStatusCode.NotFound, "model_not_found"),
            ("an unknown model for completions", "/v1/completions", """{"model": "gpt-4o", "prompt": "hi"}""", HttpStatusCode.NotFound, "model_not_found"),
        ];
        foreach (var c in cases)
        {
            var (status, body) = await S.PostAsync(c.Path, c.Body);
            var error = body.GetProperty("error");
            output.WriteLine($"{c.Name}: {(int)status} {error.GetProperty("code").GetString()}: {error.GetProperty("message").GetString()}");
            Assert.Equal(c.Status, status);
            Assert.Equal(c.Code, error.GetProperty("code").GetString());
            Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
            Assert.Equal(JsonValueKind.String, error.GetProperty("type").ValueKind);

            // The server still answers, and a request without a model field is accepted.
            var (ok, reply) = await S.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("ok?", 2));
            Assert.Equal(HttpStatusCode.OK, ok);
            Assert.Equal(2, reply.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        }
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task TheOpenAiClientSeesAnUnknownModelAsNotFound()
    {
        var chat = S.OpenAi().GetChatClient("gpt-4o");
        var e = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(404, e.Status);
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task EightConcurrentStreamsEachMatchTheirSoloRun()
    {
        const int clients = 8, tokens = 40;
        string Prompt(int i) => $"Client number {i} asks about topic {i * 7 % 5}.";
        var solo = new (string Text, int Tokens)[clients];
        for (int i = 0; i < clients; i++)
        {
            var (text, finish, usage, _) = TestServer.Collect(await S.StreamAsync("/v1/chat/completions", ServerTestSupport.ChatBody(Prompt(i), tokens, stream: true)));
            var reference = Reference(Prompt(i), tokens);
            Assert.Equal(reference.Text, text);
            Assert.Equal("length", finish);
            solo[i] = (text, usage!.Value.GetProperty("completion_tokens").GetInt32());
            Assert.Equal(reference.Tokens.Count, solo[i].Tokens);
        }
        Assert.True(solo.Select(s => s.Text).Distinct().Count() > 1, "the prompts should give different replies");

        using var http = new HttpClient { BaseAddress = S.Address, Timeout = ServerTestSupport.RequestTimeout };
        var runs = Enumerable.Range(0, clients)
            .Select(i => Task.Run(() => S.StreamAsync("/v1/chat/completions", ServerTestSupport.ChatBody(Prompt(i), tokens, stream: true), http)))
            .ToArray();
        var results = await Task.WhenAll(runs);
        for (int i = 0; i < clients; i++)
        {
            var (text, finish, usage, pieces) = TestServer.Collect(results[i]);
            output.WriteLine($"client {i}: {pieces} pieces, {usage!.Value.GetProperty("completion_tokens").GetInt32()} tokens");
            Assert.Equal(solo[i].Text, text);
            Assert.Equal("length", finish);
            Assert.Equal(solo[i].Tokens, usage.Value.GetProperty("completion_tokens").GetInt32());
            Assert.Single(results[i].Select(e => e.GetProperty("id").GetString()).Distinct());
        }
        await S.WaitForHealthAsync((running, queued) => running == 0 && queued == 0, "idle");
    }
}
