// Options shared by every command that runs a model (run, logits, bench, serve, chat), and opening the model from them.
using System.CommandLine;
using System.Globalization;
using Pregate.Cuda;
using Pregate.Cuda.Native;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Experts.Prediction;
using Pregate.Models;

namespace Pregate.Cli;

internal sealed class EngineOptionSet
{
    public readonly Option<string?> Model = new("--model") { Description = $"GGUF file or Hugging Face checkpoint folder (default: the shipped {DefaultModel.Name})" };
    public readonly Option<int> Threads = new("--threads") { Description = "worker threads (default: one per processor)", DefaultValueFactory = _ => 0 };
    public readonly Option<int?> Context = new("--ctx") { Description = $"context length in tokens (default: the model's, at most {EngineOptions.DefaultMaxContext})" };
    public readonly Option<string?> ExpertMemory = new("--expert-memory")
    {
        Description = "memory for routed experts: a size (2GiB, 512MiB, 1.5GB), a percentage of all expert bytes (25%), or all " +
                      "(resident: experts read in place from the memory map; a size or percentage covering every expert is resident too). Default: all when the model takes at most half the " +
                      "available memory (cgroup limit, MemAvailable), else a budget that fits",
    };
    public readonly Option<string> Cache = new("--cache") { Description = "expert cache eviction policy: score (router-probability score, the default), lru or lfu", DefaultValueFactory = _ => "score" };
    public readonly Option<string> OnMiss = new("--on-miss")
    {
        Description = "what an offloaded run does with an expert that is neither cached nor loading: load (read it into a cache slot, " +
                      "the default), compute (compute it in place from the memory-mapped file, without caching it), auto (per expert, " +
                      "whichever a cost model of disk and page-cache reads finds cheaper), or low-precision (an expert weighted below " +
                      "--low-precision-below is computed from its low-precision copy, see quantize --dual, and the rest load; the one " +
                      "mode whose outputs differ from resident)",
        DefaultValueFactory = _ => "load",
    };

    public readonly Option<float> LowPrecisionBelow = new("--low-precision-below")
    {
        Description = string.Create(CultureInfo.InvariantCulture,
            $"with --on-miss low-precision: the routing weight (after the model's normalisation) below which a missed expert is computed from its low-precision copy; in a prefill block only when every token routed to it weighs it below (default {MissPolicies.DefaultLowPrecisionBelow})"),
        DefaultValueFactory = _ => MissPolicies.DefaultLowPrecisionBelow,
    };

    public readonly Option<string?> Predictor = new("--predictor")
    {
        Description = "how offloaded experts are prefetched: none (on demand), next-gate (the next layer's router on this layer's state), " +
                      "pregate (a calibrated predictor, see calibrate), oracle (bench only: replays the routing of an identical resident run). Default: pregate when its file sits next to the model, else next-gate",
    };
    public readonly Option<string?> PredictorFile = new("--predictor-file") { Description = "the calibrated predictor file (default: next to the model)" };
    public readonly Option<int> Lookahead = new("--lookahead") { Description = "layers ahead to prefetch: 1 or 2", DefaultValueFactory = _ => 1 };
    public readonly Option<int> PredictExtra = new("--predict-extra") { Description = "prefetch the top k + N guesses", DefaultValueFactory = _ => 0 };
    public readonly Option<double> PrefetchMinProb = new("--prefetch-min-prob")
    {
        Description = "prefetch a guess only when the share of such guesses (same lookahead, layer, rank and softmax score) that the layer routed to, counted while running, is at least P; 0 prefetches every guess",
        DefaultValueFactory = _ => PrefetchGating.Default.MinProbability,
    };
    public readonly Option<string> PrefetchEvict = new("--prefetch-evict")
    {
        Description = "which cached experts a prefetch may evict: cheaper (only those used less often than the guess is likely right, the default) or any (the cache policy's victim)",
        DefaultValueFactory = _ => PrefetchGating.Default.ProtectValuable ? "cheaper" : "any",
    };
    public readonly Option<int> PrefetchReads = new("--prefetch-reads")
    {
        Description = "prefetch reads start behind the layer's demand loads, while the wrong guesses expected among those in flight (a guess right with probability q counts 1 - q) stay within N; 0: every prefetch read as soon as guessed",
        DefaultValueFactory = _ => PrefetchGating.Default.MaxWrongReads,
    };
    public readonly Option<string> Interleave = new("--interleave")
    {
        Description = "resident runs: copy the Q8_0/Q4_0 matrices into interleaved rows before the first pass (faster decode, the same results, the copies held in process memory): auto (when they fit in the memory available), on or off (read them in place from the file)",
        DefaultValueFactory = _ => "auto",
    };
    public readonly Option<string> Backend = new("--backend")
    {
        Description = "where the forward pass runs: cpu, or cuda (an NVIDIA GPU; --expert-memory then budgets VRAM, the slow tier is pinned host memory)",
        DefaultValueFactory = _ => "cpu",
    };

