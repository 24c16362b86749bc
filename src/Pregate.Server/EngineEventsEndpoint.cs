// GET /v1/engine/events: the engine's per-token events as server-sent events, one JSON object per "data:" line, for the
// web console's expert view. At most max_rate events a second per listener (the latest token wins); never slows generation.
using System.Buffers;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Pregate.Engine;

namespace Pregate.Server;

/// <summary>
/// Streams <see cref="EngineEvents"/> to one HTTP listener: first a "hello" event describing the model and the expert
/// cache, then a "token" event per token read (each a snapshot of the newest token; the ones in between count as
/// "skipped"), and a comment line every 15 s while idle so dead connections are noticed.
/// </summary>
internal sealed class EngineEventsEndpoint(ModelSession session, string modelId, CancellationToken stopping)
{
    public const int DefaultEventsPerSecond = 30;
    public const int MaxEventsPerSecond = 120;

    private static readonly byte[] DataPrefix = "data: "u8.ToArray();
    private static readonly byte[] EventEnd = "\n\n"u8.ToArray();
    private static readonly byte[] Ping = ": ping\n\n"u8.ToArray();
    private static readonly TimeSpan Heartbeat = TimeSpan.FromSeconds(15);

    private readonly long _started = Stopwatch.GetTimestamp();

    public async Task StreamAsync(HttpContext ctx)
    {
        int rate = DefaultEventsPerSecond;
        if (ctx.Request.Query["max_rate"] is { Count: > 0 } given
            && (!int.TryParse(given[0], NumberStyles.None, CultureInfo.InvariantCulture, out rate) || rate < 1 || rate > MaxEventsPerSecond))
            throw ApiException.BadRequest($"max_rate must be a whole number of events per second between 1 and {MaxEventsPerSecond}, not '{given[0]}'");

        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, stopping);
        var response = ctx.Response;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        ctx.Features.Get<IHttpResponseBodyFeature>()?.DisableBuffering();

        var events = session.Events;
        var placement = session.ExpertPlacement;
        var buffer = new ArrayBufferWriter<byte>(4096);
        using var json = new Utf8JsonWriter(buffer);
        using var listener = events.Subscribe();
        var record = events.NewRecord();
        long interval = Stopwatch.Frequency / rate, lastSent = 0, processBytes = 0, processReadAt = 0;
        try
        {
            WriteHello(json, events, placement, rate);
            await SendAsync(response, buffer, json, cancel.Token);
            while (true)
            {
                using (var beat = CancellationTokenSource.CreateLinkedTokenSource(cancel.Token))
                {
                    beat.CancelAfter(Heartbeat);
                    try
                    {
                        await listener.WaitAsync(beat.Token);
                    }
                    catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
                    {
                        await response.Body.WriteAsync(Ping, cancel.Token);
                        await response.Body.FlushAsync(cancel.Token);
                        continue;
                    }
                }
                long early = lastSent + interval - Stopwatch.GetTimestamp();
                if (lastSent != 0 && early > 0) await Task.Delay(TimeSpan.FromSeconds((double)early / Stopwatch.Frequency), cancel.Token);
                if (!listener.TryRead(record)) continue;
                lastSent = Stopwatch.GetTimestamp();
                if (lastSent - processReadAt > Stopwatch.Frequency / 2)
                {
                    processBytes = ProcessMemory.ResidentBytes() ?? 0;
                    processReadAt = lastSent;
                }
                WriteToken(json, record, listener.Skipped, placement, events.CountResidentExperts(), processBytes);
                await SendAsync(response, buffer, json, cancel.Token);
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
            // The listener went away or the server is stopping; disposing the listener unsubscribes it.
        }
    }

    private static async Task SendAsync(HttpResponse response, ArrayBufferWriter<byte> buffer, Utf8JsonWriter json, CancellationToken cancel)
    {
        await json.FlushAsync(cancel);
        await response.Body.WriteAsync(DataPrefix, cancel);
        await response.Body.WriteAsync(buffer.WrittenMemory, cancel);
        await response.Body.WriteAsync(EventEnd, cancel);
        await response.Body.FlushAsync(cancel);
        buffer.ResetWrittenCount();
        json.Reset();
    }

