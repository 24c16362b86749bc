// A loaded model ready to run: checkpoint, bound model, tokenizer, worker threads and one sequence state.
// The library's entry point and what every CLI command that executes a model builds on.
using Pregate.Core;
using Pregate.Experts;
using Pregate.Experts.Prediction;
using Pregate.Formats;
using Pregate.Formats.Tokenizers;
using Pregate.Kernels;
using Pregate.Models;

namespace Pregate.Engine;

/// <summary>Settings shared by everything that runs a model.</summary>
public sealed record EngineOptions
{
    /// <summary>Worker threads for the kernels; 0 = one per processor.</summary>
    public int Threads { get; init; }

    /// <summary>KV cache length in tokens; null = the model's context length, capped at <see cref="DefaultMaxContext"/>.</summary>
    public int? Context { get; init; }

    public const int DefaultMaxContext = 4096;

    /// <summary>
    /// Memory for the routed experts: <see cref="Engine.ExpertMemory.All"/> reads them in place from the memory map (resident);
    /// a size or fraction keeps them in the files and caches that many bytes of them in RAM slots (offloaded); null chooses
    /// (<see cref="Engine.ExpertMemory.Automatic"/> over <see cref="SystemMemory.AvailableBytes"/>).
    /// </summary>
    public ExpertMemory? ExpertMemory { get; init; }

    /// <summary>Which cached expert an offloaded run evicts first (see <see cref="OffloadOptions.Policy"/> for why score is the default).</summary>
    public EvictionPolicyKind CachePolicy { get; init; } = EvictionPolicyKind.Score;

    /// <summary>What an offloaded run does with an expert that is neither cached nor loading (see <see cref="MissPolicy"/>).</summary>
    public MissPolicy OnMiss { get; init; } = MissPolicy.Load;

    /// <summary>
    /// With <see cref="MissPolicy.LowPrecision"/>: a missed expert whose routing weight (after the model's normalisation) is
    /// below this is computed from its low-precision copy (see <see cref="OffloadOptions.LowPrecisionBelow"/>).
    /// </summary>
    public float LowPrecisionBelow { get; init; } = MissPolicies.DefaultLowPrecisionBelow;

    /// <summary>
    /// True (the default): a budget of at least all routed-expert bytes means resident, as <c>all</c> does (the page cache
    /// then holds at most what the budget allows). False keeps offloading with a slot for every expert (to measure the cache).
    /// </summary>
    public bool ResidentWhenBudgetCoversAll { get; init; } = true;

    /// <summary>
    /// Which predictor prefetches experts when they are offloaded; null = pregate when a calibrated predictor file is found
    /// (see <see cref="PredictorFile"/>), else next-gate.
    /// </summary>
    public PredictorKind? Predictor { get; init; }

    /// <summary>The calibrated predictor file; null = the default place next to the model.</summary>
    public string? PredictorFile { get; init; }

    /// <summary>Layers ahead to prefetch (1 or 2).</summary>
    public int Lookahead { get; init; } = 1;

    /// <summary>Guesses beyond top-k to prefetch.</summary>
    public int PredictExtra { get; init; }

    /// <summary>
    /// Which of the predictor's guesses an offloaded run reads, and when (<see cref="Experts.PrefetchGating"/>): by default
    /// only likely guesses, never evicting a more valuable expert, and only while the disk has no demand load.
    /// </summary>
    public PrefetchGating PrefetchGating { get; init; } = PrefetchGating.Default;

    /// <summary>
    /// Whether a resident run copies its Q8_0 and Q4_0 matrices into interleaved rows before the first forward pass
    /// (<see cref="MoeModel.InterleaveWeights"/>): faster one-token products with the same bits, the copies held in process
    /// memory instead of the file's page cache. <see cref="InterleaveMode.Auto"/> copies when they fit in the memory available.
    /// </summary>
    public InterleaveMode Interleave { get; init; } = InterleaveMode.Auto;

    /// <summary>The recorded routing the oracle predictor replays (<see cref="PredictorKind.Oracle"/> needs it; benchmarks record it).</summary>
    public RoutingTrace? OracleTrace { get; init; }

    /// <summary>
    /// Builds the device that runs every forward pass (the CUDA engine); null runs on the CPU. With a backend the CPU side
    /// maps the experts in place and the backend applies <see cref="ExpertMemory"/> to its own memory.
    /// </summary>
    public Func<BackendRequest, IForwardBackend>? Backend { get; init; }

