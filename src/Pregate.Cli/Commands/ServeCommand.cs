// `pregate serve`: the OpenAI-compatible HTTP server over one model, until Ctrl+C.
using System.CommandLine;
using Pregate.Server;

namespace Pregate.Cli.Commands;

internal static class ServeCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var engine = new EngineOptionSet();
        var sampling = new SamplingOptionSet();
        var host = new Option<string>("--host") { Description = "address to listen on (an IP address or localhost)", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "TCP port (0 = any free port)", DefaultValueFactory = _ => 8080 };
        var apiKey = new Option<string?>("--api-key") { Description = "require 'Authorization: Bearer KEY' on /v1 requests" };
        var maxConcurrent = new Option<int>("--max-concurrent") { Description = "sequences generating at once, each with its own KV cache, decoded together in batched steps", DefaultValueFactory = _ => 1 };
        var queue = new Option<int>("--queue") { Description = "requests waiting for a sequence; more get HTTP 429", DefaultValueFactory = _ => 16 };
        var modelId = new Option<string?>("--model-id") { Description = "the model name clients use (default: the model's file or folder name)" };
        var cmd = new Command("serve", "Serve the model with OpenAI's API (/v1/chat/completions, /v1/completions, /v1/models), /health and /metrics")
        {
            host, port, apiKey, maxConcurrent, queue, modelId,
        };
        engine.AddTo(cmd);
        sampling.AddTo(cmd);
        cmd.SetAction(async (p, cancel) =>
        {
            var options = new ServerOptions
            {
                Host = p.GetValue(host)!,
                Port = p.GetValue(port),
                ApiKey = p.GetValue(apiKey),
                MaxConcurrent = p.GetValue(maxConcurrent),
                MaxQueued = p.GetValue(queue),
                ModelId = p.GetValue(modelId),
                DefaultSampling = sampling.Get(p),
            };
            try { options.Validate(); }
            catch (ArgumentException e) { throw new UserException(e.Message); }
            using var session = engine.Open(p, stderr);
            await using var server = PregateServer.Create(session, options, stderr);
            try { await server.StartAsync(cancel); }
            catch (IOException e) { throw new UserException($"cannot listen on {options.Host}:{options.Port}: {e.Message}"); }
            stdout.WriteLine($"serving {server.ModelId} at {server.Address} (OpenAI API under /v1, metrics at /metrics); Ctrl+C stops");
            stdout.Flush();
            try { await server.WaitForShutdownAsync(cancel); }
            catch (OperationCanceledException) { }
            await server.StopAsync(CancellationToken.None);
            return 0;
        });
        return cmd;
    }
}
