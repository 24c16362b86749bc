// API tests of GET /v1/engine/events and the console's static files: event shapes, increasing token indices, events
// during a streamed reply, slow listeners that skip instead of stalling, no work without listeners, the API key.
using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Pregate.Server;
using Pregate.Tests.Server;
using Xunit.Abstractions;

namespace Pregate.Tests.WebConsole;

public sealed class EngineEventsTests(ITestOutputHelper output)
{
    private const int TestTimeoutMs = 180_000;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    [Fact(Timeout = TestTimeoutMs)]
    public async Task EventsDescribeEachTokenWhileAReplyStreams()
    {
        await using var s = await ConsoleTestSupport.StartAsync();
        var c = s.Session.Config;
        await using var events = await EventsReader.OpenAsync(s.Http, "?max_rate=120");
        var hello = await events.NextAsync(Wait);
        Assert.Equal("hello", hello.GetProperty("type").GetString());
        Assert.Equal(c.NumLayers, hello.GetProperty("layers").GetInt32());
        Assert.Equal(c.NumExperts, hello.GetProperty("experts").GetInt32());
        Assert.Equal(c.NumExpertsUsed, hello.GetProperty("top_k").GetInt32());
        Assert.True(hello.GetProperty("offloaded").GetBoolean());
        Assert.Equal(s.Session.ExpertPlacement.BudgetBytes, hello.GetProperty("budget_bytes").GetInt64());
        Assert.Equal(s.Server.ModelId, hello.GetProperty("model").GetString());

        // A long streamed reply: the first token event must arrive while the sequence is still generating.
        var chat = Task.Run(() => s.StreamAsync("/v1/chat/completions",
            ServerTestSupport.ChatBody("Tell me a long story.", 600, stream: true, extra: ",\"temperature\":1,\"seed\":7")));
        var first = await events.NextOfTypeAsync("token", Wait);
        int runningAtFirstEvent = s.Server.Scheduler.Running;
        var (text, finish, usage, _) = TestServer.Collect(await chat);
        output.WriteLine($"reply: {text.Length} chars, finish {finish}, {usage?.GetProperty("completion_tokens").GetInt32()} tokens; running at the first event: {runningAtFirstEvent}");
        Assert.Equal(1, runningAtFirstEvent);

        // The events of the last token arrive soon after the reply ends.
        var tokens = new List<JsonElement> { first };
        long lastEngineToken = s.Session.Events.Tokens - 1;
        while (tokens[^1].GetProperty("token").GetInt64() < lastEngineToken)
            tokens.Add(await events.NextOfTypeAsync("token", Wait));
        output.WriteLine($"{tokens.Count} token events for {lastEngineToken + 1} tokens; skipped {tokens[^1].GetProperty("skipped").GetInt64()}");

        long previousToken = -1, previousSkipped = 0, previousHits = 0, previousBytes = 0;
        foreach (var e in tokens)
        {
            long token = e.GetProperty("token").GetInt64(), skipped = e.GetProperty("skipped").GetInt64();
            Assert.True(token > previousToken, $"token {token} after {previousToken}");
            if (previousToken >= 0) Assert.Equal(token - previousToken - 1, skipped - previousSkipped);
            (previousToken, previousSkipped) = (token, skipped);

            var layers = e.GetProperty("layers");
            Assert.Equal(c.NumLayers, layers.GetArrayLength());
            for (int l = 0; l < c.NumLayers; l++)
            {
                var layer = layers[l];
                int[] chosen = layer.GetProperty("chosen").EnumerateArray().Select(v => v.GetInt32()).ToArray();
                float[] weights = layer.GetProperty("weights").EnumerateArray().Select(v => v.GetSingle()).ToArray();
                int[] missed = layer.GetProperty("missed").EnumerateArray().Select(v => v.GetInt32()).ToArray();
                string cells = layer.GetProperty("cells").GetString()!;
                Assert.Equal(c.NumExpertsUsed, chosen.Length);
                Assert.Equal(c.NumExpertsUsed, chosen.Distinct().Count());
                Assert.InRange(weights.Sum(), 0.999f, 1.001f);   // Mixtral renormalises its top k
                Assert.Equal(c.NumExperts, cells.Length);
                for (int x = 0; x < c.NumExperts; x++)
                {
                    int f = Convert.ToInt32(cells[x].ToString(), 16);
                    Assert.Equal(chosen.Contains(x), (f & 4) != 0);
                    Assert.Equal(missed.Contains(x), (f & 8) != 0);
                    if ((f & 8) != 0) Assert.True((f & 1) == 0 && (f & 4) != 0, $"layer {l} expert {x}: a miss must be chosen and not resident");
                }
                if (l == 0) Assert.DoesNotContain('2', cells.Replace("3", "").Replace("6", "").Replace("7", "")); // layer 0 has no prediction
            }
            var stats = e.GetProperty("stats");
            long hits = stats.GetProperty("hits").GetInt64(), bytes = stats.GetProperty("bytes_read").GetInt64();
            Assert.True(hits >= previousHits && bytes >= previousBytes, "the counters never decrease");
            (previousHits, previousBytes) = (hits, bytes);
            var memory = e.GetProperty("memory");
            Assert.InRange(memory.GetProperty("resident_experts").GetInt32(), 0, s.Session.ExpertPlacement.SlotCount);
            Assert.Equal(s.Session.ExpertPlacement.BudgetBytes, memory.GetProperty("budget_bytes").GetInt64());
        }
        var last = tokens[^1].GetProperty("stats");
        Assert.True(last.GetProperty("misses").GetInt64() > 0 && last.GetProperty("hits").GetInt64() > 0);
        Assert.True(last.GetProperty("prediction_checks").GetInt64() > 0, "next-gate predictions are checked while decoding");
        Assert.Contains(tokens, e => e.GetProperty("layers").EnumerateArray().Any(l => l.GetProperty("cells").GetString()!.Any(ch => (Convert.ToInt32(ch.ToString(), 16) & 2) != 0)));
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task NothingIsRecordedWhileNobodyListens()
    {
        await using var s = await ConsoleTestSupport.StartAsync();
        var (status, _) = await s.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("Hello there", 16));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(0, s.Session.Events.RecordsFilled);
        Assert.Null(s.Session.Model.Observer);

        await using (var events = await EventsReader.OpenAsync(s.Http))
        {
            await events.NextOfTypeAsync("hello", Wait);
            Assert.Equal(1, s.Session.Events.Listeners);
            Assert.NotNull(s.Session.Model.Observer);
            (status, _) = await s.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("Hello again", 16));
            Assert.Equal(HttpStatusCode.OK, status);
            await events.NextOfTypeAsync("token", Wait);
            Assert.True(s.Session.Events.RecordsFilled > 0);
        }
        // The server notices the closed stream, unsubscribes and detaches the observer.
        for (int i = 0; i < 200 && s.Session.Events.Listeners > 0; i++) await Task.Delay(50);
        Assert.Equal(0, s.Session.Events.Listeners);
        Assert.Null(s.Session.Model.Observer);
        long filled = s.Session.Events.RecordsFilled;
        (status, _) = await s.PostAsync("/v1/chat/completions", ServerTestSupport.ChatBody("And once more", 16));
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(filled, s.Session.Events.RecordsFilled);
        output.WriteLine($"records filled while listening: {filled}; after the listener left: {s.Session.Events.RecordsFilled}");
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task AListenerThatNeverReadsDoesNotStallGeneration()
    {
        await using var s = await ConsoleTestSupport.StartAsync();
        string body = ServerTestSupport.ChatBody("Write without end.", 400, extra: ",\"temperature\":1,\"seed\":11");
        var (status, _) = await s.PostAsync("/v1/chat/completions", body); // warm up
        Assert.Equal(HttpStatusCode.OK, status);
        var watch = Stopwatch.StartNew();
        (status, var baseline) = await s.PostAsync("/v1/chat/completions", body);
        var alone = watch.Elapsed;
        Assert.Equal(HttpStatusCode.OK, status);
        int generated = baseline.GetProperty("usage").GetProperty("completion_tokens").GetInt32();

        // One listener that never reads its stream (at the highest rate), one that does.
        using var stuckClient = new HttpClient { BaseAddress = s.Address, Timeout = ServerTestSupport.RequestTimeout };
        await using var stuck = await EventsReader.OpenAsync(stuckClient, $"?max_rate={EngineEventsEndpoint.MaxEventsPerSecond}", read: false);
        await using var reading = await EventsReader.OpenAsync(s.Http);
        await reading.NextOfTypeAsync("hello", Wait);
        for (int i = 0; i < 200 && s.Session.Events.Listeners < 2; i++) await Task.Delay(10);
        Assert.Equal(2, s.Session.Events.Listeners);

        watch.Restart();
        (status, var watched) = await s.PostAsync("/v1/chat/completions", body);
        var listened = watch.Elapsed;
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(baseline.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString(),
            watched.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        output.WriteLine($"{generated} tokens: {alone.TotalMilliseconds:F0} ms without listeners, {listened.TotalMilliseconds:F0} ms with a stuck and a reading one");
        // Tolerance: three times the time alone plus 2 s for a loaded machine; a stalled generation would hit the timeout.
        Assert.True(listened < alone * 3 + TimeSpan.FromSeconds(2), $"generation took {listened} with listeners, {alone} without");
        var readingTokens = reading.Drain().Where(e => e.GetProperty("type").GetString() == "token").ToList();
        Assert.NotEmpty(readingTokens);

        // The stuck listener, read at last, shows that it skipped tokens instead of holding them up.
        stuck.StartReading();
        Assert.Equal("hello", (await stuck.NextAsync(Wait)).GetProperty("type").GetString());
        long lastToken = s.Session.Events.Tokens - 1;
        var seen = new List<JsonElement>();
        while (seen.Count == 0 || seen[^1].GetProperty("token").GetInt64() < lastToken) seen.Add(await stuck.NextOfTypeAsync("token", Wait));
        long skipped = seen[^1].GetProperty("skipped").GetInt64();
        output.WriteLine($"stuck listener: {seen.Count} events for {lastToken + 1} tokens, {skipped} skipped");
        Assert.True(skipped > 0, "the stuck listener should have skipped tokens");
        // Every token between the first and the last event is either delivered or counted as skipped.
        long span = seen[^1].GetProperty("token").GetInt64() - seen[0].GetProperty("token").GetInt64();
        Assert.Equal(span - (seen.Count - 1), skipped - seen[0].GetProperty("skipped").GetInt64());
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task ThePageLoadsFreelyAndTheEventsNeedTheKey()
    {
        const string key = "console-secret";
        await using var s = await ConsoleTestSupport.StartAsync(new ServerOptions { ApiKey = key });
        using (var page = await s.Http.GetAsync("/"))
        {
            Assert.Equal(HttpStatusCode.OK, page.StatusCode);
            Assert.Equal("text/html", page.Content.Headers.ContentType?.MediaType);
            Assert.Contains("/console/console.js", await page.Content.ReadAsStringAsync());
            Assert.Contains("script-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single());
        }
        foreach (var (path, type) in new[] { ("/console/console.js", "text/javascript"), ("/console/console.css", "text/css") })
        {
            using var asset = await s.Http.GetAsync(path);
            Assert.Equal(HttpStatusCode.OK, asset.StatusCode);
            Assert.Equal(type, asset.Content.Headers.ContentType?.MediaType);
            Assert.True((await asset.Content.ReadAsByteArrayAsync()).Length > 1000);
        }
        using (var refused = await s.Http.GetAsync("/v1/engine/events", HttpCompletionOption.ResponseHeadersRead))
            Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
        using (var wrong = new HttpRequestMessage(HttpMethod.Get, "/v1/engine/events"))
        {
            wrong.Headers.Authorization = new("Bearer", "not-the-key");
            using var response = await s.Http.SendAsync(wrong, HttpCompletionOption.ResponseHeadersRead);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        }
        await using (var events = await EventsReader.OpenAsync(s.Http, key: key))
            Assert.Equal("hello", (await events.NextAsync(Wait)).GetProperty("type").GetString());

        using var bad = new HttpRequestMessage(HttpMethod.Get, "/v1/engine/events?max_rate=0");
        bad.Headers.Authorization = new("Bearer", key);
        using var badResponse = await s.Http.SendAsync(bad);
        Assert.Equal(HttpStatusCode.BadRequest, badResponse.StatusCode);
        Assert.Contains("max_rate", await badResponse.Content.ReadAsStringAsync());
    }
}