    public void Validate()
    {
        if (Threads < 0 || Threads > 1024) throw new ArgumentException($"threads must be between 1 and 1024 (0 = automatic), not {Threads}");
        if (Context is int c && c < 1) throw new ArgumentException($"context must be at least 1 token, not {c}");
        if (Lookahead is < 1 or > 2) throw new ArgumentException($"lookahead must be 1 or 2, not {Lookahead}");
        if (PredictExtra < 0) throw new ArgumentException($"predict-extra must be at least 0, not {PredictExtra}");
        if (!float.IsFinite(LowPrecisionBelow) || LowPrecisionBelow < 0)
            throw new ArgumentException($"low-precision-below must be a routing weight of at least 0, not {LowPrecisionBelow}");
        ArgumentNullException.ThrowIfNull(PrefetchGating);
        PrefetchGating.Validate();
        if (Backend is not null && OnMiss != MissPolicy.Load)
            throw new ArgumentException($"on-miss {MissPolicies.Name(OnMiss)} runs on the CPU only: the CUDA backend loads every missed expert into its memory (use on-miss load)");
        if (Predictor == PredictorKind.Oracle && OracleTrace is null)
            throw new ArgumentException("the oracle predictor replays the routing of an identical earlier run: only pregate bench records one; use none, next-gate or pregate");
    }
}

/// <summary>When a resident run copies its quantized matrices into interleaved rows (see <see cref="EngineOptions.Interleave"/>).</summary>
public enum InterleaveMode
{
    /// <summary>Copy when the copies (and the KV cache) fit in 90% of <see cref="SystemMemory.AvailableBytes"/> (or it is unknown).</summary>
    Auto,
    /// <summary>Always copy (a model larger than memory is then killed rather than paged from its file).</summary>
    On,
    /// <summary>Never copy: read every matrix in place from the memory map (pages the kernel may drop and read again).</summary>
    Off,
}

/// <summary>
/// Where a session keeps its routed experts: resident (the memory map) or offloaded to a cache of
/// <see cref="SlotCount"/> slots of <see cref="SlotBytes"/> within <see cref="BudgetBytes"/>.
/// </summary>
/// <param name="Automatic">Chosen from the memory available (<see cref="AvailableBytes"/>) because no budget was given.</param>
/// <param name="ExpertBytes">Σ bytes of all routed experts.</param>
/// <param name="DirectIo">Offloaded reads bypass the page cache (O_DIRECT).</param>
/// <param name="OnMiss">What an offloaded run does with a missed expert.</param>
/// <param name="BudgetCoversAll">Resident because the budget given (<see cref="BudgetBytes"/>) covers every routed expert.</param>
/// <param name="LowPrecisionType">With <see cref="MissPolicy.LowPrecision"/>: the type of the copies missed experts are computed from.</param>
/// <param name="LowPrecisionBelow">With <see cref="MissPolicy.LowPrecision"/>: the routing weight below which they are.</param>
/// <param name="Gating">The gates prefetches pass when offloaded with a predictor; null otherwise.</param>
/// <param name="InterleavedBytes">Resident: bytes of the interleaved copies the first forward pass makes (0: none).</param>
/// <param name="InterleaveDeclinedBytes">Resident with <see cref="InterleaveMode.Auto"/>: bytes of the copies that were not made because they would not fit in <see cref="AvailableBytes"/> (0: not declined).</param>
public sealed record ExpertPlacement(
    bool Offloaded,
    bool Automatic,
    long ExpertBytes,
    long BudgetBytes,
    int SlotCount,
    long SlotBytes,
    EvictionPolicyKind Policy,
    bool DirectIo,
    long? AvailableBytes,
    string Predictor = "none",
    MissPolicy OnMiss = MissPolicy.Load,
    bool BudgetCoversAll = false,
    DType? LowPrecisionType = null,
    float LowPrecisionBelow = 0,
    PrefetchGating? Gating = null,
    long InterleavedBytes = 0,
    long InterleaveDeclinedBytes = 0)
{
    /// <summary>
    /// One line: "experts: resident (all 588 MiB mapped)", "experts: resident (all 588 MiB; 600 MiB of Q8_0/Q4_0 weights
    /// copied into interleaved rows)", "experts: resident (all 588 MiB mapped; budget 1 GiB covers every expert)" or "experts: offloaded, budget 200 MiB (21 slots of 9.19 MiB), policy score, predictor next-gate, O_DIRECT on"
    /// (", on miss compute|auto" when not load; ", on miss low-precision (q4_0 copies below weight 0.3)"; ", prefetch gating p ≥ 0.7, cache value, behind demand ≤ 1 wrong read" when guesses are gated).
    /// </summary>
    public string Describe()
    {
        string chosen = Automatic && AvailableBytes is long a ? $"; chosen for {ByteSize.Format(a)} available" : "";
        string covers = BudgetCoversAll ? $"; budget {ByteSize.Format(BudgetBytes)} covers every expert" : "";
        string miss = OnMiss == MissPolicy.Load ? "" : $", on miss {MissPolicies.Name(OnMiss)}";
        if (LowPrecisionType is DType low)
            miss += string.Create(System.Globalization.CultureInfo.InvariantCulture, $" ({DTypes.Name(low)} copies below weight {LowPrecisionBelow:0.###})");
        string gating = Gating is { IsOff: false } g ? $", prefetch gating {g}" : "";
        string declined = InterleaveDeclinedBytes > 0
            ? $"; not interleaved: the {ByteSize.Format(InterleaveDeclinedBytes)} of copies would not fit in the {ByteSize.Format(AvailableBytes ?? 0)} available"
            : "";
        return Offloaded
            ? $"experts: offloaded, budget {ByteSize.Format(BudgetBytes)} ({SlotCount} slots of {ByteSize.Format(SlotBytes)}), " +
              $"policy {Policy.ToString().ToLowerInvariant()}, predictor {Predictor}{gating}{miss}, O_DIRECT {(DirectIo ? "on" : "off")}{chosen}"
            : InterleavedBytes > 0
                ? $"experts: resident (all {ByteSize.Format(ExpertBytes)}; {ByteSize.Format(InterleavedBytes)} of Q8_0/Q4_0 weights copied into interleaved rows{covers}){chosen}"
                : $"experts: resident (all {ByteSize.Format(ExpertBytes)} mapped{covers}{declined}){chosen}";
    }
}

