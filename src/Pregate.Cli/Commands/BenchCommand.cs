// `pregate bench`: prefill and decode throughput on a seeded random prompt and a forced (or greedy) decode stream, with
// weight bytes per token and peak memory; `--vs-llama` interleaves rounds with llama.cpp (benchmarks/Pregate.Benchmarks,
// run as a child process) and reports medians and the ratios Pregate / llama.cpp.
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Formats;

namespace Pregate.Cli.Commands;

internal static class BenchCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var engine = new EngineOptionSet();
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "prompt length, run as one prefill", DefaultValueFactory = _ => 128 };
        var genTokens = new Option<int>("--gen-tokens") { Description = "decode steps", DefaultValueFactory = _ => 64 };
        var decode = new Option<string>("--decode") { Description = "forced (a fixed seeded random token stream) or greedy", DefaultValueFactory = _ => "forced" };
        decode.AcceptOnlyFromAmong("forced", "greedy");
        var rounds = new Option<int>("--rounds") { Description = "measured rounds (medians are reported; with --vs-llama the engines alternate)", DefaultValueFactory = _ => 3 };
        var seed = new Option<ulong>("--seed") { Description = "seed of the prompt and the forced decode stream", DefaultValueFactory = _ => 1 };
        var json = new Option<bool>("--json") { Description = "print one JSON object" };
        var text = new Option<string?>("--text") { Description = "feed this UTF-8 text (prompt, then the forced decode stream) instead of random tokens: for trained models" };
        var vsLlama = new Option<bool>("--vs-llama") { Description = "also measure llama.cpp (LLamaSharp, same threads and protocol) and print the ratios" };
        var io = new Option<bool>("--io") { Description = "measure expert reads instead: part by part (this file's layout) against one read per expert (expert-major)" };
        var cmd = new Command("bench", "Measure prefill and decode speed (optionally against llama.cpp)") { promptTokens, genTokens, decode, rounds, seed, json, vsLlama, text, io };
        engine.AddTo(cmd);
        cmd.SetAction(p =>
        {
            if (p.GetValue(io))
            {
                BenchIo.Run(engine.ModelPath(p), Math.Max(1, p.GetValue(rounds)), p.GetValue(seed), stdout, stderr);
                return 0;
            }
            var settings = new BenchmarkSettings
            {
                PromptTokens = p.GetValue(promptTokens),
                GenTokens = p.GetValue(genTokens),
                Decode = p.GetValue(decode) == "greedy" ? BenchmarkDecode.Greedy : BenchmarkDecode.Forced,
                Seed = p.GetValue(seed),
            };
            int roundCount = p.GetValue(rounds);
            try { settings.Validate(); }
            catch (ArgumentException e) { throw new UserException(e.Message); }
            if (roundCount < 1) throw new UserException($"--rounds must be at least 1, not {roundCount}");

            using var session = engine.Open(p, stderr);
            if (p.GetValue(text) is string textPath)
            {
                if (!File.Exists(textPath)) throw new UserException($"{textPath}: no such file");
                settings = settings with { Text = session.Tokenizer.Encode(File.ReadAllText(textPath), session.Tokenizer.AddBosToken) };
                try { settings.Validate(); }
                catch (ArgumentException e) { throw new UserException(e.Message); }
            }
            if (settings.ContextNeeded > session.State.Context)
                throw new UserException($"{settings.PromptTokens} prompt + {settings.GenTokens} generated tokens exceed the context of {session.State.Context}; raise --ctx");
            LlamaPeer? peer = null;
            if (p.GetValue(vsLlama))
            {
                if (session.Checkpoint.Format != CheckpointFormat.Gguf) throw new UserException("--vs-llama needs a GGUF model (llama.cpp reads GGUF only)");
                peer = LlamaPeer.Prepare(stderr);
            }

            var target = new SessionBenchmarkTarget(session);
            var statsBefore = session.ExpertStats;
            var ours = new List<BenchmarkTiming>();
            var theirs = new List<PeerResult>();
            for (int r = 1; r <= roundCount; r++)
            {
                var (timing, _) = Benchmark.Run(target, settings);
                ours.Add(timing);
                string line = Invariant($"round {r}/{roundCount}: pregate prefill {timing.PrefillTokensPerSecond:0.0} tok/s, decode {timing.DecodeTokensPerSecond:0.0} tok/s");
                if (peer is not null)
                {
                    var result = peer.Run(session.Checkpoint.Path, session.Team.ThreadCount, settings);
                    theirs.Add(result);
                    line += Invariant($" | llama.cpp prefill {result.PrefillTokensPerSecond:0.0} tok/s, decode {result.DecodeTokensPerSecond:0.0} tok/s");
                }
                stderr.WriteLine(line);
            }

            var report = new Report(session, settings, ours, theirs, peer is not null, session.ExpertStats - statsBefore);
            if (p.GetValue(json)) report.WriteJson(stdout);
            else report.WriteText(stdout);
            return 0;
        });
        return cmd;
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    private static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    private sealed class Report(ModelSession session, BenchmarkSettings settings, List<BenchmarkTiming> ours, List<PeerResult> theirs, bool withPeer, ExpertStats experts)
    {
        private readonly double _prefill = Median(ours.Select(t => t.PrefillTokensPerSecond));
        private readonly double _decode = Median(ours.Select(t => t.DecodeTokensPerSecond));
        private readonly long _bytesPerToken = session.Model.WeightBytesPerToken;
        private readonly long? _peakRss = ProcessMemory.PeakResidentBytes();
        private readonly double? _peerPrefill = withPeer ? Median(theirs.Select(t => t.PrefillTokensPerSecond)) : null;
        private readonly double? _peerDecode = withPeer ? Median(theirs.Select(t => t.DecodeTokensPerSecond)) : null;

        public void WriteText(TextWriter o)
        {
            var c = session.Config;
            o.WriteLine($"model        {session.Checkpoint.Path} ({c.ModelType}, {c.NumLayers} layers, {c.NumExperts} experts top-{c.NumExpertsUsed})");
            o.WriteLine(Invariant($"protocol     {session.Team.ThreadCount} threads, prompt {settings.PromptTokens} tokens, decode {settings.GenTokens} tokens ({Name(settings.Decode)}), median of {ours.Count} rounds"));
            o.WriteLine(Invariant($"pregate      prefill {_prefill:0.0} tok/s, decode {_decode:0.0} tok/s ({_bytesPerToken * _decode / 1e9:0.0} GB/s of weights)"));
            if (_peerPrefill is double pp && _peerDecode is double pd)
            {
                o.WriteLine(Invariant($"llama.cpp    prefill {pp:0.0} tok/s, decode {pd:0.0} tok/s (K/V {theirs[0].KvType}, flash attention off)"));
                o.WriteLine(Invariant($"ratio        prefill {_prefill / pp:0.00}×, decode {_decode / pd:0.00}× (pregate / llama.cpp)"));
            }
            o.WriteLine($"weights      {Units.Bytes(_bytesPerToken)} read per decoded token");
            o.WriteLine($"peak RSS     {(_peakRss is long b ? Units.Bytes(b) : "n/a")}");
            o.WriteLine($"{session.ExpertPlacement.Describe()}");
            if (session.ExpertPlacement.Offloaded) o.WriteLine(EngineOptionSet.DescribeStats(session.ExpertPlacement, experts));
        }

        public void WriteJson(TextWriter o)
        {
            using var ms = new MemoryStream();
            using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
            {
                w.WriteStartObject();
                w.WriteString("model", session.Checkpoint.Path);
                w.WriteString("architecture", session.Config.ModelType);
                w.WriteNumber("threads", session.Team.ThreadCount);
                w.WriteNumber("prompt_tokens", settings.PromptTokens);
                w.WriteNumber("gen_tokens", settings.GenTokens);
                w.WriteString("decode", Name(settings.Decode));
                w.WriteNumber("seed", settings.Seed);
                w.WriteNumber("rounds", ours.Count);
                w.WriteNumber("prefill_tok_s", _prefill);
                w.WriteNumber("decode_tok_s", _decode);
                w.WriteNumber("bytes_per_token", _bytesPerToken);
                // Expert-cache figures exist only where experts are offloaded; the resident runner moves nothing.
                bool off = session.ExpertPlacement.Offloaded;
                void Number(string name, double? v) { if (v is double d) w.WriteNumber(name, d); else w.WriteNull(name); }
                Number("expert_hit_rate", off ? experts.HitRate : null);
                Number("prediction_recall", off ? experts.PredictionRecall : null);
                Number("io_busy_fraction", off ? experts.IoBusyFraction : null);
                Number("stall_ms_per_token", off ? experts.StallMsPerToken : null);
                Number("expert_bytes_read_per_token", off ? experts.BytesPerToken : null);
                if (_peakRss is long rss) w.WriteNumber("peak_rss_bytes", rss);
                else w.WriteNull("peak_rss_bytes");
                w.WriteStartArray("runs");
                foreach (var t in ours)
                {
                    w.WriteStartObject();
                    w.WriteNumber("prefill_tok_s", t.PrefillTokensPerSecond);
                    w.WriteNumber("decode_tok_s", t.DecodeTokensPerSecond);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                if (_peerPrefill is double pp && _peerDecode is double pd)
                {
                    w.WriteStartObject("llama_cpp");
                    w.WriteNumber("prefill_tok_s", pp);
                    w.WriteNumber("decode_tok_s", pd);
                    w.WriteString("kv_type", theirs[0].KvType);
                    w.WriteBoolean("flash_attention", false);
                    long? peerRss = theirs.Max(t => t.PeakRssBytes);
                    if (peerRss is long pr) w.WriteNumber("peak_rss_bytes", pr);
                    else w.WriteNull("peak_rss_bytes");
                    w.WriteStartArray("runs");
                    foreach (var t in theirs)
                    {
                        w.WriteStartObject();
                        w.WriteNumber("prefill_tok_s", t.PrefillTokensPerSecond);
                        w.WriteNumber("decode_tok_s", t.DecodeTokensPerSecond);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                    w.WriteEndObject();
                    w.WriteStartObject("ratio");
                    w.WriteNumber("prefill", _prefill / pp);
                    w.WriteNumber("decode", _decode / pd);
                    w.WriteEndObject();
                }
                else
                {
                    w.WriteNull("llama_cpp");
                    w.WriteNull("ratio");
                }
                w.WriteEndObject();
            }
            o.WriteLine(System.Text.Encoding.UTF8.GetString(ms.ToArray()));
        }
    }

    private static string Name(BenchmarkDecode d) => d == BenchmarkDecode.Greedy ? "greedy" : "forced";

    private sealed record PeerResult(double PrefillTokensPerSecond, double DecodeTokensPerSecond, long? PeakRssBytes, string KvType);

    /// <summary>The llama.cpp side: benchmarks/Pregate.Benchmarks, built once per bench run, then started once per round.</summary>
    private sealed class LlamaPeer(string dll)
    {
        private const string Project = "benchmarks/Pregate.Benchmarks/Pregate.Benchmarks.csproj";

        public static LlamaPeer Prepare(TextWriter stderr)
        {
            string root = RepositoryRoot()
                ?? throw new UserException($"--vs-llama needs the Pregate source tree ({Project}); set PREGATE_HOME to the repository root");
            string output = Path.Combine(root, ".build", "benchmarks");
            stderr.WriteLine("bench: building the llama.cpp peer (benchmarks/Pregate.Benchmarks)...");
            var (code, _, err) = Execute("dotnet", ["build", Path.Combine(root, Project), "-c", "Release", "-o", output, "-nologo", "-v", "quiet", "-clp:ErrorsOnly"]);
            if (code != 0) throw new UserException($"building the llama.cpp peer failed:\n{err}");
            return new LlamaPeer(Path.Combine(output, "Pregate.Benchmarks.dll"));
        }

        public PeerResult Run(string model, int threads, BenchmarkSettings s)
        {
            var (code, stdout, stderr) = Execute("dotnet",
            [
                dll, "llama", "--model", model, "--threads", Num(threads), "--prompt-tokens", Num(s.PromptTokens),
                "--gen-tokens", Num(s.GenTokens), "--decode", Name(s.Decode), "--seed", s.Seed.ToString(CultureInfo.InvariantCulture), "--kv", "f32",
            ]);
            if (code != 0) throw new UserException($"the llama.cpp peer failed (exit code {code}):\n{stderr}");
            try
            {
                using var doc = JsonDocument.Parse(stdout);
                var r = doc.RootElement;
                var rss = r.GetProperty("peak_rss_bytes");
                return new PeerResult(r.GetProperty("prefill_tok_s").GetDouble(), r.GetProperty("decode_tok_s").GetDouble(),
                    rss.ValueKind == JsonValueKind.Number ? rss.GetInt64() : null, r.GetProperty("kv_type").GetString() ?? "f32");
            }
            catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new UserException($"the llama.cpp peer printed something other than its JSON result: {e.Message}\n{stdout}");
            }
        }

        private static string Num(int n) => n.ToString(CultureInfo.InvariantCulture);

        private static string? RepositoryRoot()
        {
            var candidates = new List<string>();
            if (Environment.GetEnvironmentVariable("PREGATE_HOME") is { Length: > 0 } home) candidates.Add(home);
            for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent) candidates.Add(d.FullName);
            return candidates.FirstOrDefault(c => File.Exists(Path.Combine(c, Project)));
        }

        private static (int Code, string Stdout, string Stderr) Execute(string file, IEnumerable<string> args)
        {
            var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (string a in args) psi.ArgumentList.Add(a);
            using var process = Process.Start(psi) ?? throw new UserException($"could not start {file}");
            var stderrTask = process.StandardError.ReadToEndAsync();
            string stdout = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, stdout, stderrTask.Result);
        }
    }
}
