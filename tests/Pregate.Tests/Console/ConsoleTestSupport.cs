// Shared pieces of the web console tests: a synthetic model wide enough for a readable expert grid, served with its
// experts offloaded, and a reader of /v1/engine/events that collects events in the background.
using System.Diagnostics;
using System.Text.Json;
using System.Threading.Channels;
using Pregate.Core;
using Pregate.Engine;
using Pregate.Formats.Synth;
using Pregate.Server;
using Pregate.Tests.Models;
using Pregate.Tests.Server;

namespace Pregate.Tests.WebConsole;

internal static class ConsoleTestSupport
{
    /// <summary>6 layers × 16 experts (top 2), a 4096-token context: long replies, and a grid with room for cache states.</summary>
    public static string GridModel => ModelTestSupport.Synth("console-grid", SynthShapes.Get("tiny") with
    {
        HiddenSize = 128, NumHeads = 8, NumKvHeads = 2, HeadDim = 16, NumLayers = 6, NumExperts = 16, ExpertFfn = 128, MaxContext = 4096,
    }, DType.F32, gguf: true);

    /// <summary>The engine options that offload <see cref="GridModel"/>'s experts to a cache of 40% of them, with next-gate prefetching.</summary>
    public static EngineOptions Offloaded => new()
    {
        Threads = 1, ExpertMemory = ExpertMemory.OfFraction(0.4), Predictor = Pregate.Experts.Prediction.PredictorKind.NextGate,
    };

    public static Task<TestServer> StartAsync(ServerOptions? options = null) => TestServer.StartAsync(GridModel, options, Offloaded);
}

/// <summary>Reads /v1/engine/events in the background; every "data:" payload lands in <see cref="Events"/> with its arrival time.</summary>
internal sealed class EventsReader : IAsyncDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly HttpResponseMessage _response;
    private Task _pump = Task.CompletedTask;
    private readonly Channel<(JsonElement Event, long At)> _events = Channel.CreateUnbounded<(JsonElement, long)>();

    private EventsReader(HttpResponseMessage response, bool read)
    {
        _response = response;
        if (read) StartReading();
    }

    public ChannelReader<(JsonElement Event, long At)> Events => _events.Reader;

    /// <summary>Opens the stream; when <paramref name="read"/> is false nothing reads it until <see cref="StartReading"/>.</summary>
    public static async Task<EventsReader> OpenAsync(HttpClient http, string query = "", bool read = true, string? key = null)
    {
        var request = new HttpRequestMessage(HttpMethod.Get, "/v1/engine/events" + query);
        if (key is not null) request.Headers.Authorization = new("Bearer", key);
        var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        return new EventsReader(response, read);
    }

    /// <summary>Starts reading a stream opened with read: false.</summary>
    public void StartReading() => _pump = Task.Run(PumpAsync);

    /// <summary>The next event, waiting at most <paramref name="timeout"/>.</summary>
    public async Task<JsonElement> NextAsync(TimeSpan timeout)
    {
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            return (await _events.Reader.ReadAsync(cancel.Token)).Event;
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"no engine event within {timeout.TotalSeconds} s");
        }
    }

    /// <summary>The next event of type <paramref name="type"/>, skipping others.</summary>
    public async Task<JsonElement> NextOfTypeAsync(string type, TimeSpan timeout)
    {
        var until = Stopwatch.GetTimestamp() + (long)(timeout.TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            var left = TimeSpan.FromSeconds(Math.Max(0.01, (double)(until - Stopwatch.GetTimestamp()) / Stopwatch.Frequency));
            var e = await NextAsync(left);
            if (e.GetProperty("type").GetString() == type) return e;
        }
    }

    /// <summary>Every event received so far.</summary>
    public List<JsonElement> Drain()
    {
        var list = new List<JsonElement>();
        while (_events.Reader.TryRead(out var e)) list.Add(e.Event);
        return list;
    }

    private async Task PumpAsync()
    {
        try
        {
            using var reader = new StreamReader(await _response.Content.ReadAsStreamAsync(_stop.Token));
            while (await reader.ReadLineAsync(_stop.Token) is { } line)
            {
                if (!line.StartsWith("data: ", StringComparison.Ordinal)) continue;
                _events.Writer.TryWrite((JsonDocument.Parse(line["data: ".Length..]).RootElement.Clone(), Stopwatch.GetTimestamp()));
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or HttpRequestException)
        {
        }
        finally
        {
            _events.Writer.TryComplete();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _response.Dispose();
        await _pump;
        _stop.Dispose();
    }
}
