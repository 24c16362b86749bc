// Settings of the OpenAI-compatible server: where it listens, who may call it, how many sequences it runs and queues,
// and the sampling defaults for fields a request leaves out.
using System.Net;
using Pregate.Engine;

namespace Pregate.Server;

/// <summary>How a <see cref="PregateServer"/> listens and schedules.</summary>
public sealed record ServerOptions
{
    /// <summary>An IP address, or "localhost". Loopback unless told otherwise.</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>TCP port; 0 picks a free one (read it from <see cref="PregateServer.Address"/> after starting).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>When set, every /v1 request needs <c>Authorization: Bearer ApiKey</c>; /health and /metrics stay open.</summary>
    public string? ApiKey { get; init; }

    /// <summary>Sequences generating at once (each has its own KV cache; they decode together, one batched step per token).</summary>
    public int MaxConcurrent { get; init; } = 1;

    /// <summary>Requests waiting for a sequence slot; one more gets HTTP 429.</summary>
    public int MaxQueued { get; init; } = 16;

    /// <summary>The model id clients name; null = the model's file or folder name.</summary>
    public string? ModelId { get; init; }

    /// <summary>Sampling for fields a request does not set (top_k, min_p, repetition penalty; temperature and top_p when absent).
    /// The seed of a request without one is drawn at random.</summary>
    public SamplingOptions DefaultSampling { get; init; } = new();

    /// <summary>Largest request body accepted, in bytes.</summary>
    public long MaxRequestBytes { get; init; } = 8L << 20;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid setting.</summary>
    public void Validate()
    {
        ParseHost(Host);
        if (Port is < 0 or > 65535) throw new ArgumentException($"port must be between 0 and 65535, not {Port}");
        if (ApiKey is { Length: 0 }) throw new ArgumentException("the API key must not be empty");
        if (MaxConcurrent is < 1 or > 256) throw new ArgumentException($"max-concurrent must be between 1 and 256, not {MaxConcurrent}");
        if (MaxQueued is < 0 or > 100_000) throw new ArgumentException($"queue must be between 0 and 100000, not {MaxQueued}");
        if (ModelId is { } id && string.IsNullOrWhiteSpace(id)) throw new ArgumentException("the model id must not be blank");
        if (MaxRequestBytes < 1024) throw new ArgumentException($"the request size limit must be at least 1024 bytes, not {MaxRequestBytes}");
        DefaultSampling.Validate();
    }

    /// <summary>The address to bind for <paramref name="host"/>: an IP literal, or "localhost" (IPv4 loopback).</summary>
    /// <exception cref="ArgumentException">Neither.</exception>
    public static IPAddress ParseHost(string host)
    {
        if (string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase)) return IPAddress.Loopback;
        if (IPAddress.TryParse(host.Trim('[', ']'), out var ip)) return ip;
        throw new ArgumentException($"host must be an IP address (e.g. 127.0.0.1, 0.0.0.0, ::1) or localhost, not '{host}'");
    }
}
