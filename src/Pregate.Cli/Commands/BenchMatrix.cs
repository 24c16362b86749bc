// `pregate bench --ablation` and budget sweeps (`--expert-memory 10%,25%,all [--cache lru,score] [--batch 1,4]`): the bench
// workload run under a list of engine configurations (each at every batch size of --batch), each in this process or — with
// --memory-cap — in a child `pregate bench --json` inside a fresh cgroup v1 memory group, the page cache dropped first;
// results.json, results.md and chart.png in --out.
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Experts.Prediction;
using Pregate.Formats;

namespace Pregate.Cli.Commands;

/// <summary>
/// One configuration of a matrix: a label, a budget and the cache/predictor settings (or the llama.cpp peer);
/// <see cref="Gating"/> null takes the command line's prefetch gating.
/// </summary>
internal sealed record BenchJob(string Config, string Budget, ExpertMemory Memory, EvictionPolicyKind Policy, PredictorKind? Predictor, bool LlamaPeer = false,
    PrefetchGating? Gating = null)
{
    /// <summary>Sequences decoding together (--batch).</summary>
    public int Batch { get; init; } = 1;

    /// <summary>Why the configuration is not run; null when it is.</summary>
    public string? Skip { get; init; }
}

/// <summary>The outcome of one configuration: the figures of its bench JSON, or why it was skipped or failed.</summary>
internal sealed record BenchRow(BenchJob Job, string Status, string? Note, JsonElement? Bench, long? PeakMemoryBytes, long? LimitHits)
{
    public double? Number(string name) =>
        Bench is { } b && b.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
}