    /// <summary>The budget when --expert-memory is not given; null: chosen from the memory available.</summary>
    public Pregate.Engine.ExpertMemory? DefaultExpertMemory { get; init; }

    public void AddTo(Command c)
    {
        foreach (var o in new Option[] { Model, Threads, Context, ExpertMemory, Cache, OnMiss, LowPrecisionBelow, Predictor, PredictorFile, Lookahead, PredictExtra, PrefetchMinProb, PrefetchEvict, PrefetchReads, Interleave, Backend }) c.Options.Add(o);
    }

    public string ModelPath(ParseResult p) => p.GetValue(Model) ?? DefaultModel.Require();

    /// <summary>The engine options the command line asks for.</summary>
    /// <exception cref="UserException">A value is malformed.</exception>
    public EngineOptions Options(ParseResult p) => Options(p, p.GetValue(ExpertMemory), p.GetValue(Cache)!);

    /// <summary>The engine options the command line asks for, with --expert-memory and --cache given as <paramref name="expertMemory"/> and <paramref name="cache"/>.</summary>
    /// <exception cref="UserException">A value is malformed.</exception>
    public EngineOptions Options(ParseResult p, string? expertMemory, string cache)
    {
        Pregate.Engine.ExpertMemory? memory = DefaultExpertMemory;
        if (expertMemory is string text)
        {
            if (!Pregate.Engine.ExpertMemory.TryParse(text, out var m, out string error)) throw new UserException($"--expert-memory: {error}");
            memory = m;
        }
        if (!EvictionPolicy.TryParse(cache, out var policy)) throw new UserException($"--cache must be lru, lfu or score, not '{cache}'");
        string onMiss = p.GetValue(OnMiss)!;
        if (!MissPolicies.TryParse(onMiss, out var missPolicy)) throw new UserException($"--on-miss must be load, compute, auto or low-precision, not '{onMiss}'");
        float lowBelow = p.GetValue(LowPrecisionBelow);
        if (!float.IsFinite(lowBelow) || lowBelow < 0) throw new UserException($"--low-precision-below must be a routing weight of at least 0, not {lowBelow}");
        if (p.GetResult(LowPrecisionBelow) is { Implicit: false } && missPolicy != MissPolicy.LowPrecision)
            throw new UserException("--low-precision-below goes with --on-miss low-precision");
        PredictorKind? predictor = null;
        if (p.GetValue(Predictor) is string name)
        {
            if (!PredictorKinds.TryParse(name, out var kind)) throw new UserException($"--predictor must be none, next-gate, pregate or oracle, not '{name}'");
            predictor = kind;
        }
        var gating = Gating(p);
        string interleave = p.GetValue(Interleave)!.ToLowerInvariant();
        var interleaveMode = interleave switch
        {
            "auto" => InterleaveMode.Auto,
            "on" => InterleaveMode.On,
            "off" => InterleaveMode.Off,
            _ => throw new UserException($"--interleave must be auto, on or off, not '{interleave}'"),
        };
        string backend = p.GetValue(Backend)!.ToLowerInvariant();
        if (backend is not ("cpu" or "cuda")) throw new UserException($"--backend must be cpu or cuda, not '{backend}'");
        return new EngineOptions
        {
            Backend = backend == "cuda" ? CreateCudaEngine : null,
            Threads = p.GetValue(Threads), Context = p.GetValue(Context), ExpertMemory = memory, CachePolicy = policy, OnMiss = missPolicy, LowPrecisionBelow = lowBelow,
            Predictor = predictor, PredictorFile = p.GetValue(PredictorFile), Lookahead = p.GetValue(Lookahead), PredictExtra = p.GetValue(PredictExtra),
            PrefetchGating = gating, Interleave = interleaveMode,
        };
    }

