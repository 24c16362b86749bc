// PregateChatClient (Microsoft.Extensions.AI IChatClient) in process: replies equal the greedy generation, streaming
// equals the whole reply with usage last, ChatOptions reach the sampler and stops, concurrent calls do not mix, and an
// abandoned stream gives its slot back.
using Microsoft.Extensions.AI;
using Pregate.Engine;
using Pregate.Server;
using Xunit.Abstractions;
using TemplateMessage = Pregate.Engine.ChatTemplates.ChatMessage;

namespace Pregate.Tests.Server;

public sealed class ChatClientTests(ITestOutputHelper output) : IDisposable
{
    private const int TestTimeoutMs = 120_000;
    private readonly ModelSession _session = ModelSession.Open(ServerTestSupport.TinyModel, new EngineOptions { Threads = 1 });
    private readonly ModelSession _reference = ModelSession.Open(ServerTestSupport.TinyModel, new EngineOptions { Threads = 1 });

    public void Dispose()
    {
        _session.Dispose();
        _reference.Dispose();
    }

    private GenerationResult Reference(IReadOnlyList<TemplateMessage> messages, int maxTokens, IReadOnlyList<string>? stops = null)
    {
        lock (_reference) return ServerTestSupport.ReferenceChat(_reference, messages, maxTokens, stops);
    }

    private static ChatOptions Greedy(int maxTokens) => new() { Temperature = 0, MaxOutputTokens = maxTokens };

    [Fact(Timeout = TestTimeoutMs)]
    public async Task AResponseIsTheGreedyGenerationWithUsage()
    {
        using IChatClient client = new PregateChatClient(_session);
        var expected = Reference([new("system", "Be nice."), new("user", "Hello there")], 16);
        var r = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Hello there")], new ChatOptions { Temperature = 0, MaxOutputTokens = 16, Instructions = "Be nice." });
        output.WriteLine($"reply {System.Text.Json.JsonSerializer.Serialize(r.Text)}");
        Assert.Equal(expected.Text, r.Text);
        Assert.Equal(ChatRole.Assistant, Assert.Single(r.Messages).Role);
        Assert.Equal(ChatFinishReason.Length, r.FinishReason);
        Assert.Equal(expected.PromptTokens, r.Usage!.InputTokenCount);
        Assert.Equal(16, r.Usage.OutputTokenCount);
        Assert.Equal(expected.PromptTokens + 16, r.Usage.TotalTokenCount);
        Assert.Equal("tiny-f32-s1", r.ModelId);
        Assert.StartsWith("chatcmpl-", r.ResponseId);
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task StreamingGivesTheSameTextThenFinishReasonAndUsage()
    {
        using IChatClient client = new PregateChatClient(_session);
        var expected = Reference([new("user", "Stream please")], 20);
        var updates = new List<ChatResponseUpdate>();
        await foreach (var u in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "Stream please")], Greedy(20)))
            updates.Add(u);
        Assert.Equal(expected.Text, string.Concat(updates.Select(u => u.Text)));
        var last = updates[^1];
        Assert.Equal(ChatFinishReason.Length, last.FinishReason);
        var usage = Assert.IsType<UsageContent>(Assert.Single(last.Contents)).Details;
        Assert.Equal(expected.Tokens.Count, usage.OutputTokenCount);
        Assert.Equal(expected.PromptTokens, usage.InputTokenCount);
        Assert.All(updates[..^1], u => Assert.Null(u.FinishReason));
        Assert.Single(updates.Select(u => u.ResponseId).Distinct());

        // The updates fold back into one response, as Microsoft.Extensions.AI does it.
        var folded = updates.ToChatResponse();
        Assert.Equal(expected.Text, folded.Text);
        Assert.Equal(expected.Tokens.Count, folded.Usage!.OutputTokenCount);
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task ChatOptionsReachTheSamplerAndTheStops()
    {
        using IChatClient client = new PregateChatClient(_session);
        var full = Reference([new("user", "Options")], 24);
        string stop = full.Text.Substring(full.Text.Length / 2, 1);
        var cut = Reference([new("user", "Options")], 24, [stop]);
        var stopped = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Options")], new ChatOptions { Temperature = 0, MaxOutputTokens = 24, StopSequences = [stop] });
        Assert.Equal(cut.Text, stopped.Text);
        Assert.Equal(ChatFinishReason.Stop, stopped.FinishReason);

        // Sampling with a seed repeats itself; another seed (almost surely) does not.
        var sampled = new ChatOptions { Temperature = 1.5f, TopP = 1, TopK = 0, Seed = 7, MaxOutputTokens = 24, AdditionalProperties = new() { ["min_p"] = 0.0 } };
        string a = (await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Options")], sampled)).Text;
        string b = (await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Options")], sampled)).Text;
        sampled.Seed = 8;
        string c = (await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Options")], sampled)).Text;
        output.WriteLine($"seed 7: {System.Text.Json.JsonSerializer.Serialize(a)}; seed 8: {System.Text.Json.JsonSerializer.Serialize(c)}");
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);
        Assert.NotEqual(full.Text, a);

        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, "x")], new ChatOptions { Temperature = -1 }));
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([new ChatMessage(ChatRole.User, "x")], new ChatOptions { MaxOutputTokens = 0 }));
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([], null));
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task ConcurrentCallsMatchTheirSoloReplies()
    {
        using IChatClient client = new PregateChatClient(_session, new PregateChatClientOptions { MaxConcurrent = 3, MaxQueued = 8 });
        string[] prompts = Enumerable.Range(0, 6).Select(i => $"Question {i}: why {i}?").ToArray();
        var expected = prompts.Select(p => Reference([new("user", p)], 20).Text).ToArray();
        var replies = await Task.WhenAll(prompts.Select(p => Task.Run(async () =>
        {
            var text = new System.Text.StringBuilder();
            await foreach (var u in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, p)], Greedy(20))) text.Append(u.Text);
            return text.ToString();
        })));
        Assert.Equal(expected, replies);
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task AnAbandonedStreamGivesItsSlotBack()
    {
        var client = new PregateChatClient(_session, new PregateChatClientOptions { MaxConcurrent = 1, MaxQueued = 0 });
        var scheduler = Assert.IsType<GenerationScheduler>(client.GetService(typeof(GenerationScheduler)));
        int seen = 0;
        await foreach (var u in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "Go on and on")], Greedy(400)))
            if (++seen == 2) break;
        Assert.Equal(0, scheduler.Running);
        var r = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "Next")], Greedy(3));
        Assert.Equal(3, r.Usage!.OutputTokenCount);
    }

    [Fact]
    public void GetServiceGivesMetadataAndTheEngineParts()
    {
        using var client = new PregateChatClient(_session, new PregateChatClientOptions { ModelId = "my-model" });
        var metadata = Assert.IsType<ChatClientMetadata>(client.GetService(typeof(ChatClientMetadata)));
        Assert.Equal("pregate", metadata.ProviderName);
        Assert.Equal("my-model", metadata.DefaultModelId);
        Assert.Same(client, client.GetService(typeof(IChatClient)));
        Assert.Same(client, client.GetService(typeof(PregateChatClient)));
        Assert.Same(_session, client.GetService(typeof(ModelSession)));
        Assert.NotNull(client.GetService(typeof(ChatFormat)));
        Assert.Null(client.GetService(typeof(IChatClient), "some key"));
        Assert.Null(client.GetService(typeof(string)));
    }
}
