// `pregate bench --serve-load`: the OpenAI-compatible server in process on a loopback port, loaded round by round by N
// concurrent streaming clients (raw HTTP, server-sent events), each generating a fixed number of tokens from its own prompt;
// reports per N the aggregate tokens/s, time to first token, inter-token latency, mean decode batch and expert bytes read.
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http;
using System.Text;
using System.Text.Json;
using Pregate.Engine;
using Pregate.Server;

namespace Pregate.Cli.Commands;

/// <summary>The serving-load benchmark: its options, and the run.</summary>
internal sealed class ServeLoadBench
{
    private static readonly string[] Topics =
    [
        "the history of bridges", "how bread rises", "a lighthouse keeper's week", "the rules of chess", "rivers in spring",
        "a letter to a friend abroad", "why the sky is blue", "a recipe for soup", "the migration of birds", "a city at night",
        "building a wooden boat", "the first day of school", "a storm at sea", "how clocks work", "a walk in the mountains",
        "the life of bees",
    ];

    private readonly Option<bool> _serveLoad = new("--serve-load")
    {
        Description = "benchmark the HTTP server instead: N concurrent streaming clients per round (see --clients), --gen-tokens each",
    };

    private readonly Option<string> _clients = new("--clients")
    {
        Description = "with --serve-load: comma-separated numbers of concurrent clients, one round each", DefaultValueFactory = _ => "1,4,16",
    };

    public void AddTo(Command c)
    {
        c.Options.Add(_serveLoad);
        c.Options.Add(_clients);
    }

    public bool Requested(ParseResult p) => p.GetValue(_serveLoad);

    /// <summary>Runs the rounds and prints the table (or JSON with <paramref name="json"/>); 0 on success.</summary>
    public int Run(ParseResult p, EngineOptionSet engine, Option<int> genTokens, Option<bool> json, TextWriter stdout, TextWriter stderr)
    {
        var counts = ParseClients(p.GetValue(_clients) ?? "");
        int tokens = p.GetValue(genTokens);
        if (tokens < 1) throw new UserException($"--gen-tokens must be at least 1, not {tokens}");
        using var session = engine.Open(p, stderr);
        int maxClients = counts.Max();
        string[] prompts = Enumerable.Range(0, maxClients).Select(Prompt).ToArray();
        int longest = prompts.Max(x => session.Tokenizer.Encode(x, session.Tokenizer.AddBosToken).Count);
        if (longest + tokens >= session.State.Context)
            throw new UserException($"{longest} prompt + {tokens} generated tokens exceed the context of {session.State.Context}; raise --ctx or lower --gen-tokens");
        stderr.WriteLine($"KV caches: {maxClients} sequences × {Units.Bytes(session.State.KvCacheBytes)} (lower --ctx to shrink)");
        var rounds = RunRoundsAsync(session, counts, prompts, tokens, stderr).GetAwaiter().GetResult();
        if (p.GetValue(json)) WriteJson(stdout, session, tokens, rounds);
        else WriteText(stdout, session, tokens, rounds);
        return 0;
    }