    /// <summary>The prefetch gating of --prefetch-min-prob, --prefetch-evict and --prefetch-reads.</summary>
    /// <exception cref="UserException">A value is out of range.</exception>
    public PrefetchGating Gating(ParseResult p)
    {
        double minProb = p.GetValue(PrefetchMinProb);
        if (!(minProb >= 0 && minProb <= 1)) throw new UserException($"--prefetch-min-prob must lie between 0 and 1, not {minProb.ToString(CultureInfo.InvariantCulture)}");
        string evict = p.GetValue(PrefetchEvict)!.ToLowerInvariant();
        if (evict is not ("cheaper" or "any")) throw new UserException($"--prefetch-evict must be cheaper or any, not '{evict}'");
        int reads = p.GetValue(PrefetchReads);
        if (reads < 0) throw new UserException($"--prefetch-reads must be at least 0, not {reads}");
        return new PrefetchGating { MinProbability = minProb, ProtectValuable = evict == "cheaper", MaxWrongReads = reads };
    }

    public ModelSession Open(ParseResult p)
    {
        var o = Options(p);
        try { return ModelSession.Open(ModelPath(p), o); }
        catch (ArgumentException e) { throw new UserException(e.Message); }
    }

    // A missing driver, library or device is the user's to fix: shown without a stack trace, exit code 1, from every
    // command that opens a session.
    private static IForwardBackend CreateCudaEngine(BackendRequest request)
    {
        try { return CudaEngine.Create(request); }
        catch (CudaException e) { throw new UserException(e.Message); }
    }

    /// <summary>Opens the model and writes where its experts live (one line) to <paramref name="log"/>.</summary>
    public ModelSession Open(ParseResult p, TextWriter log)
    {
        var session = Open(p);
        log.WriteLine(session.DescribePlacement());
        return session;
    }

    /// <summary>
    /// One line of expert figures over a stretch (a difference of two snapshots), e.g. "experts: 96.0% hits (12 misses of 300),
    /// 110 MiB read (1.10 MiB/token), stall 0.84 ms/token, I/O busy 31%"; for resident experts "experts: resident, no expert I/O".
    /// </summary>
    public static string DescribeStats(ExpertPlacement placement, ExpertStats s)
    {
        if (!placement.Offloaded) return "experts: resident, no expert I/O";
        long uses = s.Cache.Hits + s.Cache.Misses;
        string prediction = s.PredictionRecall is double r
            ? string.Create(CultureInfo.InvariantCulture, $", prefetches {s.Cache.PrefetchHits} used / {s.Cache.PrefetchesWasted} wasted") +
              (s.Cache.PrefetchesSkipped == 0 ? "" : $" / {s.Cache.PrefetchesSkipped} skipped") +
              string.Create(CultureInfo.InvariantCulture, $", prediction recall {r * 100:0.0}%")
            : "";
        string inPlace = s.ComputedInPlace == 0 ? "" : $", {s.ComputedInPlace} computed in place ({ByteSize.Format(s.ComputedInPlaceBytes)} from the map)";
        string low = placement.LowPrecisionType is not { } type ? "" : string.Create(CultureInfo.InvariantCulture,
            $", {s.ComputedLowPrecision} of {s.ExpertUses} routed experts ({s.LowPrecisionShare * 100:0.0}%) from {Core.DTypes.Name(type)} copies " +
            $"({ByteSize.Format(s.ComputedLowPrecisionBytes)} from the map)");
        string total = s.ComputedInPlaceBytes + s.ComputedLowPrecisionBytes == 0 ? "" : $", {ByteSize.Format((long)s.ExpertBytesPerToken)}/token in all";
        return string.Create(CultureInfo.InvariantCulture,
            $"experts: {s.HitRate * 100:0.0}% hits ({s.Misses} misses of {uses} uses over {s.Tokens} tokens), {ByteSize.Format(s.BytesRead)} read " +
            $"({ByteSize.Format((long)s.BytesPerToken)}/token), stall {s.StallMsPerToken:0.00} ms/token, I/O busy {s.IoBusyFraction * 100:0}%{inPlace}{low}{total}{prediction}");
    }
}
