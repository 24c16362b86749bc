// The server's continuous batching end to end: sixteen concurrent streaming clients (the official OpenAI client) decoded
// together each get exactly their solo reply and token count, with nothing of another's text; with two sequences running
// batched, a full queue answers 429 and a client that disconnects frees its slot for the one waiting.
using System.Net;
using System.Text;
using OpenAI.Chat;
using Pregate.Engine;
using Pregate.Server;
using Xunit.Abstractions;

namespace Pregate.Tests.Server;

public sealed class ServerBatchingTests(ITestOutputHelper output)
{
    private const int TestTimeoutMs = 240_000;

    [Fact(Timeout = TestTimeoutMs)]
    public async Task SixteenStreamingClientsDecodedTogetherEachGetTheirSoloReply()
    {
        const int clients = 16;
        await using var s = await TestServer.StartAsync(ServerTestSupport.TinyModel, new ServerOptions { MaxConcurrent = 8, MaxQueued = 8 },
            new EngineOptions { Threads = 2 });
        using var reference = ModelSession.Open(ServerTestSupport.TinyModel, new EngineOptions { Threads = 1 });
        string Prompt(int i) => $"Client {i} wants to hear about {(i % 3 == 0 ? "rivers" : i % 3 == 1 ? "stars" : "bread")} number {i * 13 % 7}.";
        int MaxTokens(int i) => 16 + i % 5 * 6;
        var expected = Enumerable.Range(0, clients)
            .Select(i => ServerTestSupport.ReferenceChat(reference, [new("user", Prompt(i))], MaxTokens(i))).ToArray();
        Assert.True(expected.Select(e => e.Text).Distinct().Count() > clients / 2, "the prompts should give different replies");

        var chat = s.OpenAi().GetChatClient(s.Server.ModelId);
        var runs = Enumerable.Range(0, clients).Select(i => Task.Run(async () =>
        {
            var text = new StringBuilder();
            ChatTokenUsage? usage = null;
            ChatFinishReason? finish = null;
            int updates = 0;
            var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = MaxTokens(i) };
            await foreach (var u in chat.CompleteChatStreamingAsync([new UserChatMessage(Prompt(i))], options))
            {
                foreach (var part in u.ContentUpdate) text.Append(part.Text);
                usage ??= u.Usage;
                finish ??= u.FinishReason;
                updates++;
            }
            return (Text: text.ToString(), Usage: usage, Finish: finish, Updates: updates);
        })).ToArray();
        var results = await Task.WhenAll(runs);

        for (int i = 0; i < clients; i++)
        {
            var r = results[i];
            output.WriteLine($"client {i}: {r.Updates} updates, {r.Usage?.OutputTokenCount} tokens, {r.Finish}");
            Assert.Equal(expected[i].Text, r.Text);
            Assert.NotNull(r.Usage);
            Assert.Equal(expected[i].Tokens.Count, r.Usage.OutputTokenCount);
            Assert.Equal(expected[i].PromptTokens, r.Usage.InputTokenCount);
            Assert.Equal(expected[i].FinishReason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop, r.Finish);
        }
        var scheduler = s.Server.Scheduler;
        double meanBatch = (double)scheduler.DecodedTokens / scheduler.DecodeSteps;
        output.WriteLine($"{scheduler.DecodeSteps} decode steps for {scheduler.DecodedTokens} tokens: mean batch {meanBatch:F2}");
        Assert.True(meanBatch > 2, "concurrent clients should have been decoded together");
        await s.WaitForHealthAsync((running, queued) => running == 0 && queued == 0, "idle");
        string metrics = await s.MetricsAsync();
        Assert.Equal(expected.Sum(e => e.Tokens.Count), TestServer.Sample(metrics, "pregate_completion_tokens_total"));
        Assert.Equal(scheduler.DecodeSteps, TestServer.Sample(metrics, "pregate_decode_steps_total"));
        Assert.Equal(scheduler.DecodedTokens, TestServer.Sample(metrics, "pregate_decode_step_tokens_total"));
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task WithTwoRunningAFullQueueGets429AndADisconnectFreesASlot()
    {
        await using var s = await TestServer.StartAsync(ServerTestSupport.SlowModel, new ServerOptions { MaxConcurrent = 2, MaxQueued = 1 });
        const int longReply = 3500;
        var (httpA, responseA, readerA) = await OpenStreamAsync(s, "Talk for a long time.", longReply);
        var (httpB, responseB, readerB) = await OpenStreamAsync(s, "Talk for even longer.", longReply);
        await s.WaitForHealthAsync((running, queued) => running == 2 && queued == 0, "two running");

        using var clientC = new HttpClient { BaseAddress = s.Address, Timeout = ServerTestSupport.RequestTimeout };
        var waiting = s.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("Queued.", 4), clientC);
        await s.WaitForHealthAsync((running, queued) => running == 2 && queued == 1, "two running, one queued");
        var (full, error) = await s.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("No room.", 3));
        output.WriteLine($"fourth request: {(int)full} {error}");
        Assert.Equal(HttpStatusCode.TooManyRequests, full);
        Assert.Equal("queue_full", error.GetProperty("error").GetProperty("code").GetString());

        // A goes away: C takes its slot and is decoded alongside B, which keeps streaming.
        readerA.Dispose();
        responseA.Dispose();
        httpA.Dispose();
        var (statusC, bodyC) = await waiting;
        Assert.Equal(HttpStatusCode.OK, statusC);
        Assert.Equal(4, bodyC.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        using (var reference = ModelSession.Open(ServerTestSupport.SlowModel, new EngineOptions { Threads = 1 }))
            Assert.Equal(ServerTestSupport.ReferenceChat(reference, [new("user", "Queued.")], 4).Text,
                bodyC.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        Assert.NotNull(await readerB.ReadLineAsync());

        readerB.Dispose();
        responseB.Dispose();
        httpB.Dispose();
        await s.WaitForHealthAsync((running, queued) => running == 0 && queued == 0, "idle");
        double completion = TestServer.Sample(await s.MetricsAsync(), "pregate_completion_tokens_total");
        output.WriteLine($"completion tokens counted: {completion}");
        // C's 4 tokens, plus 3500 for each long stream that ran to its end before it was dropped (a fast machine finishes
        // them); an abandoned stream counts nothing, never a part.
        Assert.Contains(completion, new double[] { 4, 4 + longReply, 4 + 2 * longReply });
    }

    // A streamed chat request on a connection of its own, read until its first two pieces of text have arrived.
    private static async Task<(HttpClient, HttpResponseMessage, StreamReader)> OpenStreamAsync(TestServer s, string user, int maxTokens)
    {
        var http = new HttpClient { BaseAddress = s.Address, Timeout = ServerTestSupport.RequestTimeout };
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(ServerTestSupport.ChatBody(user, maxTokens, stream: true), Encoding.UTF8, "application/json"),
        };
        var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        int contentEvents = 0;
        while (contentEvents < 2 && await reader.ReadLineAsync() is { } line)
            if (line.Contains("\"content\":\"", StringComparison.Ordinal) && !line.Contains("\"content\":\"\"", StringComparison.Ordinal)) contentEvents++;
        Assert.Equal(2, contentEvents);
        return (http, response, reader);
    }
}