    private void WriteHello(Utf8JsonWriter w, EngineEvents events, ExpertPlacement placement, int rate)
    {
        w.WriteStartObject();
        w.WriteString("type", "hello");
        w.WriteString("model", modelId);
        w.WriteNumber("layers", events.Layers);
        w.WriteNumber("experts", events.Experts);
        w.WriteNumber("top_k", events.TopK);
        w.WriteBoolean("offloaded", placement.Offloaded);
        w.WriteNumber("budget_bytes", placement.BudgetBytes);
        w.WriteNumber("slot_count", placement.SlotCount);
        w.WriteNumber("slot_bytes", placement.SlotBytes);
        w.WriteNumber("expert_bytes", placement.ExpertBytes);
        w.WriteString("predictor", placement.Predictor);
        w.WriteString("placement", placement.Describe());
        w.WriteNumber("max_rate", rate);
        w.WriteNumber("time_ms", Stopwatch.GetElapsedTime(_started).TotalMilliseconds);
        w.WriteEndObject();
    }

    // cells: one hex digit per expert, the ExpertCellFlags (1 resident, 2 predicted, 4 chosen, 8 missed).
    private void WriteToken(Utf8JsonWriter w, EngineEventRecord r, long skipped, ExpertPlacement placement, int residentExperts, long processBytes)
    {
        int e = r.Experts, k = r.TopK;
        w.WriteStartObject();
        w.WriteString("type", "token");
        w.WriteNumber("token", r.Token);
        w.WriteNumber("position", r.Position);
        w.WriteNumber("time_ms", Math.Round(Stopwatch.GetElapsedTime(_started, r.Timestamp).TotalMilliseconds, 3));
        w.WriteNumber("skipped", skipped);
        w.WriteStartArray("layers");
        Span<char> cells = e <= 512 ? stackalloc char[e] : new char[e];
        for (int l = 0; l < r.Layers; l++)
        {
            w.WriteStartObject();
            w.WriteStartArray("chosen");
            for (int j = 0; j < k; j++) w.WriteNumberValue(r.ChosenIds[l * k + j]);
            w.WriteEndArray();
            w.WriteStartArray("weights");
            for (int j = 0; j < k; j++) w.WriteNumberValue(MathF.Round(r.ChosenWeights[l * k + j], 4));
            w.WriteEndArray();
            var row = r.Cells.AsSpan(l * e, e);
            w.WriteStartArray("missed");
            for (int x = 0; x < e; x++)
                if ((row[x] & ExpertCellFlags.Missed) != 0) w.WriteNumberValue(x);
            w.WriteEndArray();
            for (int x = 0; x < e; x++) cells[x] = "0123456789abcdef"[(int)row[x] & 0xf];
            w.WriteString("cells", cells);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        var s = r.Stats;
        w.WriteStartObject("stats");
        w.WriteNumber("tokens", s.Tokens);
        w.WriteNumber("hits", s.Cache.Hits);
        w.WriteNumber("misses", s.Cache.Misses);
        w.WriteNumber("loads", s.Cache.Loads);
        w.WriteNumber("bytes_read", s.Cache.BytesRead);
        w.WriteNumber("evictions", s.Cache.Evictions);
        w.WriteNumber("prefetch_loads", s.Cache.PrefetchLoads);
        w.WriteNumber("prefetch_hits", s.Cache.PrefetchHits);
        w.WriteNumber("stall_ms", Math.Round(s.Cache.Stall.TotalMilliseconds, 3));
        w.WriteNumber("io_busy_ms", Math.Round(s.Cache.IoBusy.TotalMilliseconds, 3));
        w.WriteNumber("prediction_checks", s.PredictionChecks);
        w.WriteNumber("prediction_hits", s.PredictionHits);
        w.WriteEndObject();
        w.WriteStartObject("memory");
        w.WriteNumber("resident_experts", residentExperts);
        w.WriteNumber("resident_bytes", placement.Offloaded ? residentExperts * placement.SlotBytes : placement.ExpertBytes);
        w.WriteNumber("budget_bytes", placement.BudgetBytes);
        w.WriteNumber("process_bytes", processBytes);
        w.WriteEndObject();
        w.WriteEndObject();
    }
}