/// <summary>Opens a model and owns what running it needs. Dispose to unmap the file, stop the threads and free the expert cache.</summary>
public sealed class ModelSession : IDisposable
{
    private readonly Lazy<TextTokenizer> _tokenizer;
    private readonly OffloadedExperts? _offloaded;

    public Checkpoint Checkpoint { get; }
    public MoeModel Model { get; }
    public WorkerTeam Team { get; }
    public InferenceState State { get; }
    public ModelConfig Config => Model.Config;

    /// <summary>Where the routed experts live (chosen at open).</summary>
    public ExpertPlacement ExpertPlacement { get; }

    /// <summary>One line on where the forward pass runs and where the experts live: the backend's own line when one runs it.</summary>
    public string DescribePlacement() => Model.Backend?.Describe() ?? ExpertPlacement.Describe();

    /// <summary>
    /// Expert counters since the session opened (tokens, hits, misses, bytes read, stall, I/O busy time); subtract two
    /// snapshots for one stretch. All zero when the experts are resident.
    /// </summary>
    public ExpertStats ExpertStats => _offloaded?.Stats ?? default;

    /// <summary>Per-token routing and cache events for live views; recorded only while someone listens.</summary>
    public EngineEvents Events { get; }

    /// <summary>The model's tokenizer; throws <see cref="ModelFormatException"/> when the checkpoint has none.</summary>
    public TextTokenizer Tokenizer => _tokenizer.Value;

