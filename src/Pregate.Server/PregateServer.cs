// The OpenAI-compatible HTTP server: ASP.NET Core minimal APIs on Kestrel over one model session. Endpoints:
// GET /v1/models, POST /v1/chat/completions, POST /v1/completions (JSON or server-sent events), GET /health, GET /metrics,
// GET /v1/engine/events (per-token expert events) and the web console at GET /.
using System.Diagnostics;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Pregate.Engine;

namespace Pregate.Server;

/// <summary>
/// Serves one <see cref="ModelSession"/> over HTTP with OpenAI's API. The session stays owned by the caller and must not
/// be used elsewhere while the server runs. Create, <see cref="StartAsync"/>, then stop or dispose.
/// </summary>
public sealed class PregateServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly ServerOptions _options;
    private readonly TextWriter? _log;

    private PregateServer(ModelSession session, ServerOptions options, TextWriter? log)
    {
        _options = options;
        _log = log;
        ModelId = options.ModelId ?? DefaultModelId(session.Checkpoint.Path);
        ChatFormat = ChatFormat.For(session);
        Scheduler = new GenerationScheduler(session, options.MaxConcurrent, options.MaxQueued);
        Metrics = new ServerMetrics();
        Metrics.TrackScheduler(() => Scheduler.Queued, () => Scheduler.Running);
        Metrics.AddExpertStatistics(session);
        Created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            ApplicationName = typeof(PregateServer).Assembly.GetName().Name,
            ContentRootPath = AppContext.BaseDirectory,
            Args = [],
        });
        builder.Logging.ClearProviders();
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = TimeSpan.FromSeconds(5));
        var ip = ServerOptions.ParseHost(options.Host);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = options.MaxRequestBytes;
            k.Listen(ip, options.Port);
        });
        _app = builder.Build();

        var reader = new RequestReader(ModelId, session.Tokenizer, ChatFormat, session.State.Context, options.DefaultSampling);
        var completions = new CompletionEndpoints(ModelId, reader, Scheduler, Metrics, _app.Lifetime.ApplicationStopping);
        _app.UseRouting();
        _app.Use(ObserveAsync);
        _app.Use(AuthorizeAsync);
        _app.MapGet("/health", HealthAsync);
        _app.MapGet("/metrics", MetricsAsync);
        _app.MapGet("/v1/models", ModelsAsync);
        _app.MapGet("/v1/models/{id}", ModelAsync);
        _app.MapPost("/v1/chat/completions", completions.ChatAsync);
        _app.MapPost("/v1/completions", completions.CompletionAsync);
        _app.MapGet("/v1/engine/events", new EngineEventsEndpoint(session, ModelId, _app.Lifetime.ApplicationStopping).StreamAsync);
        new ConsolePage().Map(_app);
    }

    /// <summary>The id clients use for the served model.</summary>
    public string ModelId { get; }

    /// <summary>When the server was created (Unix seconds), reported as the model's creation time.</summary>
    public long Created { get; }

    /// <summary>How chat messages become prompts (the model's template, or ChatML).</summary>
    public ChatFormat ChatFormat { get; }

    public GenerationScheduler Scheduler { get; }

    /// <summary>The server's metrics; add session statistics with <see cref="ServerMetrics.AddGauge"/> / <see cref="ServerMetrics.AddCounter"/>.</summary>
    public ServerMetrics Metrics { get; }

    /// <summary>The bound address (with the real port when <see cref="ServerOptions.Port"/> was 0); set by <see cref="StartAsync"/>.</summary>
    public Uri? Address { get; private set; }

    /// <summary>Builds a server for <paramref name="session"/>. <paramref name="log"/> gets one line per notable event.</summary>
    /// <exception cref="ArgumentException">Invalid <paramref name="options"/>.</exception>
    /// <exception cref="Core.ModelFormatException">The model's tokenizer or chat template entry is malformed.</exception>
    public static PregateServer Create(ModelSession session, ServerOptions options, TextWriter? log = null)
    {
        ArgumentNullException.ThrowIfNull(session);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var server = new PregateServer(session, options, log);
        if (server.ChatFormat.IsFallback) log?.WriteLine($"chat: using ChatML ({server.ChatFormat.FallbackReason})");
        return server;
    }

    /// <summary>Binds and starts listening.</summary>
    /// <exception cref="IOException">The address is in use or cannot be bound.</exception>
    public async Task StartAsync(CancellationToken cancel = default)
    {
        await _app.StartAsync(cancel).ConfigureAwait(false);
        var addresses = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses;
        string first = addresses?.FirstOrDefault() ?? throw new InvalidOperationException("the server reported no bound address");
        Address = new Uri(first);
    }

    /// <summary>Completes when the server stops (<see cref="StopAsync"/>, or the process is told to terminate).</summary>
    public Task WaitForShutdownAsync(CancellationToken cancel = default) => _app.WaitForShutdownAsync(cancel);

    /// <summary>Stops listening; requests in progress are cancelled.</summary>
    public Task StopAsync(CancellationToken cancel = default) => _app.StopAsync(cancel);

    public ValueTask DisposeAsync() => _app.DisposeAsync();

    /// <summary>The model id for a path: the file name without .gguf, or the folder name.</summary>
    public static string DefaultModelId(string modelPath)
    {
        string name = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(modelPath)));
        return name.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) ? name[..^5] : name;
    }

    // Counts every request by endpoint and status and turns refusals and failures into OpenAI-style errors.
    private async Task ObserveAsync(HttpContext ctx, RequestDelegate next)
    {
        long start = Stopwatch.GetTimestamp();
        try
        {
            await next(ctx);
        }
        catch (ApiException e)
        {
            await WriteErrorAsync(ctx, e);
        }
        catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested)
        {
            // The client went away; nobody reads an answer, but the metrics see why the request ended.
            if (!ctx.Response.HasStarted) ctx.Response.StatusCode = StatusCodes.Status499ClientClosedRequest;
        }
        catch (Exception e)
        {
            _log?.WriteLine($"error: {ctx.Request.Method} {ctx.Request.Path}: {e}");
            await WriteErrorAsync(ctx, ApiException.Internal($"The server failed to handle the request: {e.Message}"));
        }
        finally
        {
            string endpoint = (ctx.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? "other";
            Metrics.RequestFinished(endpoint, ctx.Response.StatusCode, Stopwatch.GetElapsedTime(start));
        }
    }

    private Task AuthorizeAsync(HttpContext ctx, RequestDelegate next)
    {
        if (_options.ApiKey is not { } key || !ctx.Request.Path.StartsWithSegments("/v1")) return next(ctx);
        string? header = ctx.Request.Headers.Authorization;
        if (header is null || !header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            ctx.Response.Headers.WWWAuthenticate = "Bearer";
            throw ApiException.Unauthorized(missing: true);
        }
        var given = System.Text.Encoding.UTF8.GetBytes(header["Bearer ".Length..].Trim());
        var expected = System.Text.Encoding.UTF8.GetBytes(key);
        if (!System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(given, expected))
        {
            ctx.Response.Headers.WWWAuthenticate = "Bearer error=\"invalid_token\"";
            throw ApiException.Unauthorized(missing: false);
        }
        return next(ctx);
    }

    internal static async Task WriteErrorAsync(HttpContext ctx, ApiException e)
    {
        if (ctx.Response.HasStarted) return;
        ctx.Response.StatusCode = e.Status;
        ctx.Response.ContentType = "application/json";
        await JsonSerializer.SerializeAsync(ctx.Response.Body, e.ToResponse(), ServerJson.Default.ErrorResponse, ctx.RequestAborted);
    }

    private Task HealthAsync(HttpContext ctx)
    {
        ctx.Response.ContentType = "application/json";
        return JsonSerializer.SerializeAsync(ctx.Response.Body, new HealthResponse("ok", ModelId, Scheduler.Running, Scheduler.Queued),
            ServerJson.Default.HealthResponse, ctx.RequestAborted);
    }

    private Task MetricsAsync(HttpContext ctx)
    {
        ctx.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        return Metrics.WriteAsync(ctx.Response.Body, ctx.RequestAborted);
    }

    private ModelCard Card => new(ModelId, "model", Created, "pregate");

    private Task ModelsAsync(HttpContext ctx)
    {
        ctx.Response.ContentType = "application/json";
        return JsonSerializer.SerializeAsync(ctx.Response.Body, new ModelList("list", [Card]), ServerJson.Default.ModelList, ctx.RequestAborted);
    }

    private Task ModelAsync(HttpContext ctx)
    {
        string id = ctx.Request.RouteValues["id"] as string ?? "";
        if (id != ModelId) throw ApiException.ModelNotFound(id, ModelId);
        ctx.Response.ContentType = "application/json";
        return JsonSerializer.SerializeAsync(ctx.Response.Body, Card, ServerJson.Default.ModelCard, ctx.RequestAborted);
    }

}
