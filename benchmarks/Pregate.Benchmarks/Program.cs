// Peer measurements for `pregate bench --vs-llama`. `llama --model PATH [--threads N] [--prompt-tokens N]
// [--gen-tokens N] [--batch N] [--decode forced|greedy] [--seed S] [--kv f32|f16] [--repack on|off]` runs Pregate's
// benchmark protocol (Engine/Benchmark.cs) on llama.cpp and prints one JSON object on stdout.
using System.Globalization;
using System.Text.Json;
using LLama.Native;
using Pregate.Benchmarks;
using Pregate.Engine;

if (args.Length == 0 || args[0] != "llama")
{
    Console.Error.WriteLine("usage: Pregate.Benchmarks llama --model PATH [--threads N] [--prompt-tokens N] [--gen-tokens N] [--batch N] [--decode forced|greedy] [--seed S] [--kv f32|f16] [--repack on|off]");
    return 2;
}

var options = new Dictionary<string, string>(StringComparer.Ordinal);
for (int i = 1; i < args.Length; i++)
{
    if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
    {
        Console.Error.WriteLine($"error: expected --name value, got '{args[i]}'");
        return 2;
    }
    options[args[i]] = args[++i];
}

try
{
    string model = options.TryGetValue("--model", out var m) ? m : throw new ArgumentException("--model is required");
    int threads = Int("--threads", Environment.ProcessorCount);
    var settings = new BenchmarkSettings
    {
        PromptTokens = Int("--prompt-tokens", 128),
        GenTokens = Int("--gen-tokens", 64),
        Batch = Int("--batch", 1),
        Seed = (ulong)Int("--seed", 1),
        Decode = Get("--decode", "forced") switch
        {
            "forced" => BenchmarkDecode.Forced,
            "greedy" => BenchmarkDecode.Greedy,
            var d => throw new ArgumentException($"--decode must be forced or greedy, not '{d}'"),
        },
    };
    settings.Validate();
    string kv = Get("--kv", "f32");
    var kvType = kv switch
    {
        "f32" => GGMLType.GGML_TYPE_F32,
        "f16" => GGMLType.GGML_TYPE_F16,
        _ => throw new ArgumentException($"--kv must be f32 or f16, not '{kv}'"),
    };
    bool repack = Get("--repack", "on") switch
    {
        "on" => true,
        "off" => false,
        var r => throw new ArgumentException($"--repack must be on or off, not '{r}'"),
    };
    if (!File.Exists(model)) throw new ArgumentException($"{model}: no such file");

    NativeLibraryConfig.All.WithLogCallback((level, message) =>
    {
        if (level == LLamaLogLevel.Error) Console.Error.Write(message);
    });
    using var target = new LlamaCppTarget(model, threads, settings.ContextNeeded, settings.PromptTokens, kvType, repack, settings.Batch);
    var (timing, _) = Benchmark.Run(target, settings);

    using var json = new Utf8JsonWriter(Console.OpenStandardOutput());
    json.WriteStartObject();
    json.WriteString("engine", "llama.cpp");
    json.WriteString("binding", "LLamaSharp 0.30.0 (CPU backend)");
    json.WriteNumber("threads", threads);
    json.WriteString("kv_type", kv);
    json.WriteBoolean("flash_attention", false);
    json.WriteNumber("prompt_tokens", settings.PromptTokens);
    json.WriteNumber("gen_tokens", settings.GenTokens);
    json.WriteNumber("batch", settings.Batch);
    json.WriteNumber("prefill_tok_s", timing.PrefillTokensPerSecond);
    json.WriteNumber("decode_tok_s", timing.DecodeTokensPerSecond);
    if (ProcessMemory.PeakResidentBytes() is long peak) json.WriteNumber("peak_rss_bytes", peak);
    else json.WriteNull("peak_rss_bytes");
    json.WriteEndObject();
    json.Flush();
    Console.WriteLine();
    return 0;
}
catch (ArgumentException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 1;
}

int Int(string name, int fallback) =>
    options.TryGetValue(name, out var v)
        ? int.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out int n) ? n : throw new ArgumentException($"{name}: '{v}' is not a non-negative integer")
        : fallback;

string Get(string name, string fallback) => options.TryGetValue(name, out var v) ? v : fallback;
