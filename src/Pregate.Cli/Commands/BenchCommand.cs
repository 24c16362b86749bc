// `pregate bench`: prefill and decode throughput on a seeded random prompt and a forced (or greedy) decode stream, with
// weight bytes per token, expert figures (per layer too) and peak memory; `--vs-llama` interleaves rounds with llama.cpp
// (benchmarks/Pregate.Benchmarks, run as a child process) and reports medians and the ratios Pregate / llama.cpp.
// `--batch N` decodes N sequences together (one MoeModel.ForwardStep per step, prompts prefilled one after the other);
// `--ablation` and budget/policy/batch lists hand over to BenchMatrix.
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Experts.Prediction;
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
        var json = new Option<bool>("--json") { Description = "print one JSON object (with --ablation or a sweep: results.json instead of the table)" };
        var text = new Option<string?>("--text") { Description = "feed this UTF-8 text (prompt, then the forced decode stream) instead of random tokens: for trained models" };
        var vsLlama = new Option<bool>("--vs-llama") { Description = "also measure llama.cpp (LLamaSharp, same threads and protocol) and print the ratios" };
        var io = new Option<bool>("--io") { Description = "measure expert reads instead: part by part (this file's layout) against one read per expert (expert-major)" };
        var stats = new Option<bool>("--stats") { Description = "print the expert figures per layer (offloaded experts)" };
        var ablation = new Option<bool>("--ablation")
        {
            Description = "run the workload under on-demand loading, the cache alone, cache + next-gate, cache + pregate (when calibrated), " +
                          "cache + oracle and resident experts, at each --expert-memory budget (default 25%,50%); writes --out",
        };
        var memoryCap = new Option<string?>("--memory-cap") { Description = "with --ablation or a sweep: run each configuration in a child process inside a fresh cgroup v1 memory group of this size (e.g. 400MiB)" };
        var outDir = new Option<string?>("--out") { Description = "with --ablation or a sweep: the folder for results.json, results.md and chart.png (default ./ablation-TIMESTAMP or ./sweep-TIMESTAMP)" };
        var oracleTrace = new Option<string?>("--oracle-trace") { Description = "with --predictor oracle: replay this routing trace (written by --ablation) instead of recording one" };
        var batch = new Option<string>("--batch")
        {
            Description = "sequences decoding together, each with its own prompt and stream (decode tok/s count every sequence's tokens); " +
                          "a comma list (1,4,16) runs each as a sweep or in the ablation",
            DefaultValueFactory = _ => "1",
        };
        var cmd = new Command("bench", "Measure prefill and decode speed (optionally against llama.cpp); --ablation and budget lists (--expert-memory 10%,25%,all) compare configurations")
        {
            promptTokens, genTokens, decode, rounds, seed, json, vsLlama, text, stats, ablation, memoryCap, outDir, oracleTrace, io, batch,
        };
        engine.AddTo(cmd);
        var serveLoad = new ServeLoadBench();
        serveLoad.AddTo(cmd);
        cmd.SetAction(p =>
        {
            bool batchGiven = p.GetResult(batch) is { Implicit: false };
            if (serveLoad.Requested(p))
            {
                if (batchGiven) return Usage(stderr, "--batch belongs to the decode benchmark; --serve-load sets its concurrency with --clients");
                return serveLoad.Run(p, engine, genTokens, json, stdout, stderr);
            }
            if (p.GetValue(io))
            {
                if (batchGiven) return Usage(stderr, "--batch belongs to the decode benchmark, not to --io");
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
            if (!TryParseBatches(p.GetValue(batch)!, out var batches, out string batchError)) return Usage(stderr, $"--batch: {batchError}");
            settings = settings with { Batch = batches[0] };
            int roundCount = p.GetValue(rounds);
            try { settings.Validate(); }
            catch (ArgumentException e) { return Usage(stderr, e.Message); }
            if (roundCount < 1) return Usage(stderr, $"--rounds must be at least 1, not {roundCount}");

            // A comma list in --expert-memory or --cache means a sweep; --ablation compares the prefetching configurations.
            string? memoryText = p.GetValue(engine.ExpertMemory);
            string cacheText = p.GetValue(engine.Cache)!;
            var budgets = new List<ExpertMemory>();
            if (memoryText is not null)
                foreach (string item in memoryText.Split(','))
                {
                    if (!ExpertMemory.TryParse(item, out var m, out string error)) return Usage(stderr, $"--expert-memory: {error}");
                    budgets.Add(m);
                }
            var policies = new List<EvictionPolicyKind>();
            foreach (string item in cacheText.Split(','))
            {
                if (!EvictionPolicy.TryParse(item.Trim(), out var policy)) return Usage(stderr, $"--cache must be lru, lfu or score (or a comma list of them), not '{item.Trim()}'");
                policies.Add(policy);
            }
            long? cap = null;
            if (p.GetValue(memoryCap) is string capText)
            {
                if (!ByteSize.TryParse(capText, out long capBytes, out string error)) return Usage(stderr, $"--memory-cap: {error}");
                cap = capBytes;
            }
            bool isAblation = p.GetValue(ablation);
            bool sweep = budgets.Count > 1 || policies.Count > 1 || batches.Count > 1;
            if (isAblation || sweep)
            {
                if (isAblation && p.GetResult(engine.Cache) is { Implicit: false }) return Usage(stderr, "--ablation chooses the cache policies itself; leave out --cache");
                if (isAblation && p.GetResult(engine.Predictor) is { Implicit: false }) return Usage(stderr, "--ablation chooses the predictors itself; leave out --predictor");
                if (p.GetValue(oracleTrace) is not null) return Usage(stderr, "--oracle-trace belongs to a single run");
                if (p.GetValue(stats)) return Usage(stderr, "--stats belongs to a single run; results.json holds the figures of every layer");
                var matrix = new BenchMatrix(engine, p, settings, batches, roundCount, p.GetValue(text), p.GetValue(vsLlama), cap, p.GetValue(outDir), p.GetValue(json), stdout, stderr);
                return isAblation
                    ? matrix.RunAblation(budgets.Count > 0 ? budgets : [ExpertMemory.OfFraction(0.25), ExpertMemory.OfFraction(0.5)])
                    : matrix.RunSweep(budgets.Count > 0 ? budgets : [ExpertMemory.All], policies);
            }
            if (cap is not null || p.GetValue(outDir) is not null)
                return Usage(stderr, "--memory-cap and --out go with --ablation or a sweep (a comma list in --expert-memory, --cache or --batch)");

            var options = engine.Options(p);
            var request = new SingleRun(engine.ModelPath(p), options, settings, roundCount, p.GetValue(text), p.GetValue(vsLlama), p.GetValue(oracleTrace)) { MeasureRoofline = true };
            request.Execute(stderr, report =>
            {
                if (p.GetValue(json)) report.WriteJson(stdout);
                else report.WriteText(stdout, p.GetValue(stats));
            });
            return 0;
        });
        return cmd;
    }

    /// <summary>
    /// The --batch value: one sequence count or a comma list of them, each at least 1 (duplicates dropped, order kept).
    /// </summary>
    internal static bool TryParseBatches(string text, out List<int> batches, out string error)
    {
        batches = [];
        foreach (string item in text.Split(','))
        {
            string t = item.Trim();
            if (!int.TryParse(t, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int n))
            {
                error = $"'{t}' is not a whole number of sequences";
                return false;
            }
            if (n < 1)
            {
                error = $"a batch holds at least 1 sequence, not {n}";
                return false;
            }
            if (!batches.Contains(n)) batches.Add(n);
        }
        error = "";
        return true;
    }

    // A bad option value: the message and exit code 2 (as for a malformed command line).
    private static int Usage(TextWriter stderr, string message)
    {
        stderr.WriteLine($"error: {message}");
        return Cli.ExitUsage;
    }

    /// <summary>One benchmark of one engine configuration: what `pregate bench` without a list or --ablation runs.</summary>
    internal sealed record SingleRun(string ModelPath, EngineOptions Options, BenchmarkSettings Settings, int Rounds, string? TextPath, bool VsLlama, string? OracleTraceFile)
    {
        /// <summary>
        /// Measures the read-bandwidth roofline at start (a 256 MiB buffer: left off where a run sits under a memory cap,
        /// as in the ablation and budget sweeps).
        /// </summary>
        public bool MeasureRoofline { get; init; }

        /// <summary>
        /// Opens the model as configured (recording the oracle's routing first when needed), measures it and hands the report
        /// to <paramref name="use"/> while the session is open.
        /// </summary>
        /// <exception cref="UserException">A bad option or file.</exception>
        public void Execute(TextWriter stderr, Action<Report> use)
        {
            var settings = Settings;
            // Each sequence's KV cache holds the workload (prompt and decode) unless --ctx says otherwise: a batch of
            // sequences with the model's whole context each would not fit beside the experts in a memory cap.
            var options = Options.Context is null ? Options with { Context = settings.ContextNeeded } : Options;
            if (settings.Batch > 1 && options.Backend is not null)
                throw new UserException($"--batch {settings.Batch} decodes on the CPU engine only; leave out --batch or use --backend cpu");
            if (options.Predictor == PredictorKind.Oracle && options.OracleTrace is null)
            {
                if (OracleTraceFile is string file)
                {
                    if (!File.Exists(file)) throw new UserException($"{file}: no such file");
                    options = options with { OracleTrace = LoadTrace(ModelPath, file) };
                }
                else
                {
                    stderr.WriteLine("bench: recording the routing of one resident pass for the oracle predictor...");
                    options = options with { OracleTrace = RecordTrace(ModelPath, options, settings, TextPath) };
                }
            }
            else if (OracleTraceFile is not null) throw new UserException("--oracle-trace goes with --predictor oracle");

            ModelSession session;
            try { session = ModelSession.Open(ModelPath, options); }
            catch (ArgumentException e) { throw new UserException(e.Message); }
            using (session)
            {
                stderr.WriteLine(session.DescribePlacement());
                settings = WithText(settings, session, TextPath);
                LlamaPeer? peer = null;
                if (VsLlama)
                {
                    if (session.Checkpoint.Format != CheckpointFormat.Gguf) throw new UserException("--vs-llama needs a GGUF model (llama.cpp reads GGUF only)");
                    peer = LlamaPeer.Prepare(stderr);
                }

                double? roofline = MeasureRoofline ? Benchmark.MeasureReadBandwidth(session.Team) : null;
                if (roofline is double measured) stderr.WriteLine(Invariant($"roofline: {measured / 1e9:0.0} GB/s read with {session.Team.ThreadCount} threads"));
                var target = new SessionBenchmarkTarget(session);
                var statsBefore = session.ExpertStats;
                var decodeExperts = default(DecodeExpertFigures);
                var ours = new List<BenchmarkTiming>();
                var theirs = new List<PeerResult>();
                for (int r = 1; r <= Rounds; r++)
                {
                    var (timing, _) = Benchmark.Run(target, settings);
                    ours.Add(timing);
                    decodeExperts += target.DecodeExperts;
                    string line = Invariant($"round {r}/{Rounds}: pregate prefill {timing.PrefillTokensPerSecond:0.0} tok/s, decode {timing.DecodeTokensPerSecond:0.0} tok/s");
                    if (peer is not null)
                    {
                        var result = peer.Run(session.Checkpoint.Path, session.Team.ThreadCount, settings);
                        theirs.Add(result);
                        line += Invariant($" | llama.cpp prefill {result.PrefillTokensPerSecond:0.0} tok/s, decode {result.DecodeTokensPerSecond:0.0} tok/s");
                    }
                    stderr.WriteLine(line);
                }
                use(new Report(session, settings, ours, theirs, peer is not null, session.ExpertStats - statsBefore, decodeExperts, roofline));
            }
        }
    }

    /// <summary>The settings with the text's tokens when a --text file is given.</summary>
    /// <exception cref="UserException">The file is missing, too short, or the workload exceeds the context.</exception>
    internal static BenchmarkSettings WithText(BenchmarkSettings settings, ModelSession session, string? textPath)
    {
        if (textPath is not null)
        {
            if (!File.Exists(textPath)) throw new UserException($"{textPath}: no such file");
            settings = settings with { Text = session.Tokenizer.Encode(File.ReadAllText(textPath), session.Tokenizer.AddBosToken) };
            try { settings.Validate(); }
            catch (ArgumentException e) { throw new UserException(e.Message); }
        }
        if (settings.ContextNeeded > session.State.Context)
            throw new UserException($"{settings.PromptTokens} prompt + {settings.GenTokens} generated tokens exceed the context of {session.State.Context}" +
                                    (settings.Batch > 1 ? " (each of the batch's sequences has a context of its own)" : "") + "; raise --ctx");
        return settings;
    }

    /// <summary>Records the routing of one pass of the workload with the experts resident (what the oracle replays).</summary>
    internal static RoutingTrace RecordTrace(string modelPath, EngineOptions options, BenchmarkSettings settings, string? textPath)
    {
        ModelSession resident;
        try { resident = ModelSession.Open(modelPath, options with { ExpertMemory = ExpertMemory.All, Predictor = PredictorKind.None, OracleTrace = null }); }
        catch (ArgumentException e) { throw new UserException(e.Message); }
        using (resident) return Benchmark.RecordRouting(resident, WithText(settings, resident, textPath));
    }

    private static RoutingTrace LoadTrace(string modelPath, string file)
    {
        using var ck = Checkpoint.Open(modelPath);
        return RoutingTrace.Load(file, ck.Config.NumExperts);
    }

    private static string Invariant(FormattableString s) => s.ToString(CultureInfo.InvariantCulture);

    private static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    internal sealed class Report(ModelSession session, BenchmarkSettings settings, List<BenchmarkTiming> ours, List<PeerResult> theirs, bool withPeer, ExpertStats experts,
        DecodeExpertFigures decodeExperts, double? rooflineBytesPerSecond)
    {
        private readonly double _prefill = Median(ours.Select(t => t.PrefillTokensPerSecond));
        private readonly double _decode = Median(ours.Select(t => t.DecodeTokensPerSecond));
        private readonly long _bytesPerToken = session.Model.WeightBytesPerToken;
        private readonly long? _peakRss = ProcessMemory.PeakResidentBytes();
        private readonly double? _peerPrefill = withPeer ? Median(theirs.Select(t => t.PrefillTokensPerSecond)) : null;
        private readonly double? _peerDecode = withPeer ? Median(theirs.Select(t => t.DecodeTokensPerSecond)) : null;

        /// <summary>
        /// Decode's weight reads per second over the read bandwidth measured at start; one sequence only (a batch's step reads
        /// the shared weights once for all its tokens, so tokens × bytes per token would overstate its reads).
        /// </summary>
        private double? RooflineFraction => rooflineBytesPerSecond is double r && settings.Batch == 1 ? _bytesPerToken * _decode / Math.Max(r, 1) : null;

        public void WriteText(TextWriter o, bool layers)
        {
            var c = session.Config;
            o.WriteLine($"model        {session.Checkpoint.Path} ({c.ModelType}, {c.NumLayers} layers, {c.NumExperts} experts top-{c.NumExpertsUsed})");
            int n = settings.Batch;
            o.WriteLine(n == 1
                ? Invariant($"protocol     {session.Team.ThreadCount} threads, batch 1, prompt {settings.PromptTokens} tokens, decode {settings.GenTokens} tokens ({Name(settings.Decode)}), median of {ours.Count} rounds")
                : Invariant($"protocol     {session.Team.ThreadCount} threads, batch {n} (sequences decoding together, prompts prefilled one after the other), prompt {settings.PromptTokens} tokens and decode {settings.GenTokens} tokens each ({Name(settings.Decode)}), median of {ours.Count} rounds"));
            string roofline = RooflineFraction is double f ? Invariant($", {f:P0} of the roofline") : "";
            o.WriteLine(n == 1
                ? Invariant($"pregate      prefill {_prefill:0.0} tok/s, decode {_decode:0.0} tok/s ({_bytesPerToken * _decode / 1e9:0.0} GB/s of weights{roofline})")
                : Invariant($"pregate      prefill {_prefill:0.0} tok/s, decode {_decode:0.0} tok/s ({_decode / n:0.0} steps/s of {n} tokens; tok/s count every sequence)"));
            if (_peerPrefill is double pp && _peerDecode is double pd)
            {
                o.WriteLine(Invariant($"llama.cpp    prefill {pp:0.0} tok/s, decode {pd:0.0} tok/s (K/V {theirs[0].KvType}, flash attention off)"));
                o.WriteLine(Invariant($"ratio        prefill {_prefill / pp:0.00}×, decode {_decode / pd:0.00}× (pregate / llama.cpp)"));
            }
            long interleaved = session.Model.InterleavedBytes;
            o.WriteLine($"weights      {Units.Bytes(_bytesPerToken)} read per decoded token" + (interleaved > 0 ? $"; {Units.Bytes(interleaved)} copied into interleaved rows" : ""));
            if (rooflineBytesPerSecond is double r)
                o.WriteLine(Invariant($"roofline     {r / 1e9:0.0} GB/s read with {session.Team.ThreadCount} threads (measured at start)"));
            o.WriteLine($"peak RSS     {(_peakRss is long b ? Units.Bytes(b) : "n/a")}");
            o.WriteLine($"{session.DescribePlacement()}");
            if (session.ExpertPlacement.Offloaded)
            {
                o.WriteLine(EngineOptionSet.DescribeStats(session.ExpertPlacement, experts));
                var d = decodeExperts;
                o.WriteLine(Invariant($"decode steps {Units.Bytes((long)d.BytesPerToken)} read per token ({d.BytesPerSecond / 1e9:0.00} GB/s), I/O busy {d.IoBusyFraction * 100:0}%, stall {d.StallMsPerToken:0.00} ms/token (the measured decode loops alone)"));
            }
            if (layers) ExpertStatsTable.Write(o, session.ExpertPlacement, experts);
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
                w.WriteNumber("batch", settings.Batch);
                w.WriteString("decode", Name(settings.Decode));
                w.WriteNumber("seed", settings.Seed);
                w.WriteNumber("rounds", ours.Count);
                w.WriteNumber("prefill_tok_s", _prefill);
                w.WriteNumber("decode_tok_s", _decode);
                w.WriteNumber("bytes_per_token", _bytesPerToken);
                w.WriteNumber("interleaved_bytes", session.Model.InterleavedBytes);
                Number("roofline_gb_s", rooflineBytesPerSecond / 1e9);
                Number("roofline_fraction", RooflineFraction);
                // Expert-cache figures exist only where experts are offloaded; the resident runner moves nothing.
                bool off = session.ExpertPlacement.Offloaded;
                void Number(string name, double? v) { if (v is double d) w.WriteNumber(name, d); else w.WriteNull(name); }
                Number("expert_hit_rate", off ? experts.HitRate : null);
                Number("prediction_recall", off ? experts.PredictionRecall : null);
                Number("prediction_precision", off ? experts.PredictionPrecision : null);
                Number("prefetch_precision", off ? experts.PrefetchPrecision : null);
                Number("prefetch_bytes_wasted", off ? experts.Cache.PrefetchBytesWasted : null);
                Number("prefetches_skipped_unlikely", off ? experts.Cache.PrefetchesSkippedUnlikely : null);
                Number("prefetches_skipped_valuable", off ? experts.Cache.PrefetchesSkippedValuable : null);
                Number("prefetches_skipped_busy", off ? experts.Cache.PrefetchesSkippedBusy : null);
                Number("io_busy_fraction", off ? experts.IoBusyFraction : null);
                Number("stall_ms_per_token", off ? experts.StallMsPerToken : null);
                Number("bytes_read_per_token", off ? experts.BytesPerToken : null);
                Number("decode_bytes_read_per_token", off ? decodeExperts.BytesPerToken : null);
                Number("decode_read_gb_s", off ? decodeExperts.BytesPerSecond / 1e9 : null);
                Number("decode_io_busy_fraction", off ? decodeExperts.IoBusyFraction : null);
                Number("decode_stall_ms_per_token", off ? decodeExperts.StallMsPerToken : null);
                Number("expert_bytes_read_per_token", off ? experts.ExpertBytesPerToken : null);
                Number("computed_in_place", off ? experts.ComputedInPlace : null);
                Number("computed_in_place_bytes", off ? experts.ComputedInPlaceBytes : null);
                Number("low_precision_experts", off ? experts.ComputedLowPrecision : null);
                Number("low_precision_bytes", off ? experts.ComputedLowPrecisionBytes : null);
                Number("low_precision_share", off ? experts.LowPrecisionShare : null);
                if (_peakRss is long rss) w.WriteNumber("peak_rss_bytes", rss);
                else w.WriteNull("peak_rss_bytes");
                var placement = session.ExpertPlacement;
                w.WriteString("expert_memory", placement.Offloaded ? ByteSize.Format(placement.BudgetBytes) : "all");
                w.WriteNumber("expert_memory_bytes", placement.Offloaded ? placement.BudgetBytes : placement.ExpertBytes);
                w.WriteNumber("expert_bytes_total", placement.ExpertBytes);
                w.WriteBoolean("offloaded", off);
                if (off)
                {
                    w.WriteString("cache_policy", placement.Policy.ToString().ToLowerInvariant());
                    w.WriteString("predictor", placement.Predictor);
                    w.WriteString("on_miss", MissPolicies.Name(placement.OnMiss));
                    if (placement.LowPrecisionType is { } lowType)
                    {
                        w.WriteString("low_precision_type", Core.DTypes.Name(lowType));
                        w.WriteNumber("low_precision_below", placement.LowPrecisionBelow);
                    }
                    w.WriteString("prefetch_gating", placement.Gating?.ToString());
                    w.WriteNumber("slots", placement.SlotCount);
                    w.WriteBoolean("direct_io", placement.DirectIo);
                }
                else
                {
                    w.WriteNull("cache_policy");
                    w.WriteNull("predictor");
                    w.WriteNull("prefetch_gating");
                }
                w.WriteNumber("expert_tokens", experts.Tokens);
                w.WriteStartArray("layers");
                foreach (var l in experts.Layers ?? [])
                {
                    var c = l.Cache;
                    w.WriteStartObject();
                    w.WriteNumber("layer", l.Layer);
                    w.WriteNumber("uses", c.Hits + c.Misses);
                    w.WriteNumber("hits", c.Hits);
                    w.WriteNumber("misses", c.Misses);
                    w.WriteNumber("hit_rate", c.HitRate);
                    w.WriteNumber("loads", c.Loads);
                    w.WriteNumber("bytes_read", c.BytesRead);
                    w.WriteNumber("bytes_read_per_token", experts.Tokens == 0 ? 0 : (double)c.BytesRead / experts.Tokens);
                    w.WriteNumber("stall_ms", c.Stall.TotalMilliseconds);
                    w.WriteNumber("stall_ms_per_token", experts.Tokens == 0 ? 0 : c.Stall.TotalMilliseconds / experts.Tokens);
                    w.WriteNumber("prefetch_loads", c.PrefetchLoads);
                    w.WriteNumber("prefetch_hits", c.PrefetchHits);
                    w.WriteNumber("prefetches_wasted", c.PrefetchesWasted);
                    w.WriteNumber("prefetches_cancelled", c.PrefetchesCancelled);
                    w.WriteNumber("prefetch_bytes_wasted", c.PrefetchBytesWasted);
                    w.WriteNumber("prefetches_skipped_unlikely", c.PrefetchesSkippedUnlikely);
                    w.WriteNumber("prefetches_skipped_valuable", c.PrefetchesSkippedValuable);
                    w.WriteNumber("prefetches_skipped_busy", c.PrefetchesSkippedBusy);
                    Number("prefetch_precision", c.PrefetchPrecision);
                    w.WriteNumber("prediction_checks", l.PredictionChecks);
                    w.WriteNumber("prediction_hits", l.PredictionHits);
                    w.WriteNumber("prediction_guesses", l.PredictionGuesses);
                    Number("prediction_recall", l.PredictionRecall);
                    Number("prediction_precision", l.PredictionPrecision);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
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

    internal sealed record PeerResult(double PrefillTokensPerSecond, double DecodeTokensPerSecond, long? PeakRssBytes, string KvType);

    /// <summary>The llama.cpp side: benchmarks/Pregate.Benchmarks, built once per bench run, then started once per round.</summary>
    internal sealed class LlamaPeer(string dll)
    {
        private const string Project = "benchmarks/Pregate.Benchmarks/Pregate.Benchmarks.csproj";

        public static LlamaPeer Prepare(TextWriter stderr)
        {
            string root = RepositoryRoot()
                ?? throw new UserException($"--vs-llama needs the Pregate source tree ({Project}); set PREGATE_HOME to the repository root");
            string output = Path.Combine(root, ".build", "benchmarks");
            stderr.WriteLine("bench: building the llama.cpp peer (benchmarks/Pregate.Benchmarks)...");
            var (code, _, err) = Execute(null, "dotnet", ["build", Path.Combine(root, Project), "-c", "Release", "-o", output, "-nologo", "-v", "quiet", "-clp:ErrorsOnly"]);
            if (code != 0) throw new UserException($"building the llama.cpp peer failed:\n{err}");
            return new LlamaPeer(Path.Combine(output, "Pregate.Benchmarks.dll"));
        }

        /// <summary>One llama.cpp pass; inside <paramref name="group"/> when given (a memory-capped child).</summary>
        public PeerResult Run(string model, int threads, BenchmarkSettings s, MemoryCgroup? group = null)
        {
            var (code, stdout, stderr) = Execute(group, "dotnet",
            [
                dll, "llama", "--model", model, "--threads", Num(threads), "--prompt-tokens", Num(s.PromptTokens),
                "--gen-tokens", Num(s.GenTokens), "--batch", Num(s.Batch), "--decode", Name(s.Decode), "--seed", s.Seed.ToString(CultureInfo.InvariantCulture), "--kv", "f32",
                // Under a memory cap llama.cpp runs from its memory map alone: its repacked copies of the weights would
                // take anonymous memory the size of the model and get it killed.
                "--repack", group is null ? "on" : "off",
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

        private static (int Code, string Stdout, string Stderr) Execute(MemoryCgroup? group, string file, IEnumerable<string> args)
        {
            var psi = MemoryCgroup.StartInfo(group, file, args);
            using var process = Process.Start(psi) ?? throw new UserException($"could not start {file}");
            var stderrTask = process.StandardError.ReadToEndAsync();
            string stdout = process.StandardOutput.ReadToEnd();
            process.WaitForExit();
            return (process.ExitCode, stdout, stderrTask.Result);
        }
    }
}
