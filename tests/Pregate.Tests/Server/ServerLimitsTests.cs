// Limits and housekeeping of the server: the bounded queue (429 when full), a client that disconnects mid-stream
// (its generation is cancelled and its slot comes back), API-key enforcement, /metrics and /health.
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using OpenAI.Chat;
using Pregate.Server;
using Xunit.Abstractions;

namespace Pregate.Tests.Server;

public sealed class ServerLimitsTests(ITestOutputHelper output)
{
    private const int TestTimeoutMs = 180_000;

    [Fact(Timeout = TestTimeoutMs)]
    public async Task AFullQueueGets429AndADisconnectedStreamFreesItsSlot()
    {
        await using var s = await TestServer.StartAsync(ServerTestSupport.SlowModel, new ServerOptions { MaxConcurrent = 1, MaxQueued = 1 });
        const int longReply = 3500;

        // A: a long streamed reply on its own connection; once its first text arrives it holds the only slot.
        var clientA = new HttpClient { BaseAddress = s.Address, Timeout = ServerTestSupport.RequestTimeout };
        var requestA = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent(ServerTestSupport.ChatBody("Talk for a long time.", longReply, stream: true), Encoding.UTF8, "application/json"),
        };
        var responseA = await clientA.SendAsync(requestA, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(HttpStatusCode.OK, responseA.StatusCode);
        var readerA = new StreamReader(await responseA.Content.ReadAsStreamAsync());
        int contentEvents = 0;
        while (contentEvents < 2 && await readerA.ReadLineAsync() is { } line)
            if (line.Contains("\"content\":\"", StringComparison.Ordinal) && !line.Contains("\"content\":\"\"", StringComparison.Ordinal)) contentEvents++;
        Assert.Equal(2, contentEvents);

        // B waits in the queue (its length is 1); C finds the queue full.
        using var clientB = new HttpClient { BaseAddress = s.Address, Timeout = ServerTestSupport.RequestTimeout };
        var waiting = s.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("Queued.", 3), clientB);
        await s.WaitForHealthAsync((running, queued) => running == 1 && queued == 1, "one running, one queued");
        var (full, error) = await s.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("No room.", 3));
        output.WriteLine($"third request: {(int)full} {error}");
        Assert.Equal(HttpStatusCode.TooManyRequests, full);
        Assert.Equal("queue_full", error.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal("rate_limit_error", error.GetProperty("error").GetProperty("type").GetString());

        // A goes away: its generation stops, B gets the slot and finishes.
        readerA.Dispose();
        responseA.Dispose();
        clientA.Dispose();
        var (statusB, bodyB) = await waiting;
        Assert.Equal(HttpStatusCode.OK, statusB);
        Assert.Equal(3, bodyB.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        await s.WaitForHealthAsync((running, queued) => running == 0 && queued == 0, "idle");

        // Only B's tokens were counted: A was cancelled long before its 3500 tokens.
        string metrics = await s.MetricsAsync();
        double completion = TestServer.Sample(metrics, "pregate_completion_tokens_total");
        output.WriteLine($"completion tokens counted: {completion}");
        Assert.Equal(3, completion);

        var (after, _) = await s.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("Room again?", 2));
        Assert.Equal(HttpStatusCode.OK, after);
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task ACancelledNonStreamingRequestStopsItsGeneration()
    {
        await using var s = await TestServer.StartAsync(ServerTestSupport.SlowModel, new ServerOptions { MaxConcurrent = 1, MaxQueued = 0 });
        using var client = new HttpClient { BaseAddress = s.Address, Timeout = ServerTestSupport.RequestTimeout };
        using var cancel = new CancellationTokenSource();
        var pending = client.PostAsync("/v1/chat/completions",
            new StringContent(ServerTestSupport.ChatBody("Talk for a long time.", 3500), Encoding.UTF8, "application/json"), cancel.Token);
        await s.WaitForHealthAsync((running, _) => running == 1, "one running");
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => pending);
        await s.WaitForHealthAsync((running, queued) => running == 0 && queued == 0, "idle");
        string metrics = await s.MetricsAsync();
        Assert.Equal(0, TestServer.Sample(metrics, "pregate_completion_tokens_total"));
        Assert.Equal(1, TestServer.Sample(metrics, "pregate_requests_total{endpoint=\"/v1/chat/completions\",status=\"499\"}"));
        var (ok, _) = await s.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("Short.", 2));
        Assert.Equal(HttpStatusCode.OK, ok);
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task StoppingTheServerEndsAnOpenStream()
    {
        var s = await TestServer.StartAsync(ServerTestSupport.SlowModel);
        try
        {
            using var client = new HttpClient { BaseAddress = s.Address, Timeout = ServerTestSupport.RequestTimeout };
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new StringContent(ServerTestSupport.ChatBody("Talk for a long time.", 3500, stream: true), Encoding.UTF8, "application/json"),
            };
            using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            Assert.StartsWith("data: ", await reader.ReadLineAsync());
            var clock = System.Diagnostics.Stopwatch.StartNew();
            await s.Server.StopAsync();
            output.WriteLine($"stopped in {clock.ElapsedMilliseconds} ms");
            // The stream ends (without [DONE]) instead of running for its 3500 tokens.
            string rest = "";
            try { rest = await reader.ReadToEndAsync(); }
            catch (HttpRequestException) { }
            catch (IOException) { }
            Assert.DoesNotContain("[DONE]", rest);
            Assert.Equal(0, s.Server.Scheduler.Running);
        }
        finally
        {
            await s.DisposeAsync();
        }
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task AnApiKeyIsRequiredOnV1Endpoints()
    {
        await using var s = await TestServer.StartAsync(ServerTestSupport.TinyModel, new ServerOptions { ApiKey = "sesame-42" });
        string body = ServerTestSupport.ChatBody("hi", 2);

        var (none, noneError) = await s.PostAsync("/v1/chat/completions", body);
        Assert.Equal(HttpStatusCode.Unauthorized, none);
        Assert.Equal("invalid_api_key", noneError.GetProperty("error").GetProperty("code").GetString());

        using var wrong = new HttpClient { BaseAddress = s.Address, Timeout = ServerTestSupport.RequestTimeout };
        wrong.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "sesame-43");
        var (bad, badError) = await s.PostAsync("/v1/chat/completions", body, wrong);
        Assert.Equal(HttpStatusCode.Unauthorized, bad);
        Assert.Equal("invalid_api_key", badError.GetProperty("error").GetProperty("code").GetString());
        using var models = await wrong.GetAsync("/v1/models");
        Assert.Equal(HttpStatusCode.Unauthorized, models.StatusCode);

        using var right = new HttpClient { BaseAddress = s.Address, Timeout = ServerTestSupport.RequestTimeout };
        right.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "sesame-42");
        var (ok, _) = await s.PostAsync("/v1/chat/completions", body, right);
        Assert.Equal(HttpStatusCode.OK, ok);

        var e = await Assert.ThrowsAsync<System.ClientModel.ClientResultException>(() =>
            s.OpenAi("not-it").GetChatClient(s.Server.ModelId).CompleteChatAsync([new UserChatMessage("hi")]));
        Assert.Equal(401, e.Status);
        ChatCompletion c = await s.OpenAi("sesame-42").GetChatClient(s.Server.ModelId)
            .CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { MaxOutputTokenCount = 2, Temperature = 0 });
        Assert.Equal(2, c.Usage.OutputTokenCount);

        // Health and metrics stay open for probes and scrapers.
        var (health, _) = await s.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, health);
        Assert.Contains("pregate_requests_total", await s.MetricsAsync());
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task MetricsCountRequestsTokensAndLatency()
    {
        await using var s = await TestServer.StartAsync(ServerTestSupport.TinyModel);
        double sessionValue = 41;
        s.Server.Metrics.AddGauge("pregate_test_session_value", "A value read from elsewhere at each scrape.", () => sessionValue);
        long counted = 0;
        s.Server.Metrics.AddCounter("pregate_test_events_total", "A running total read at each scrape.", () => counted);

        var (_, a) = await s.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("one", 5));
        var events = await s.StreamAsync("/v1/completions", """{"prompt":"two","max_tokens":7,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}""");
        var (_, _, usageB, _) = TestServer.Collect(events);
        await s.PostAsync("/v1/chat/completions", "{");
        await s.PostAsync("/v1/chat/completions", """{"model":"nope","messages":[{"role":"user","content":"x"}]}""");
        sessionValue = 42;
        counted = 9;

        string m = await s.MetricsAsync();
        output.WriteLine(m);
        int prompt = a.GetProperty("usage").GetProperty("prompt_tokens").GetInt32() + usageB!.Value.GetProperty("prompt_tokens").GetInt32();
        Assert.Equal(prompt, TestServer.Sample(m, "pregate_prompt_tokens_total"));
        Assert.Equal(12, TestServer.Sample(m, "pregate_completion_tokens_total"));
        Assert.Equal(2, TestServer.Sample(m, "pregate_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"}") +
                        TestServer.Sample(m, "pregate_requests_total{endpoint=\"/v1/completions\",status=\"200\"}"));
        Assert.Equal(1, TestServer.Sample(m, "pregate_requests_total{endpoint=\"/v1/chat/completions\",status=\"400\"}"));
        Assert.Equal(1, TestServer.Sample(m, "pregate_requests_total{endpoint=\"/v1/chat/completions\",status=\"404\"}"));
        Assert.Equal(3, TestServer.Sample(m, "pregate_request_duration_seconds_count{endpoint=\"/v1/chat/completions\"}"));
        Assert.Equal(2, TestServer.Sample(m, "pregate_time_to_first_token_seconds_count"));
        Assert.Equal(0, TestServer.Sample(m, "pregate_queue_depth"));
        Assert.Equal(0, TestServer.Sample(m, "pregate_running_sequences"));
        Assert.Equal(42, TestServer.Sample(m, "pregate_test_session_value"));
        Assert.Equal(9, TestServer.Sample(m, "pregate_test_events_total"));
        Assert.Contains("# TYPE pregate_request_duration_seconds histogram", m);
        Assert.DoesNotContain("pregate_expert_", m);   // resident experts have no cache to report on
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task OffloadedExpertsGiveTheSameRepliesAndReportTheirCache()
    {
        await using var s = await TestServer.StartAsync(ServerTestSupport.TinyModel, new ServerOptions { MaxConcurrent = 2 },
            new Pregate.Engine.EngineOptions { Threads = 1, ExpertMemory = Pregate.Engine.ExpertMemory.OfFraction(0.5) });
        Assert.True(s.Session.ExpertPlacement.Offloaded);
        using var resident = Pregate.Engine.ModelSession.Open(ServerTestSupport.TinyModel, new Pregate.Engine.EngineOptions { Threads = 1 });
        string[] prompts = ["First question?", "Second question!", "A third one."];
        var replies = await Task.WhenAll(prompts.Select(p => Task.Run(() => s.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody(p, 12)))));
        for (int i = 0; i < prompts.Length; i++)
        {
            var expected = ServerTestSupport.ReferenceChat(resident, [new("user", prompts[i])], 12);
            Assert.Equal(HttpStatusCode.OK, replies[i].Status);
            Assert.Equal(expected.Text, replies[i].Body.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        }
        string m = await s.MetricsAsync();
        double hits = TestServer.Sample(m, "pregate_expert_cache_hits_total"), misses = TestServer.Sample(m, "pregate_expert_cache_misses_total");
        output.WriteLine($"expert cache: {hits} hits, {misses} misses, {TestServer.Sample(m, "pregate_expert_read_bytes_total")} bytes read");
        // The metrics mirror the session's own counters (idle now, so they cannot move between the two reads).
        Assert.Equal(s.Session.ExpertStats.Tokens, TestServer.Sample(m, "pregate_expert_tokens_total"));
        Assert.Equal(s.Session.ExpertStats.Cache.Hits, hits);
        Assert.Equal(s.Session.ExpertStats.Cache.Misses, misses);
        Assert.True(misses > 0 && hits > 0);
        Assert.True(TestServer.Sample(m, "pregate_expert_read_bytes_total") > 0);
        Assert.Equal(s.Session.ExpertPlacement.BudgetBytes, TestServer.Sample(m, "pregate_expert_budget_bytes"));
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task TheServerBindsLoopbackByDefaultAndChecksItsOptions()
    {
        Assert.Equal("127.0.0.1", new ServerOptions().Host);
        await using var s = await TestServer.StartAsync(ServerTestSupport.TinyModel);
        Assert.Equal("127.0.0.1", s.Address.Host);
        Assert.NotEqual(0, s.Address.Port);

        Assert.Throws<ArgumentException>(() => new ServerOptions { Host = "example.org" }.Validate());
        Assert.Throws<ArgumentException>(() => new ServerOptions { Port = 70000 }.Validate());
        Assert.Throws<ArgumentException>(() => new ServerOptions { MaxConcurrent = 0 }.Validate());
        Assert.Throws<ArgumentException>(() => new ServerOptions { MaxQueued = -1 }.Validate());
        Assert.Throws<ArgumentException>(() => new ServerOptions { ApiKey = "" }.Validate());
    }
}