    private ModelSession(Checkpoint ck, EngineOptions o)
    {
        Checkpoint = ck;
        int context = o.Context ?? Math.Min(ck.Config.MaxContext, EngineOptions.DefaultMaxContext);
        if (context > ck.Config.MaxContext)
            throw new ArgumentException($"context {context} exceeds the model's maximum of {ck.Config.MaxContext} tokens");
        State = new InferenceState(ck.Config, context);
        // Experts are placed before the model binds (and reads) any weight, so offloading can keep read-ahead out of them.
        (ExpertPlacement, _offloaded) = o.Backend is null ? PlaceExperts(ck, o, State.KvCacheBytes)
            : (new ExpertPlacement(false, false, ModelSummary.Of(ck).ExpertBytes, ModelSummary.Of(ck).ExpertBytes, 0, 0, o.CachePolicy, false, null), null);
        bool interleave = false;
        if (o.Backend is null && _offloaded is null && o.Interleave != InterleaveMode.Off)
        {
            long copies = MoeModel.InterleavableBytes(ck, routedExperts: true);
            long? available = o.Interleave == InterleaveMode.Auto && copies > 0 ? ExpertPlacement.AvailableBytes ?? SystemMemory.AvailableBytes() : null;
            interleave = copies > 0 && (available is not long a || copies + State.KvCacheBytes <= a * 0.9);
            ExpertPlacement = interleave ? ExpertPlacement with { InterleavedBytes = copies }
                : copies > 0 ? ExpertPlacement with { InterleaveDeclinedBytes = copies, AvailableBytes = available } : ExpertPlacement;
        }
        try
        {
            Model = MoeModel.Load(ck, interleave);
            if (_offloaded is not null) Model.Experts = _offloaded;
            if (o.Backend is { } createBackend)
            {
                var (predictor, predictorName) = o.ExpertMemory is { IsResident: true } ? (null, "none") : CreatePredictor(ck, o);
                Model.Backend = createBackend(new BackendRequest(ck, o, predictor, predictorName));
            }
            Team = new WorkerTeam(o.Threads);
            Events = new EngineEvents(Model, _offloaded);
        }
        catch
        {
            Model?.Backend?.Dispose();
            _offloaded?.Dispose();
            throw;
        }
        _tokenizer = new Lazy<TextTokenizer>(() => CheckpointTokenizer.Load(ck));
    }

    // Resident (all, or a budget covering every routed expert), or an offloading runner within the budget asked for (or
    // chosen: see ExpertMemory.Automatic).
    private static (ExpertPlacement, OffloadedExperts?) PlaceExperts(Checkpoint ck, EngineOptions o, long kvCacheBytes)
    {
        var summary = ModelSummary.Of(ck);
        bool automatic = o.ExpertMemory is null;
        long? available = automatic ? SystemMemory.AvailableBytes() : null;
        var resident = new ExpertPlacement(false, automatic, summary.ExpertBytes, summary.ExpertBytes, 0, 0, o.CachePolicy, false, available);
        // Asked for low precision on a file without copies: say so even where the experts end up resident.
        if (o.OnMiss == MissPolicy.LowPrecision) OffloadedExperts.LowPrecisionCopyType(ck, summary.ExpertBytes);
        if (o.ExpertMemory is { IsResident: true }) return (resident, null);
        if (automatic && ExpertMemory.Automatic(summary.TotalBytes, 0, available, 0).IsResident) return (resident, null);

        var layout = OffloadedExperts.LayoutOf(ck);
        int topK = ck.Config.NumExpertsUsed;
        long minimum = OffloadedExperts.MinimumBudgetBytes(layout, topK);
        var asked = o.ExpertMemory ?? ExpertMemory.Automatic(summary.TotalBytes, summary.ResidentBytes + kvCacheBytes, available, minimum);
        long budget = asked.BudgetBytes(layout.TotalBytes);
        if (o.ResidentWhenBudgetCoversAll && budget >= layout.TotalBytes)
            return (resident with { BudgetBytes = budget, BudgetCoversAll = true }, null);
        if (budget < minimum)
        {
            double pct = Math.Ceiling(1000.0 * minimum / layout.TotalBytes) / 10;
            throw new ArgumentException(
                $"expert memory {asked} ({(asked.Kind == ExpertMemoryKind.Fraction ? ByteSize.Format(budget) + ", " : "")}{budget} bytes) is below this model's minimum of {ByteSize.Format(minimum)} ({minimum} bytes): " +
                $"a layer uses {topK} experts at once and each needs a slot of {ByteSize.Format(DirectFileReader.AlignUp(layout.SlotBytes))}; " +
                $"give at least {ByteSize.Format(minimum)} ({pct.ToString(System.Globalization.CultureInfo.InvariantCulture)}% of the experts) or all");
        }
        // Before the predictor hashes the resident weights (its fingerprint): page faults without the advice read around
        // them, into the experts' ranges, and the mapped expert pages would stay in memory beside the cache's budget.
        ResidentWeightAdvice.Apply(ck);
        var (predictor, predictorName) = CreatePredictor(ck, o);
        var runner = new OffloadedExperts(ck, layout, new OffloadOptions
        {
            BudgetBytes = budget, Policy = o.CachePolicy, Predictor = predictor, Lookahead = o.Lookahead, PredictExtra = o.PredictExtra,
            OnMiss = o.OnMiss, LowPrecisionBelow = o.LowPrecisionBelow, Loader = new ExpertLoaderOptions { Prefetch = o.PrefetchGating },
        });
        return (new ExpertPlacement(true, automatic, layout.TotalBytes, budget, runner.SlotCount, runner.SlotBytes, o.CachePolicy, runner.DirectIo,
            available, predictorName, o.OnMiss, LowPrecisionType: runner.LowPrecisionType, LowPrecisionBelow: runner.LowPrecisionBelow,
            Gating: predictor is null ? null : o.PrefetchGating), runner);
    }