internal sealed class BenchMatrix(EngineOptionSet engine, ParseResult parse, BenchmarkSettings settings, IReadOnlyList<int> batches, int rounds,
    string? textPath, bool vsLlama, long? memoryCap, string? outDir, bool json, TextWriter stdout, TextWriter stderr)
{
    private readonly string _modelPath = engine.ModelPath(parse);

    // A batch column (results.md) and batch labels (chart.png) once any configuration runs more than one sequence.
    private bool Batched => batches.Any(b => b != 1);

    // The workload of a configuration: the command line's settings at the job's batch size.
    private BenchmarkSettings SettingsOf(BenchJob job) => settings with { Batch = job.Batch };

    // The jobs once per batch size of --batch (in its order), each batch's jobs together.
    private List<BenchJob> ForEachBatch(List<BenchJob> jobs) =>
        batches.SelectMany(b => jobs.Select(j => j with { Batch = b })).ToList();

    /// <summary>
    /// On demand (no predictor, LRU, the minimum budget: one layer's top-k slots, so nothing is reused beyond the layer
    /// being computed), then at each budget the cache alone (score policy), then cache + next-gate, cache + pregate (when a
    /// calibrated predictor file exists) and cache + oracle, each with every guess prefetched and again with the command
    /// line's prefetch gating ("(gated)"), then resident experts (and llama.cpp with --vs-llama).
    /// </summary>
    public int RunAblation(IReadOnlyList<ExpertMemory> budgets)
    {
        var jobs = new List<BenchJob>();
        long minimum = MinimumBudget();
        jobs.Add(new BenchJob("on-demand", $"min ({ByteSize.Format(minimum)})", ExpertMemory.OfBytes(minimum), EvictionPolicyKind.Lru, PredictorKind.None));
        var o = engine.Options(parse, null, "score");
        string pregateFile = o.PredictorFile ?? LinearPregate.DefaultPath(_modelPath);
        string? noPregate = File.Exists(pregateFile) ? null : $"no calibrated predictor at {pregateFile} (pregate calibrate)";
        string? noGating = o.PrefetchGating.IsOff ? "prefetch gating is off on the command line" : null;
        foreach (var budget in budgets.Where(b => !b.IsResident))
        {
            string label = budget.ToString();
            jobs.Add(new BenchJob("cache", label, budget, EvictionPolicyKind.Score, PredictorKind.None));
            foreach (var (name, kind, skip) in new[] { ("next-gate", PredictorKind.NextGate, null), ("pregate", PredictorKind.Pregate, noPregate), ("oracle", PredictorKind.Oracle, null) })
            {
                jobs.Add(new BenchJob($"cache+{name}", label, budget, EvictionPolicyKind.Score, kind, Gating: PrefetchGating.Off) { Skip = skip });
                jobs.Add(new BenchJob($"cache+{name} (gated)", label, budget, EvictionPolicyKind.Score, kind, Gating: o.PrefetchGating) { Skip = skip ?? noGating });
            }
        }
        jobs.Add(new BenchJob("resident", "all", ExpertMemory.All, EvictionPolicyKind.Score, PredictorKind.None));
        if (vsLlama) jobs.Add(new BenchJob("llama.cpp", "mmap", ExpertMemory.All, EvictionPolicyKind.Score, null, LlamaPeer: true));
        return Run("ablation", ForEachBatch(jobs));
    }

    /// <summary>Each budget × policy (with the predictor the command line asks for); a resident budget runs once.</summary>
    public int RunSweep(IReadOnlyList<ExpertMemory> budgets, IReadOnlyList<EvictionPolicyKind> policies)
    {
        var predictor = engine.Options(parse, null, "score").Predictor;
        var jobs = new List<BenchJob>();
        foreach (var budget in budgets)
        {
            if (budget.IsResident)
            {
                jobs.Add(new BenchJob("resident", "all", budget, policies[0], predictor));
                continue;
            }
            foreach (var policy in policies.Distinct())
                jobs.Add(new BenchJob(PolicyName(policy), budget.ToString(), budget, policy, predictor));
        }
        if (vsLlama) jobs.Add(new BenchJob("llama.cpp", "mmap", ExpertMemory.All, policies[0], null, LlamaPeer: true));
        return Run("sweep", ForEachBatch(jobs));
    }

    private int Run(string mode, List<BenchJob> jobs)
    {
        var baseOptions = engine.Options(parse, null, "score");
        var (minimum, expertBytes) = BudgetLimits();
        for (int i = 0; i < jobs.Count; i++)
            if (!jobs[i].Memory.IsResident && jobs[i].Skip is null && jobs[i].Memory.BudgetBytes(expertBytes) < minimum)
                jobs[i] = jobs[i] with { Skip = $"below this model's minimum of {ByteSize.Format(minimum)} (one layer's top-k slots)" };
        string dir = outDir ?? Path.Combine(".", $"{mode}-{DateTime.UtcNow:yyyyMMdd-HHmmss}");
        if (memoryCap is long cap)
            using (MemoryCgroup.Create(GroupName("probe"), cap)) { } // fails early (exit 1) where cgroup v1 memory is unavailable
        // The oracle replays the routing of the same workload: one recording per batch size (its sequences differ).
        var traces = new Dictionary<int, RoutingTrace>();
        var traceFiles = new Dictionary<int, string>();
        foreach (int batch in jobs.Where(j => j.Predictor == PredictorKind.Oracle && j.Skip is null).Select(j => j.Batch).Distinct())
        {
            stderr.WriteLine(batch == 1
                ? "bench: recording the routing of one resident pass for the oracle predictor..."
                : $"bench: recording the routing of one resident pass (batch {batch}) for the oracle predictor...");
            var trace = traces[batch] = BenchCommand.RecordTrace(_modelPath, baseOptions, settings with { Batch = batch }, textPath);
            if (memoryCap is not null)
            {
                string file = traceFiles[batch] = Path.Combine(Path.GetTempPath(), $"pregate-routing-{Environment.ProcessId}-{batch}.bin");
                using var fs = File.Create(file);
                trace.Save(fs);
            }
        }
        if (jobs.Any(j => j.Skip is null && !j.LlamaPeer && !j.Memory.IsResident))
        {
            if (memoryCap is not null) MemoryCgroup.DropPageCache();
            _diskBytesPerSecond = MeasureDisk();
            stderr.WriteLine(Inv($"bench: the disk reads experts at {_diskBytesPerSecond / 1e9:0.00} GB/s (the best of 4 rounds of random experts, read part by part as the loader does, {DiskProbeInFlight} at a time)"));
        }
        BenchCommand.LlamaPeer? peer = jobs.Any(j => j.LlamaPeer) ? BenchCommand.LlamaPeer.Prepare(stderr) : null;
        var rows = new List<BenchRow>();
        bool dropped = true;
        try
        {
            for (int i = 0; i < jobs.Count; i++)
            {
                var job = jobs[i];
                string batchNote = Batched ? $", batch {job.Batch}" : "";
                stderr.WriteLine($"bench: [{i + 1}/{jobs.Count}] {job.Config}, expert memory {job.Budget}{batchNote}{(job.Skip is null ? "" : " — skipped: " + job.Skip)}");
                if (job.Skip is not null)
                {
                    rows.Add(new BenchRow(job, "skipped", job.Skip, null, null, null));
                    continue;
                }
                if (memoryCap is not null) dropped &= MemoryCgroup.DropPageCache();
                var row = job.LlamaPeer ? RunPeer(job, peer!)
                    : memoryCap is long c ? RunChild(job, c, traceFiles.GetValueOrDefault(job.Batch))
                    : RunHere(job, baseOptions, traces.GetValueOrDefault(job.Batch));
                if (row.Status != "ok") stderr.WriteLine($"bench: {job.Config} at {job.Budget}{batchNote} {row.Status}: {row.Note}");
                rows.Add(row);
            }
        }
        finally
        {
            foreach (string file in traceFiles.Values) File.Delete(file);
        }

        Directory.CreateDirectory(dir);
        string results = Json(mode, rows, memoryCap is null ? null : dropped);
        AtomicFile.WriteAllText(Path.Combine(dir, "results.json"), results);
        string markdown = Markdown(mode, rows, memoryCap is null ? null : dropped);
        AtomicFile.WriteAllText(Path.Combine(dir, "results.md"), markdown);
        AtomicFile.WriteAllBytes(Path.Combine(dir, "chart.png"), BenchChart.Render(mode, rows, Path.GetFileName(_modelPath), Batched));
        if (json) stdout.Write(results);
        else stdout.Write(markdown);
        stderr.WriteLine($"bench: wrote {Path.Combine(dir, "results.json")}, results.md and chart.png");
        if (rows.Any(r => r.Status == "failed"))
        {
            stderr.WriteLine("error: some configurations failed (see results.md)");
            return Cli.ExitUserError;
        }
        return 0;
    }

    // In this process: the bench of one configuration, its JSON kept; the peak RSS is reset first where Linux allows.
    private BenchRow RunHere(BenchJob job, EngineOptions baseOptions, RoutingTrace? trace)
    {
        ResetPeakRss();
        var options = baseOptions with
        {
            ExpertMemory = job.Memory, CachePolicy = job.Policy, Predictor = job.Predictor, OracleTrace = job.Predictor == PredictorKind.Oracle ? trace : null,
            PrefetchGating = job.Gating ?? baseOptions.PrefetchGating,
        };
        string? text = null;
        try
        {
            new BenchCommand.SingleRun(_modelPath, options, SettingsOf(job), rounds, textPath, false, null).Execute(stderr, report =>
            {
                using var w = new StringWriter(CultureInfo.InvariantCulture);
                report.WriteJson(w);
                text = w.ToString();
            });
        }
        catch (UserException e)
        {
            return new BenchRow(job, "failed", e.Message, null, null, null);
        }
        var bench = JsonDocument.Parse(text!).RootElement.Clone();
        long? peak = bench.TryGetProperty("peak_rss_bytes", out var p) && p.ValueKind == JsonValueKind.Number ? p.GetInt64() : null;
        return new BenchRow(job, "ok", null, bench, peak, null);
    }

    // A child `pregate bench --json` in a fresh memory group: the cgroup's peak usage and limit hits are the row's memory.
    private BenchRow RunChild(BenchJob job, long cap, string? traceFile)
    {
        var args = new List<string>(SelfArguments())
        {
            "bench", "--json", "--model", _modelPath, "--expert-memory", BudgetArgument(job.Memory), "--cache", PolicyName(job.Policy),
            "--batch", job.Batch.ToString(CultureInfo.InvariantCulture),
        };
        if (job.Predictor is PredictorKind kind)
        {
            args.AddRange(["--predictor", PredictorKinds.Name(kind)]);
            if (kind == PredictorKind.Oracle) args.AddRange(["--oracle-trace", traceFile!]);
        }
        var gating = job.Gating ?? engine.Gating(parse);
        args.AddRange(["--prefetch-min-prob", gating.MinProbability.ToString("R", CultureInfo.InvariantCulture), "--prefetch-evict", gating.ProtectValuable ? "cheaper" : "any",
            "--prefetch-reads", gating.MaxWrongReads.ToString(CultureInfo.InvariantCulture)]);
        args.AddRange(CommonArguments());
        using var group = MemoryCgroup.Create(GroupName(job.Config), cap);
        var (code, output, errors) = Execute(MemoryCgroup.StartInfo(group, SelfExecutable(), args));
        long peak = group.MaxUsageBytes, hits = group.LimitHits;
        if (code != 0)
        {
            string why = code is 137 or -9 ? "killed (out of memory under the cap?)" : $"exit code {code}";
            return new BenchRow(job, "failed", $"{why}: {LastLine(errors)}", null, peak, hits);
        }
        try { return new BenchRow(job, "ok", null, JsonDocument.Parse(output).RootElement.Clone(), peak, hits); }
        catch (JsonException e) { return new BenchRow(job, "failed", $"the child printed no JSON result ({e.Message})", null, peak, hits); }
    }

    // llama.cpp (the LLamaSharp peer) for the same workload: median of the rounds, each in its own group when capped.
    private BenchRow RunPeer(BenchJob job, BenchCommand.LlamaPeer peer)
    {
        int threads = parse.GetValue(engine.Threads) is > 0 and var t ? t : Environment.ProcessorCount;
        var results = new List<BenchCommand.PeerResult>();
        long? peak = null, hits = null;
        try
        {
            for (int r = 0; r < rounds; r++)
            {
                if (memoryCap is long cap)
                {
                    using var group = MemoryCgroup.Create(GroupName("llama"), cap);
                    results.Add(peer.Run(_modelPath, threads, SettingsOf(job), group));
                    peak = Math.Max(peak ?? 0, group.MaxUsageBytes);
                    hits = (hits ?? 0) + group.LimitHits;
                }
                else results.Add(peer.Run(_modelPath, threads, SettingsOf(job)));
            }
        }
        catch (UserException e)
        {
            return new BenchRow(job, "failed", e.Message, null, peak, hits);
        }
        peak ??= results.Max(x => x.PeakRssBytes);
        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteNumber("prefill_tok_s", Median(results.Select(x => x.PrefillTokensPerSecond)));
            w.WriteNumber("decode_tok_s", Median(results.Select(x => x.DecodeTokensPerSecond)));
            w.WriteString("kv_type", results[0].KvType);
            w.WriteEndObject();
        }
        return new BenchRow(job, "ok", "llama.cpp (LLamaSharp), memory-mapped", JsonDocument.Parse(ms.ToArray()).RootElement.Clone(), peak, hits);
    }

    // The workload's options, passed on to a child unchanged.
    private IEnumerable<string> CommonArguments()
    {
        string Num(long n) => n.ToString(CultureInfo.InvariantCulture);
        yield return "--prompt-tokens"; yield return Num(settings.PromptTokens);
        yield return "--gen-tokens"; yield return Num(settings.GenTokens);
        yield return "--decode"; yield return settings.Decode == BenchmarkDecode.Greedy ? "greedy" : "forced";
        yield return "--seed"; yield return settings.Seed.ToString(CultureInfo.InvariantCulture);
        yield return "--rounds"; yield return Num(rounds);
        yield return "--threads"; yield return Num(parse.GetValue(engine.Threads));
        yield return "--lookahead"; yield return Num(parse.GetValue(engine.Lookahead));
        yield return "--predict-extra"; yield return Num(parse.GetValue(engine.PredictExtra));
        yield return "--on-miss"; yield return parse.GetValue(engine.OnMiss)!;
        if (parse.GetResult(engine.LowPrecisionBelow) is { Implicit: false })
        {
            yield return "--low-precision-below"; yield return parse.GetValue(engine.LowPrecisionBelow).ToString("R", CultureInfo.InvariantCulture);
        }
        yield return "--interleave"; yield return parse.GetValue(engine.Interleave)!;
        if (parse.GetValue(engine.Context) is int ctx) { yield return "--ctx"; yield return Num(ctx); }
        if (parse.GetValue(engine.PredictorFile) is string file) { yield return "--predictor-file"; yield return Path.GetFullPath(file); }
        if (textPath is not null) { yield return "--text"; yield return Path.GetFullPath(textPath); }
    }

    /// <summary>The budget as --expert-memory text that parses back to exactly the same value.</summary>
    internal static string BudgetArgument(ExpertMemory m) => m.Kind switch
    {
        ExpertMemoryKind.Bytes => m.Bytes.ToString(CultureInfo.InvariantCulture) + "B",
        ExpertMemoryKind.Fraction => (m.Fraction * 100).ToString("R", CultureInfo.InvariantCulture) + "%",
        _ => "all",
    };

    // This program: its own executable (the apphost), or the dotnet host with this assembly when run as `dotnet Pregate.Cli.dll`
    // or from another host.
    private static string SelfExecutable()
    {
        string? process = Environment.ProcessPath;
        string name = typeof(BenchMatrix).Assembly.GetName().Name!;
        if (process is not null && Path.GetFileNameWithoutExtension(process).Equals(name, StringComparison.Ordinal)) return process;
        if (process is not null && Path.GetFileNameWithoutExtension(process).Equals("dotnet", StringComparison.Ordinal)) return process;
        return Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host ? host : "dotnet";
    }

    private static IEnumerable<string> SelfArguments()
    {
        string? process = Environment.ProcessPath;
        string name = typeof(BenchMatrix).Assembly.GetName().Name!;
        return process is not null && Path.GetFileNameWithoutExtension(process).Equals(name, StringComparison.Ordinal)
            ? []
            : [Path.Combine(AppContext.BaseDirectory, name + ".dll")];
    }

    private long MinimumBudget() => BudgetLimits().Minimum;

    // The loader's I/O threads: as many expert reads in flight as an offloaded run keeps.
    private static int DiskProbeInFlight => new ExpertLoaderOptions().IoThreads;

    private double? _diskBytesPerSecond;

    // The rate the disk gives the loader's reads (O_DIRECT, its parts, its reads in flight), the yardstick of "disk use"
    // (decode's read rate over it): the best of four rounds of random experts, about 1 GiB each (at most half the
    // experts). The rounds read the same two halves by turns, so the later ones see what a device cache keeps of the
    // first, as the decode loops, which read the same experts over and over, do.
    private double MeasureDisk()
    {
        using var ck = Checkpoint.Open(_modelPath);
        var layout = OffloadedExperts.LayoutOf(ck);
        int total = layout.LayerCount * layout.ExpertCount;
        int perRound = (int)Math.Clamp((1L << 30) / Math.Max(1, layout.SlotBytes), 1, total / 2);
        return ExpertReadBenchmark.Run(layout, perRound, DiskProbeInFlight, rounds: 4, settings.Seed).Max(r => r.PartReadsBytesPerSecond);
    }

    private double? DiskUse(BenchRow r) =>
        _diskBytesPerSecond is double disk && r.Number("decode_read_gb_s") is double gbs ? gbs * 1e9 / disk : null;

    // The smallest budget the model accepts and the bytes of all its routed experts.
    private (long Minimum, long ExpertBytes) BudgetLimits()
    {
        using var ck = Checkpoint.Open(_modelPath);
        var layout = OffloadedExperts.LayoutOf(ck);
        return (OffloadedExperts.MinimumBudgetBytes(layout, ck.Config.NumExpertsUsed), layout.TotalBytes);
    }

    private static string GroupName(string config) =>
        $"pregate-bench-{Environment.ProcessId}-{new string(config.Select(ch => char.IsAsciiLetterOrDigit(ch) ? ch : '-').ToArray())}";

    private static void ResetPeakRss()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); } // resets VmHWM (Linux 4.0+)
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
    }

    private (int Code, string Stdout, string Stderr) Execute(ProcessStartInfo psi)
    {
        using var process = Process.Start(psi) ?? throw new UserException($"could not start {psi.FileName}");
        var errors = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        foreach (string line in errors.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries)) stderr.WriteLine("  " + line);
        return (process.ExitCode, output, errors.Result);
    }

    private static string LastLine(string text) => text.Split('\n', StringSplitOptions.RemoveEmptyEntries).LastOrDefault() ?? "";

    private static string PolicyName(EvictionPolicyKind p) => p.ToString().ToLowerInvariant();

    private static double Median(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
    }

    private string Json(string mode, List<BenchRow> rows, bool? pageCacheDropped)
    {
        var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("mode", mode);
            w.WriteString("model", _modelPath);
            w.WriteNumber("prompt_tokens", settings.PromptTokens);
            w.WriteNumber("gen_tokens", settings.GenTokens);
            w.WriteStartArray("batches");
            foreach (int b in batches) w.WriteNumberValue(b);
            w.WriteEndArray();
            w.WriteNumber("rounds", rounds);
            if (_diskBytesPerSecond is double disk) w.WriteNumber("disk_read_gb_s", disk / 1e9);
            else w.WriteNull("disk_read_gb_s");
            if (memoryCap is long cap) w.WriteNumber("memory_cap_bytes", cap);
            else w.WriteNull("memory_cap_bytes");
            if (pageCacheDropped is bool d) w.WriteBoolean("page_cache_dropped", d);
            else w.WriteNull("page_cache_dropped");
            w.WriteString("peak_memory_source", memoryCap is null ? "peak RSS of this process during the configuration (VmHWM, reset before each)" : "cgroup memory.max_usage_in_bytes");
            w.WriteStartArray("rows");
            foreach (var r in rows)
            {
                w.WriteStartObject();
                w.WriteString("config", r.Job.Config);
                w.WriteString("budget", r.Job.Budget);
                w.WriteNumber("batch", r.Job.Batch);
                w.WriteString("cache_policy", r.Job.LlamaPeer || r.Job.Memory.IsResident ? null : PolicyName(r.Job.Policy));
                w.WriteString("predictor", r.Job.Predictor is PredictorKind k && !r.Job.Memory.IsResident ? PredictorKinds.Name(k) : null);
                w.WriteString("prefetch_gating", r.Job.Predictor is PredictorKind and not PredictorKind.None && !r.Job.Memory.IsResident && !r.Job.LlamaPeer
                    ? (r.Job.Gating ?? engine.Gating(parse)).ToString() : null);
                w.WriteString("status", r.Status);
                w.WriteString("note", r.Note);
                foreach (string field in (string[])["decode_tok_s", "prefill_tok_s", "expert_hit_rate", "prediction_recall", "prediction_precision", "prefetch_precision",
                             "stall_ms_per_token", "io_busy_fraction", "bytes_read_per_token", "decode_bytes_read_per_token", "decode_read_gb_s",
                             "decode_io_busy_fraction", "decode_stall_ms_per_token", "prefetch_bytes_wasted", "prefetches_skipped_unlikely",
                             "prefetches_skipped_valuable", "prefetches_skipped_busy", "expert_memory_bytes"])
                {
                    if (r.Number(field) is double v) w.WriteNumber(field, v);
                    else w.WriteNull(field);
                }
                if (DiskUse(r) is double use) w.WriteNumber("disk_use", use);
                else w.WriteNull("disk_use");
                if (r.PeakMemoryBytes is long peak) w.WriteNumber("peak_memory_bytes", peak);
                else w.WriteNull("peak_memory_bytes");
                if (r.LimitHits is long hits) w.WriteNumber("memory_limit_hits", hits);
                else w.WriteNull("memory_limit_hits");
                w.WritePropertyName("bench");
                if (r.Bench is { } b) b.WriteTo(w);
                else w.WriteNullValue();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(ms.ToArray()) + "\n";
    }

    private string Markdown(string mode, List<BenchRow> rows, bool? pageCacheDropped)
    {
        var s = new StringBuilder();
        s.AppendLine(Inv($"# bench {mode}: {Path.GetFileName(_modelPath)}"));
        s.AppendLine();
        s.Append(Inv($"Prompt {settings.PromptTokens} tokens, {settings.GenTokens} decoded ({(settings.Decode == BenchmarkDecode.Greedy ? "greedy" : "forced")}), median of {rounds} rounds"));
        s.AppendLine(memoryCap is long cap
            ? Inv($"; each configuration in a child process under a {ByteSize.Format(cap)} cgroup memory cap{(pageCacheDropped == true ? ", page cache dropped before each" : ", page cache NOT dropped (not writable)")}.")
            : "; all configurations in one process (no memory cap).");
        if (parse.GetValue(engine.OnMiss) is string miss && miss != "load") s.AppendLine(Inv($"Missed experts: --on-miss {miss}."));
        s.AppendLine();
        string batchHead = Batched ? " batch |" : "", batchRule = Batched ? "---:|" : "";
        s.AppendLine($"| config | budget |{batchHead} decode tok/s | prefill tok/s | hit rate | recall | precision | stall ms/token | io busy | bytes read/token | disk use | skipped u/v/b | peak memory |");
        s.AppendLine($"|---|---|{batchRule}---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
        {
            string batchCell = Batched ? Inv($" {r.Job.Batch} |") : "";
            if (r.Status != "ok")
            {
                s.AppendLine($"| {r.Job.Config} | {r.Job.Budget} |{batchCell} {r.Status}: {r.Note?.Replace('|', '/')} | | | | | | | | | | {Bytes(r.PeakMemoryBytes)} |");
                continue;
            }
            s.AppendLine(Inv($"| {r.Job.Config} | {r.Job.Budget} |{batchCell} {Fixed(r.Number("decode_tok_s"))} | {Fixed(r.Number("prefill_tok_s"))} | {Percent(r.Number("expert_hit_rate"))} | ") +
                Inv($"{Percent(r.Number("prediction_recall"))} | {Percent(r.Number("prediction_precision"))} | {Fixed(r.Number("decode_stall_ms_per_token"), "0.000")} | ") +
                Inv($"{Percent(r.Number("decode_io_busy_fraction"))} | {Bytes(r.Number("decode_bytes_read_per_token") is double b ? (long)b : null)} | {Percent(DiskUse(r))} | ") +
                Inv($"{Skipped(r)} | {Bytes(r.PeakMemoryBytes)}{(r.LimitHits is > 0 ? Inv($" ({r.LimitHits} limit hits)") : "")} |"));
        }
        s.AppendLine();
        if (mode == "ablation")
            s.Append("on-demand: no predictor, LRU, the minimum budget (one layer's top-k slots: nothing is reused beyond the layer being computed). " +
                     "cache: the score policy without a predictor; cache+X: the score policy with predictor X (oracle: the routing recorded in a resident run), " +
                     Inv($"every guess prefetched; (gated): prefetches gated ({engine.Gating(parse)}). "));
        else
            s.Append(Inv($"config: the cache policy; predictor: {(engine.Options(parse, null, "score").Predictor is PredictorKind k ? PredictorKinds.Name(k) : "the default (pregate when calibrated, else next-gate)")}. "));
        if (Batched)
            s.Append("batch: sequences decoding together, each with its own prompt (prefilled one after the other) and stream; decode and prefill tok/s " +
                     "count the tokens of every sequence, and the guesses of a step's sequences are prefetched once where they agree. ");
        s.AppendLine("recall / precision: of the experts a decoded token's layer routed to, the share guessed one layer ahead / of the guesses, the share " +
                     "routed to. skipped u/v/b: prefetches the gates turned down as unlikely / as evicting a more valuable expert / for a busy disk. " +
                     "stall, io busy and bytes read: of the measured decode loops alone; disk use: their read rate over the disk's rate for the loader's reads" +
                     (_diskBytesPerSecond is double disk ? Inv($" ({disk / 1e9:0.00} GB/s, measured at start)") : "") +
                     ". Hit rates and recall are averaged over every pass (warm-up included).");
        return s.ToString();
    }

    private static string Skipped(BenchRow r) =>
        r.Number("prefetches_skipped_unlikely") is double u && r.Number("prefetches_skipped_valuable") is double v && r.Number("prefetches_skipped_busy") is double b
            ? Inv($"{u:0}/{v:0}/{b:0}") : "-";

    private static string Inv(FormattableString f) => f.ToString(CultureInfo.InvariantCulture);

    private static string Fixed(double? v, string format = "0.0") => v is double d ? d.ToString(format, CultureInfo.InvariantCulture) : "-";
    private static string Percent(double? v) => v is double d ? (d * 100).ToString("0.0", CultureInfo.InvariantCulture) + "%" : "-";
    private static string Bytes(long? v) => v is long b ? ByteSize.Format(b) : "-";
}