    private static int[] ParseClients(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var counts = new List<int>();
        foreach (string part in parts)
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int n) || n is < 1 or > 256)
                throw new UserException($"--clients takes numbers between 1 and 256 separated by commas, not '{text}'");
            counts.Add(n);
        }
        if (counts.Count == 0) throw new UserException("--clients needs at least one number, e.g. 1,4,16");
        return counts.ToArray();
    }

    private static string Prompt(int i) => $"Request {i + 1}: write a few paragraphs about {Topics[i % Topics.Length]}" +
        (i >= Topics.Length ? $" (variation {i / Topics.Length})." : ".");

    private sealed record Round(int Clients, long Tokens, double WallSeconds, double[] FirstTokenMs, double InterTokenMs,
        double MeanBatch, long ExpertBytesRead)
    {
        public double TokensPerSecond => Tokens / Math.Max(WallSeconds, 1e-9);
        public double ExpertBytesPerToken => Tokens == 0 ? 0 : (double)ExpertBytesRead / Tokens;
    }

    private readonly record struct ClientResult(double FirstTokenMs, double InterTokenMs, int Tokens);

    private static async Task<List<Round>> RunRoundsAsync(ModelSession session, int[] counts, string[] prompts, int tokens, TextWriter stderr)
    {
        int maxClients = counts.Max();
        var options = new ServerOptions { Host = "127.0.0.1", Port = 0, MaxConcurrent = maxClients, MaxQueued = maxClients };
        await using var server = PregateServer.Create(session, options, stderr);
        await server.StartAsync();
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = 2 * maxClients })
        {
            BaseAddress = server.Address, Timeout = Timeout.InfiniteTimeSpan,
        };
        await StreamAsync(http, prompts[0], Math.Min(tokens, 4));   // warm-up: JIT, page cache, connection
        var rounds = new List<Round>();
        foreach (int n in counts)
        {
            var scheduler = server.Scheduler;
            var expertsBefore = session.ExpertStats;
            long stepsBefore = scheduler.DecodeSteps, decodedBefore = scheduler.DecodedTokens;
            long start = Stopwatch.GetTimestamp();
            var results = await Task.WhenAll(Enumerable.Range(0, n).Select(i => Task.Run(() => StreamAsync(http, prompts[i], tokens))));
            double wall = Stopwatch.GetElapsedTime(start).TotalSeconds;
            var experts = session.ExpertStats - expertsBefore;
            long steps = scheduler.DecodeSteps - stepsBefore, decoded = scheduler.DecodedTokens - decodedBefore;
            var withGaps = results.Where(r => r.Tokens > 1).ToArray();
            var round = new Round(n, results.Sum(r => (long)r.Tokens), wall, results.Select(r => r.FirstTokenMs).Order().ToArray(),
                withGaps.Length == 0 ? 0 : withGaps.Average(r => r.InterTokenMs), steps == 0 ? 0 : (double)decoded / steps, experts.BytesRead);
            stderr.WriteLine(Invariant($"{n} client(s): {round.Tokens} tokens in {wall:0.00} s, {round.TokensPerSecond:0.0} tok/s"));
            rounds.Add(round);
        }
        await server.StopAsync();
        return rounds;
    }

    // One streamed completion: time to the first text event, mean gap per token after it, tokens generated (from usage).
    private static async Task<ClientResult> StreamAsync(HttpClient http, string prompt, int tokens)
    {
        string body = "{\"prompt\":" + JsonSerializer.Serialize(prompt) + ",\"max_tokens\":" + tokens.ToString(CultureInfo.InvariantCulture) +
            ",\"temperature\":0,\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true}}";
        long start = Stopwatch.GetTimestamp();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        if (!response.IsSuccessStatusCode)
            throw new UserException($"the server answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync()}");
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        long first = 0, last = 0;
        int generated = 0;
        while (await reader.ReadLineAsync() is { } line)
        {
            if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
            string data = line["data: ".Length..];
            if (data == "[DONE]") break;
            using var doc = JsonDocument.Parse(data);
            var root = doc.RootElement;
            if (root.TryGetProperty("error", out var error)) throw new UserException($"generation failed: {error}");
            if (root.TryGetProperty("usage", out var usage) && usage.ValueKind == JsonValueKind.Object)
                generated = usage.GetProperty("completion_tokens").GetInt32();
            foreach (var choice in root.GetProperty("choices").EnumerateArray())
                if (choice.GetProperty("text").GetString() is { Length: > 0 })
                {
                    last = Stopwatch.GetTimestamp();
                    if (first == 0) first = last;
                }
        }
        if (first == 0) first = last = Stopwatch.GetTimestamp();
        double firstMs = Stopwatch.GetElapsedTime(start, first).TotalMilliseconds;
        double gapMs = generated > 1 ? Stopwatch.GetElapsedTime(first, last).TotalMilliseconds / (generated - 1) : 0;
        return new ClientResult(firstMs, gapMs, generated);
    }

    // Nearest-rank percentile of ascending values.
    private static double Percentile(double[] sorted, double q) =>
        sorted.Length == 0 ? 0 : sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];

    private static void WriteText(TextWriter o, ModelSession session, int tokens, List<Round> rounds)
    {
        var c = session.Config;
        o.WriteLine($"model        {session.Checkpoint.Path} ({c.ModelType}, {c.NumLayers} layers, {c.NumExperts} experts top-{c.NumExpertsUsed})");
        o.WriteLine($"protocol     in-process server on loopback, {session.Team.ThreadCount} threads, streaming /v1/completions, {tokens} tokens per client (greedy, ignore_eos); TTFT and ITL on streamed text");
        o.WriteLine(session.DescribePlacement());
        o.WriteLine($"{"clients",7} {"tok/s",9} {"TTFT mean",10} {"p50",9} {"p95",9} {"ITL mean",9} {"batch",6} {"expert B/tok",13}");
        foreach (var r in rounds)
            o.WriteLine(Invariant($"{r.Clients,7} {r.TokensPerSecond,9:0.0} {r.FirstTokenMs.Average(),8:0.0}ms {Percentile(r.FirstTokenMs, 0.5),7:0.0}ms {Percentile(r.FirstTokenMs, 0.95),7:0.0}ms {r.InterTokenMs,7:0.00}ms {r.MeanBatch,6:0.00} {Units.Bytes((long)r.ExpertBytesPerToken),13}"));
    }

    private static void WriteJson(TextWriter o, ModelSession session, int tokens, List<Round> rounds)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("model", session.Checkpoint.Path);
            w.WriteString("architecture", session.Config.ModelType);
            w.WriteNumber("threads", session.Team.ThreadCount);
            w.WriteNumber("gen_tokens", tokens);
            w.WriteBoolean("experts_offloaded", session.ExpertPlacement.Offloaded);
            w.WriteString("experts", session.DescribePlacement());
            w.WriteStartArray("rounds");
            foreach (var r in rounds)
            {
                w.WriteStartObject();
                w.WriteNumber("clients", r.Clients);
                w.WriteNumber("tokens", r.Tokens);
                w.WriteNumber("wall_s", r.WallSeconds);
                w.WriteNumber("tok_s", r.TokensPerSecond);
                w.WriteNumber("ttft_mean_ms", r.FirstTokenMs.Average());
                w.WriteNumber("ttft_p50_ms", Percentile(r.FirstTokenMs, 0.5));
                w.WriteNumber("ttft_p95_ms", Percentile(r.FirstTokenMs, 0.95));
                w.WriteNumber("itl_mean_ms", r.InterTokenMs);
                w.WriteNumber("mean_batch", r.MeanBatch);
                w.WriteNumber("expert_bytes_read", r.ExpertBytesRead);
                w.WriteNumber("expert_bytes_per_token", r.ExpertBytesPerToken);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        o.WriteLine(Encoding.UTF8.GetString(ms.ToArray()));
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);
}