    // The predictor asked for; by default the calibrated one when its file sits next to the model, else next-gate.
    private static (IExpertPredictor?, string) CreatePredictor(Checkpoint ck, EngineOptions o)
    {
        string file = o.PredictorFile ?? LinearPregate.DefaultPath(ck.Path);
        var kind = o.Predictor ?? (File.Exists(file) ? PredictorKind.Pregate : PredictorKind.NextGate);
        string ahead = o.Lookahead > 1 || o.PredictExtra > 0 ? $" (lookahead {o.Lookahead}, top-k+{o.PredictExtra})" : "";
        switch (kind)
        {
            case PredictorKind.None:
                return (null, "none");
            case PredictorKind.NextGate:
                return (new NextGatePredictor(ck, o.Lookahead), "next-gate" + ahead);
            case PredictorKind.Pregate:
                if (!File.Exists(file))
                    throw new ArgumentException($"no calibrated predictor at {file}; create it with: pregate calibrate --model {ck.Path} --text FILE (or give --predictor-file)");
                try
                {
                    var p = LinearPregate.Load(file, ck);
                    if (o.Lookahead > p.MaxLookahead)
                        throw new ArgumentException($"the predictor in {file} was calibrated for lookahead {p.MaxLookahead}; calibrate with --lookahead {o.Lookahead}");
                    return (p, "pregate" + ahead);
                }
                catch (ModelFormatException e)
                {
                    // A stale or foreign predictor must not stop the run: next-gate needs no calibration.
                    return (new NextGatePredictor(ck, o.Lookahead), $"next-gate{ahead} (the calibrated predictor was rejected: {e.Message})");
                }
            case PredictorKind.Oracle:
                var trace = o.OracleTrace!;
                if (trace.LayerCount != ck.Config.NumLayers || trace.TopK != ck.Config.NumExpertsUsed)
                    throw new ArgumentException($"the routing trace has {trace.LayerCount} layers × top-{trace.TopK}; the model has {ck.Config.NumLayers} × top-{ck.Config.NumExpertsUsed}");
                return (new OraclePredictor(trace), "oracle" + ahead);
            default:
                throw new ArgumentException($"predictor {PredictorKinds.Name(kind)} is not available");
        }
    }

    /// <summary>Opens the GGUF file or HF folder at <paramref name="path"/>.</summary>
    /// <exception cref="ModelFormatException">The model files are malformed.</exception>
    /// <exception cref="ArgumentException">The options are invalid for this model.</exception>
    public static ModelSession Open(string path, EngineOptions? options = null)
    {
        var o = options ?? new EngineOptions();
        o.Validate();
        var ck = Checkpoint.Open(path);
        try { return new ModelSession(ck, o); }
        catch { ck.Dispose(); throw; }
    }

    public Generator CreateGenerator() => new(Model, Tokenizer, State, Team);

    /// <summary>
    /// Runs <paramref name="tokens"/> as a new sequence and returns the logits after every position (or only the last).
    /// </summary>
    /// <exception cref="ArgumentException">No tokens, an id outside the vocabulary, or more tokens than the context.</exception>
    public float[][] Logits(IReadOnlyList<int> tokens, bool allPositions)
    {
        if (tokens.Count == 0) throw new ArgumentException("no tokens given");
        if (tokens.Count > State.Context) throw new ArgumentException($"{tokens.Count} tokens exceed the context of {State.Context}; raise --ctx");
        foreach (int t in tokens)
            if ((uint)t >= (uint)Config.VocabSize) throw new ArgumentException($"token id {t} is outside the vocabulary (0..{Config.VocabSize - 1})");
        State.Reset();
        int vocab = Config.VocabSize, n = tokens.Count;
        var flat = new float[(allPositions ? n : 1) * (long)vocab];
        Model.Forward(State, tokens.ToArray(), flat, allPositions, Team);
        var rows = new float[allPositions ? n : 1][];
        for (int r = 0; r < rows.Length; r++) rows[r] = flat.AsSpan(r * vocab, vocab).ToArray();
        return rows;
    }

    public void Dispose()
    {
        Team.Dispose();
        Model.Backend?.Dispose();
        _offloaded?.Dispose();
        Checkpoint.Dispose();
    }
}
