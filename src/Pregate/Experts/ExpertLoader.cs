// Moves routed experts from the model files into cache slots: I/O threads serve demand loads first, then prefetches by
// deadline; stale prefetches are cancelled; leases pin what a layer uses (Pre-gated MoE's prefetch, ExpertFlow's correction).
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;

namespace Pregate.Experts;

/// <summary>Settings of an <see cref="ExpertLoader"/>.</summary>
public sealed record ExpertLoaderOptions
{
    /// <summary>I/O threads, i.e. expert reads in flight at once (disk throughput grows up to about 4).</summary>
    public int IoThreads { get; init; } = 4;

    /// <summary>
    /// How long a demand load may wait for a slot while every slot is pinned before <see cref="ExpertLoader.Acquire"/>
    /// gives up with a <see cref="TimeoutException"/>.
    /// </summary>
    public TimeSpan SlotWaitTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>Read with O_DIRECT where the filesystem allows it (else buffered reads with DONTNEED advice).</summary>
    public bool AllowDirectIo { get; init; } = true;

    /// <summary>Which prefetches are read, and when (<see cref="PrefetchGating"/>); by default every one, as soon as an I/O thread is free.</summary>
    public PrefetchGating Prefetch { get; init; } = PrefetchGating.Off;

    /// <summary>Create the I/O threads paused until <see cref="ExpertLoader.Resume"/> (lets tests stage a queue).</summary>
    internal bool StartPaused { get; init; }
}

/// <summary>
/// Loads experts described by an <see cref="ExpertLayout"/> into the slots of an <see cref="ExpertCache"/> and hands them out
/// as pinning <see cref="ExpertLease"/>s. Thread-safe. The loader owns the cache (and its pool) and disposes it.
/// <para>
/// Position: the engine calls <see cref="BeginLayer"/> as it enters each layer; a layer number not above the previous one
/// starts a new token. An expert of layer <c>l</c> is next needed at layer <c>l</c> of this token when <c>l</c> ≥ the current
/// layer, else at layer <c>l</c> of the next token: that is the deadline of its prefetch.
/// </para>
/// <para>
/// Priorities: demand loads (<see cref="Acquire"/>, <see cref="Request"/>) in arrival order, then prefetches by deadline
/// (earlier layers first) and arrival. A queued prefetch whose deadline passes is cancelled. A prefetch that finds every slot
/// pinned is dropped. A loaded expert stays pinned ("reserved") until its first acquire or its deadline, so prefetches
/// cannot evict each other; a demand load that finds every slot pinned takes over a prefetch-reserved slot (the one
/// needed last) and otherwise waits until a lease is disposed or a reservation expires, at most
/// <see cref="ExpertLoaderOptions.SlotWaitTimeout"/>. The waiting thread must not itself hold the leases that fill the pool:
/// that wait ends in <see cref="TimeoutException"/>, never a hang.
/// </para>
/// <para>
/// Gating (<see cref="ExpertLoaderOptions.Prefetch"/>): a prefetch carries the probability that its guess is right; the
/// gates of <see cref="PrefetchGating"/> skip unlikely guesses, keep prefetches from evicting experts used more often than
/// the guess is likely right, and start prefetch reads only behind the demand loads, a few at a time. Skipped prefetches
/// are counted by reason in <see cref="Stats"/>.
/// </para>
/// </summary>
public sealed unsafe class ExpertLoader : IDisposable
{
    private enum JobState { Queued, Reading, Done, Failed, Cancelled }
    private enum LoadOrigin { Demand, Prefetch }

    private sealed class LoadJob(ExpertKey key, long deadline, bool demand)
    {
        public ExpertKey Key { get; } = key;
        public long Deadline { get; set; } = deadline;        // position (token · layers + layer) it is needed at
        public bool Demand { get; set; } = demand;            // someone acquires or requested it
        public bool IssuedByPrefetch { get; set; } = !demand; // its read started on a prefetch's behalf
        public double Probability { get; set; } = 1;          // the chance a prefetch's guess is right
        public long IssuedEntry { get; init; }                // layers entered when the prefetch was asked for
        public bool Abandoned { get; set; }                   // a prefetch read whose layer came without it: stop at the next piece
        public bool Aborted { get; set; }                     // ... and it did stop: the slot holds a partial read
        public JobState State { get; set; }
        public int Slot { get; set; } = -1;
        public Exception? Error { get; set; }
    }

    private readonly record struct Reservation(long Deadline, bool ByPrefetch);

    private readonly object _gate = new();
    private readonly ExpertLayout _layout;
    private readonly ExpertCache _cache;
    private readonly ExpertLoaderOptions _options;
    private readonly Dictionary<ExpertKey, LoadJob> _pending = new();            // queued or being read
    private readonly Queue<LoadJob> _demand = new();
    private readonly PriorityQueue<LoadJob, (long Deadline, long Sequence)> _prefetch = new();
    private readonly Dictionary<ExpertKey, Reservation> _reservations = new();   // each holds one pin
    private readonly Dictionary<ExpertKey, LoadOrigin> _unused = new();          // loaded, not yet acquired
    private readonly Dictionary<string, DirectFileReader> _readers = new(StringComparer.Ordinal);
    private readonly Thread[] _workers;
    private readonly List<LoadJob> _staleJobs = new();
    private readonly List<ExpertKey> _expiredReservations = new();
    private long _sequence;
    private long _token;
    private int _layer = -1;
    private int _leases;
    private long _slotsBlockedSince; // timestamp since the demand queue's head has found every slot pinned; 0 when not blocked
    private bool _paused;
    private bool _disposed;
    private long _hits, _misses, _loads, _bytesRead, _prefetchLoads, _prefetchHits, _prefetchesWasted, _prefetchesCancelled, _stallTicks;
    private long _skippedUnlikely, _skippedValuable, _skippedBusy;
    private readonly PrefetchGating _gating;
    private long _entries;          // BeginLayer calls so far
    private long _declaredEntry;    // _entries at the latest Request: the layer entered last has asked for its experts
    private int _prefetchReads;               // reads in flight issued by a prefetch
    private double _prefetchDoubt;            // Σ (1 − probability) over them: the wrong guesses expected among them
    private readonly double[] _useValue;      // [layer · E + expert] decayed share of the layer's passes that used the expert
    private readonly bool[] _usedInPass;      // [layer · E + expert] acquired in the layer's current pass
    private double _admitProbability;         // the probability of the prefetch being admitted (for _cheaperThanAdmitted)
    private readonly Func<ExpertKey, bool> _cheaperThanAdmitted;
    private const double UseDecay = 0.9;
    private const long PieceBytes = 4 << 20; // a multiple of DirectFileReader.Alignment
    private int _reading;          // reads in flight
    private long _busySince;       // timestamp the reads in flight went from 0 to 1
    private long _ioBusyTicks;     // closed stretches with reads in flight
    private long _prefetchBytesWasted;
    private readonly LayerCounters[] _perLayer; // [layer] the same counters for the experts of one layer

    private struct LayerCounters
    {
        public long Hits, Misses, Loads, BytesRead, PrefetchLoads, PrefetchHits, PrefetchesWasted, PrefetchesCancelled, PrefetchBytesWasted, StallTicks;
        public long SkippedUnlikely, SkippedValuable, SkippedBusy;
    }

    /// <summary>
    /// Opens every file of the layout at once and keeps it open: a model file deleted or replaced (renamed over) while the
    /// loader runs is still read from the open descriptor, like the checkpoint's memory map; a file truncated in place
    /// fails the loads of experts past its new end with <see cref="ExpertLoadException"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The cache's slots are smaller than <see cref="ExpertLayout.SlotBytes"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException">Fewer than one I/O thread, a negative timeout, or invalid prefetch gating.</exception>
    /// <exception cref="IOException">A file cannot be opened (<see cref="FileNotFoundException"/> when missing); the message names it.</exception>
    public ExpertLoader(ExpertLayout layout, ExpertCache cache, ExpertLoaderOptions? options = null)
    {
        _layout = layout ?? throw new ArgumentNullException(nameof(layout));
        _cache = cache ?? throw new ArgumentNullException(nameof(cache));
        _options = options ?? new ExpertLoaderOptions();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(_options.IoThreads, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(_options.SlotWaitTimeout, TimeSpan.Zero, nameof(options));
        _gating = _options.Prefetch ?? throw new ArgumentNullException(nameof(options), "the prefetch gating is null");
        _gating.Validate();
        if (cache.Pool.SlotBytes < layout.SlotBytes)
            throw new ArgumentException($"Cache slots hold {cache.Pool.SlotBytes} bytes but the largest expert needs {layout.SlotBytes}.", nameof(cache));
        _paused = _options.StartPaused;
        _perLayer = new LayerCounters[layout.LayerCount];
        _useValue = new double[checked(layout.LayerCount * layout.ExpertCount)];
        _usedInPass = new bool[_useValue.Length];
        _cheaperThanAdmitted = key => _useValue[IndexOf(key)] <= _admitProbability;
        try
        {
            foreach (string path in layout.Files) _readers[path] = new DirectFileReader(path, _options.AllowDirectIo);
        }
        catch
        {
            foreach (DirectFileReader reader in _readers.Values) reader.Dispose();
            throw;
        }
        _workers = new Thread[_options.IoThreads];
        for (int i = 0; i < _workers.Length; i++)
        {
            _workers[i] = new Thread(WorkerLoop) { IsBackground = true, Name = $"pregate-expert-io-{i}" };
            _workers[i].Start();
        }
    }

    public ExpertLayout Layout => _layout;

    /// <summary>Slots in the pool (how many experts can be resident at once).</summary>
    public int SlotCount => _cache.Pool.SlotCount;

    /// <summary>A snapshot of the counters (see <see cref="ExpertCacheStats"/>).</summary>
    public ExpertCacheStats Stats
    {
        get
        {
            lock (_gate)
            {
                long busy = _ioBusyTicks + (_reading > 0 ? Stopwatch.GetTimestamp() - _busySince : 0);
                return new ExpertCacheStats(_hits, _misses, _loads, _bytesRead, _cache.Evictions, _prefetchLoads, _prefetchHits,
                    _prefetchesWasted, _prefetchesCancelled, Stopwatch.GetElapsedTime(0, _stallTicks), Stopwatch.GetElapsedTime(0, busy), _prefetchBytesWasted,
                    _skippedUnlikely, _skippedValuable, _skippedBusy);
            }
        }
    }

    /// <summary>
    /// A snapshot of the counters per layer ([layer], for the experts of that layer): they sum to <see cref="Stats"/> except
    /// <see cref="ExpertCacheStats.Evictions"/> and <see cref="ExpertCacheStats.IoBusy"/>, which are kept for the whole cache
    /// only (zero here).
    /// </summary>
    public ExpertCacheStats[] LayerStats()
    {
        lock (_gate)
        {
            var result = new ExpertCacheStats[_perLayer.Length];
            for (int l = 0; l < result.Length; l++)
            {
                ref readonly LayerCounters c = ref _perLayer[l];
                result[l] = new ExpertCacheStats(c.Hits, c.Misses, c.Loads, c.BytesRead, 0, c.PrefetchLoads, c.PrefetchHits, c.PrefetchesWasted,
                    c.PrefetchesCancelled, Stopwatch.GetElapsedTime(0, c.StallTicks), TimeSpan.Zero, c.PrefetchBytesWasted,
                    c.SkippedUnlikely, c.SkippedValuable, c.SkippedBusy);
            }
            return result;
        }
    }

    /// <summary>
    /// The engine enters <paramref name="layer"/> (a value ≤ the previous one starts the next token). Queued prefetches whose
    /// deadline has passed are cancelled; reservations that expired are released; the layer's previous pass is folded into
    /// the experts' expected use (<see cref="UseValue"/>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the model.</exception>
    public void BeginLayer(int layer)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, _layout.LayerCount);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (layer <= _layer) _token++;
            _layer = layer;
            _entries++;
            FoldUse(layer);
            long now = Position;
            DropStalePrefetches(now - 1);
            _expiredReservations.Clear();
            foreach ((ExpertKey key, Reservation r) in _reservations)
                if (r.Deadline < now) _expiredReservations.Add(key);
            foreach (ExpertKey key in _expiredReservations)
            {
                _reservations.Remove(key);
                _cache.Unpin(key);
            }
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>
    /// Asks for <paramref name="key"/> ahead of its use (deadline: the next time the engine reaches its layer), a guess
    /// right with <paramref name="probability"/>. Resident or in-flight experts are not read again; a resident one is
    /// reserved against eviction until the deadline. Below <see cref="PrefetchGating.MinProbability"/> nothing is done (a
    /// read skipped as unlikely when the expert is not resident).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The key is outside the model, or the probability outside [0, 1].</exception>
    public void Prefetch(ExpertKey key, double probability = 1)
    {
        _ = _layout.Plan(key);
        if (!(probability >= 0 && probability <= 1)) throw new ArgumentOutOfRangeException(nameof(probability), probability, "a probability lies in [0, 1]");
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            long deadline = DeadlineOf(key);
            if (_pending.TryGetValue(key, out LoadJob? pending))
            {
                pending.Deadline = Math.Max(pending.Deadline, deadline);
                pending.Probability = Math.Max(pending.Probability, probability);
                pending.Abandoned = false;
                return;
            }
            bool unlikely = probability < _gating.MinProbability;
            if (_cache.TryGetSlot(key, out _))
            {
                if (!unlikely) Reserve(key, deadline, byPrefetch: true);
                return;
            }
            if (unlikely)
            {
                _skippedUnlikely++;
                _perLayer[key.Layer].SkippedUnlikely++;
                return;
            }
            var job = new LoadJob(key, deadline, demand: false) { Probability = probability, IssuedEntry = _entries };
            _pending[key] = job;
            _prefetch.Enqueue(job, (deadline, ++_sequence));
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>
    /// Starts demand loads of every key that is not resident, without waiting, so several reads run at once; resident keys are
    /// reserved against eviction. Follow with <see cref="TryAcquire"/> / <see cref="Acquire"/>. With
    /// <see cref="PrefetchGating.MaxWrongReads"/> this marks the layer's demand as known: prefetches asked for before it may
    /// start behind its demand loads, and prefetches of this layer that it did not ask for are dropped.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A key is outside the model.</exception>
    public void Request(ReadOnlySpan<ExpertKey> keys)
    {
        foreach (ExpertKey key in keys) _ = _layout.Plan(key);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            foreach (ExpertKey key in keys)
                if (EnsureDemandLoad(key) is null) Reserve(key, DeadlineOf(key), byPrefetch: false);
            if (_gating.MaxWrongReads == 0) return;
            _declaredEntry = _entries;
            DropStalePrefetches(Position);
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>A lease on <paramref name="key"/> when it is resident and loaded; never waits, never starts a read.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The key is outside the model.</exception>
    public bool TryAcquire(ExpertKey key, [NotNullWhen(true)] out ExpertLease? lease)
    {
        _ = _layout.Plan(key);
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            lease = IsReady(key, out int slot) ? Grant(key, slot, waitStart: 0) : null;
            return lease is not null;
        }
    }

    /// <summary>
    /// A lease on <paramref name="key"/>: at once when resident, after the in-flight read when loading, else after a demand
    /// load (ahead of all prefetches). The lease pins the expert until disposed.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The key is outside the model.</exception>
    /// <exception cref="ExpertLoadException">The read failed (the inner exception names the file).</exception>
    /// <exception cref="TimeoutException">Every slot stayed pinned for <see cref="ExpertLoaderOptions.SlotWaitTimeout"/>.</exception>
    /// <exception cref="ObjectDisposedException">The loader was disposed (also while waiting).</exception>
    public ExpertLease Acquire(ExpertKey key)
    {
        _ = _layout.Plan(key);
        lock (_gate)
        {
            long waitStart = 0;
            while (true)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                if (IsReady(key, out int slot)) return Grant(key, slot, waitStart);
                if (waitStart == 0) waitStart = Stopwatch.GetTimestamp();
                LoadJob job = EnsureDemandLoad(key)!;
                WaitFor(job, waitStart);
            }
        }
    }

    /// <summary>Feeds layer <paramref name="layer"/>'s router probabilities (one per expert) to the eviction policy.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The layer is outside the model.</exception>
    /// <exception cref="ArgumentException">The span does not hold one probability per expert.</exception>
    public void ObserveRouting(int layer, ReadOnlySpan<float> probabilities)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(layer);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(layer, _layout.LayerCount);
        if (probabilities.Length != _layout.ExpertCount)
            throw new ArgumentException($"Expected {_layout.ExpertCount} router probabilities, got {probabilities.Length}.", nameof(probabilities));
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _cache.ObserveRouting(layer, probabilities);
        }
    }

    /// <summary>True when <paramref name="key"/> is resident and loaded.</summary>
    public bool IsResident(ExpertKey key)
    {
        lock (_gate) return !_disposed && IsReady(key, out _);
    }

    /// <summary>True when <paramref name="key"/> is resident, or queued or being read (an acquire will not start a new read).</summary>
    public bool IsResidentOrLoading(ExpertKey key)
    {
        lock (_gate) return !_disposed && (_pending.ContainsKey(key) || _cache.TryGetSlot(key, out _));
    }

    /// <summary>
    /// The expert's expected use: the decayed share of its layer's passes that acquired it, <c>u ← 0.9·u + 0.1·[used]</c>
    /// folded each time the engine enters the layer (0 for an expert never used).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The key is outside the model.</exception>
    public double UseValue(ExpertKey key)
    {
        _ = _layout.Plan(key);
        lock (_gate) return _useValue[IndexOf(key)];
    }

    /// <summary>
    /// What a load would do to the cache now: true with a null <paramref name="victim"/> when a slot is free, true with the
    /// policy's victim when it would evict one, false when every slot is pinned (the load would wait). A hint: the answer
    /// may change before a load claims its slot.
    /// </summary>
    public bool TryPeekVictim(out ExpertKey? victim)
    {
        lock (_gate)
        {
            victim = null;
            return !_disposed && _cache.TryPeekVictim(out victim);
        }
    }

    /// <summary>
    /// Stops the I/O threads (each finishes the read it is in), fails waiting acquires with <see cref="ObjectDisposedException"/>,
    /// closes the files and frees the slots. Leases must not be used afterwards.
    /// </summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (LoadJob job in _pending.Values.Where(j => j.State == JobState.Queued)) job.State = JobState.Cancelled;
            Monitor.PulseAll(_gate);
        }
        foreach (Thread worker in _workers) worker.Join();
        foreach (DirectFileReader reader in _readers.Values) reader.Dispose();
        _cache.Dispose();
    }

    /// <summary>Releases I/O threads created paused (<see cref="ExpertLoaderOptions.StartPaused"/>).</summary>
    internal void Resume()
    {
        lock (_gate)
        {
            _paused = false;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Waits until no load is queued or in flight; false on timeout.</summary>
    internal bool WaitUntilIdle(TimeSpan timeout)
    {
        long start = Stopwatch.GetTimestamp();
        lock (_gate)
        {
            while (_pending.Count > 0)
            {
                TimeSpan left = timeout - Stopwatch.GetElapsedTime(start);
                if (left <= TimeSpan.Zero || _disposed) return false;
                Monitor.Wait(_gate, left);
            }
            return true;
        }
    }

    internal void Release(ExpertKey key)
    {
        lock (_gate)
        {
            if (_disposed) return;
            _leases--;
            _cache.Unpin(key);
            Monitor.PulseAll(_gate);
        }
    }

    // position = token · layers + layer (−1 before the first BeginLayer)
    private long Position => _token * _layout.LayerCount + _layer;

    private long DeadlineOf(ExpertKey key) =>
        (key.Layer >= _layer ? _token : _token + 1) * _layout.LayerCount + key.Layer;

    private bool IsReady(ExpertKey key, out int slot) => _cache.TryGetSlot(key, out slot) && !_pending.ContainsKey(key);

    private ExpertLease Grant(ExpertKey key, int slot, long waitStart)
    {
        _cache.Pin(key);
        _leases++;
        if (_reservations.Remove(key)) _cache.Unpin(key); // the lease takes over the reservation's protection
        bool missed = waitStart != 0;
        if (_unused.Remove(key, out LoadOrigin origin))
        {
            if (origin == LoadOrigin.Prefetch)
            {
                _prefetchHits++;
                _perLayer[key.Layer].PrefetchHits++;
            }
            else missed = true; // loaded by a Request: the read was not hidden
        }
        if (missed)
        {
            _misses++;
            _perLayer[key.Layer].Misses++;
        }
        else
        {
            _hits++;
            _perLayer[key.Layer].Hits++;
        }
        if (waitStart != 0)
        {
            long waited = Stopwatch.GetTimestamp() - waitStart;
            _stallTicks += waited;
            _perLayer[key.Layer].StallTicks += waited;
        }
        _cache.Touch(key);
        _usedInPass[IndexOf(key)] = true;
        return new ExpertLease(this, key, slot, _cache.Pool.SlotPointer(slot), _layout.Plan(key));
    }

    private void Reserve(ExpertKey key, long deadline, bool byPrefetch)
    {
        if (_reservations.TryGetValue(key, out Reservation r))
        {
            _reservations[key] = new Reservation(Math.Max(r.Deadline, deadline), r.ByPrefetch && byPrefetch);
            return;
        }
        _cache.Pin(key);
        _reservations[key] = new Reservation(deadline, byPrefetch);
    }

    // The pending load of a key that is not ready, made a demand load (created when missing); null when the key is ready.
    private LoadJob? EnsureDemandLoad(ExpertKey key)
    {
        if (_pending.TryGetValue(key, out LoadJob? job))
        {
            if (job.Demand) return job;
            job.Demand = true;
            if (job.State == JobState.Queued)
            {
                job.IssuedByPrefetch = false; // no read had started: the demand pays for it
                _demand.Enqueue(job);
                Monitor.PulseAll(_gate);
            }
            return job;
        }
        if (_cache.TryGetSlot(key, out _)) return null;
        job = new LoadJob(key, DeadlineOf(key), demand: true);
        _pending[key] = job;
        _demand.Enqueue(job);
        Monitor.PulseAll(_gate);
        return job;
    }

    private void WaitFor(LoadJob job, long waitStart)
    {
        while (job.State is JobState.Queued or JobState.Reading)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (job.State == JobState.Reading || _slotsBlockedSince == 0)
            {
                Monitor.Wait(_gate); // every state change pulses
                continue;
            }
            TimeSpan left = _options.SlotWaitTimeout - Stopwatch.GetElapsedTime(Math.Max(_slotsBlockedSince, waitStart));
            if (left > TimeSpan.Zero)
            {
                Monitor.Wait(_gate, left);
                continue;
            }
            job.State = JobState.Cancelled;
            _pending.Remove(job.Key);
            if (!_demand.Any(j => j.State == JobState.Queued)) _slotsBlockedSince = 0;
            Monitor.PulseAll(_gate);
            int loading = _pending.Values.Count(j => j.State == JobState.Reading);
            throw new TimeoutException(
                $"Expert {job.Key} waited {_options.SlotWaitTimeout.TotalSeconds:0.###} s for a slot: all {_cache.Pool.SlotCount} slots are pinned " +
                $"({_leases} leases held, {_reservations.Count} reserved for upcoming layers, {loading} loading). " +
                "Dispose leases of finished experts before acquiring more, or raise the expert memory budget.");
        }
        if (job.State == JobState.Failed) throw new ExpertLoadException(job.Key, job.Error!);
    }

    private void WorkerLoop()
    {
        while (true)
        {
            LoadJob? job = null;
            lock (_gate)
            {
                while (job is null)
                {
                    if (_disposed) return;
                    if (!_paused) job = TakeNextJob();
                    if (job is null) Monitor.Wait(_gate);
                }
                job.State = JobState.Reading;
                if (_reading++ == 0) _busySince = Stopwatch.GetTimestamp();
                if (job.IssuedByPrefetch)
                {
                    _prefetchReads++;
                    _prefetchDoubt += 1 - job.Probability;
                }
            }
            long bytes = 0;
            Exception? error = null;
            try
            {
                bytes = _gating.MaxWrongReads > 0 && job.IssuedByPrefetch ? ReadAbandonable(job) : ReadExpert(job.Key, job.Slot);
            }
            catch (Exception e)
            {
                error = e;
            }
            lock (_gate)
            {
                if (--_reading == 0) _ioBusyTicks += Stopwatch.GetTimestamp() - _busySince;
                if (job.IssuedByPrefetch)
                {
                    _prefetchDoubt = --_prefetchReads == 0 ? 0 : _prefetchDoubt - (1 - job.Probability);
                }
                Complete(job, bytes, error);
                Monitor.PulseAll(_gate);
            }
        }
    }

    private LoadJob? TakeNextJob()
    {
        while (_demand.TryPeek(out LoadJob? head))
        {
            if (head.State != JobState.Queued)
            {
                _demand.Dequeue();
                continue;
            }
            if (TryClaimSlot(head.Key, demand: true, out int slot))
            {
                _demand.Dequeue();
                head.Slot = slot;
                _slotsBlockedSince = 0;
                return head;
            }
            if (_slotsBlockedSince == 0)
            {
                _slotsBlockedSince = Stopwatch.GetTimestamp();
                Monitor.PulseAll(_gate); // waiting acquires now start the slot-wait clock
            }
            return null; // prefetches would take the slot the demand load waits for
        }
        while (_prefetch.TryPeek(out LoadJob? job, out _))
        {
            if (job.State != JobState.Queued || job.Demand) // cancelled, or promoted to the demand queue
            {
                _prefetch.Dequeue();
                continue;
            }
            // Behind demand (no demand load waits here): the layer entered last has asked for its experts, an I/O thread stays
            // free for the next demand load, and the wrong guesses expected among the prefetch reads stay within MaxWrongReads.
            if (_gating.MaxWrongReads > 0 && (job.IssuedEntry >= _declaredEntry || _prefetchReads >= Math.Max(1, _workers.Length - 1) ||
                                         (_prefetchReads > 0 && _prefetchDoubt + (1 - job.Probability) > _gating.MaxWrongReads))) return null;
            _prefetch.Dequeue();
            if (TryClaimSlot(job.Key, demand: false, out int slot, job.Probability))
            {
                job.Slot = slot;
                return job;
            }
            if (_gating.ProtectValuable && _cache.TryPeekVictim(out _)) DropPrefetch(job, DropReason.Valuable);
            else CancelPrefetch(job);
        }
        return null;
    }

    // A slot for key, pinned for the read. Demand loads may take over the prefetch reservation needed last. A prefetch
    // guessed right with the given probability evicts, under the cache-value gate, only experts of no higher expected use.
    private bool TryClaimSlot(ExpertKey key, bool demand, out int slot, double probability = 1)
    {
        ExpertKey? evicted;
        if (!demand && _gating.ProtectValuable)
        {
            _admitProbability = probability;
            if (!_cache.TryAdmit(key, _cheaperThanAdmitted, out slot, out evicted)) return false;
        }
        else if (!_cache.TryAdmit(key, out slot, out evicted))
        {
            if (!demand || !ReleaseLatestPrefetchReservation()) return false;
            if (!_cache.TryAdmit(key, out slot, out evicted)) return false;
        }
        if (evicted is { } victim && _unused.Remove(victim, out LoadOrigin origin) && origin == LoadOrigin.Prefetch)
        {
            long bytes = AlignedBytes(victim);
            _prefetchesWasted++;
            _prefetchBytesWasted += bytes;
            _perLayer[victim.Layer].PrefetchesWasted++;
            _perLayer[victim.Layer].PrefetchBytesWasted += bytes;
        }
        _cache.Pin(key);
        return true;
    }

    private bool ReleaseLatestPrefetchReservation()
    {
        ExpertKey? chosen = null;
        long latest = long.MinValue;
        foreach ((ExpertKey key, Reservation r) in _reservations)
        {
            if (!r.ByPrefetch || _cache.PinCount(key) != 1 || r.Deadline <= latest) continue;
            (chosen, latest) = (key, r.Deadline);
        }
        if (chosen is not { } victim) return false;
        _reservations.Remove(victim);
        _cache.Unpin(victim);
        return true;
    }

    private enum DropReason { Valuable, Busy }

    // A queued prefetch the gates turned down: not read, not counted as wasted.
    private void DropPrefetch(LoadJob job, DropReason reason)
    {
        job.State = JobState.Cancelled;
        _pending.Remove(job.Key);
        ref LayerCounters layer = ref _perLayer[job.Key.Layer];
        if (reason == DropReason.Valuable)
        {
            _skippedValuable++;
            layer.SkippedValuable++;
        }
        else
        {
            _skippedBusy++;
            layer.SkippedBusy++;
        }
    }

    // Queued prefetches needed at or before position `last` (their layer has run, or asked for its experts without them):
    // cancelled, or with MaxWrongReads counted as skipped because the demand loads kept the disk busy; prefetch reads in flight
    // then stop at their next piece (see ReadAbandonable).
    private void DropStalePrefetches(long last)
    {
        _staleJobs.Clear();
        foreach (LoadJob job in _pending.Values)
        {
            if (job.Demand || job.Deadline > last) continue;
            if (job.State == JobState.Queued) _staleJobs.Add(job);
            else if (job.State == JobState.Reading && _gating.MaxWrongReads > 0) job.Abandoned = true;
        }
        foreach (LoadJob job in _staleJobs)
        {
            if (_gating.MaxWrongReads > 0) DropPrefetch(job, DropReason.Busy);
            else CancelPrefetch(job);
        }
    }

    // Folds the layer's last pass into the expected use of its experts and starts a new pass.
    private void FoldUse(int layer)
    {
        int first = layer * _layout.ExpertCount;
        for (int i = first; i < first + _layout.ExpertCount; i++)
        {
            _useValue[i] = UseDecay * _useValue[i] + (_usedInPass[i] ? 1 - UseDecay : 0);
            _usedInPass[i] = false;
        }
    }

    private int IndexOf(ExpertKey key) => key.Layer * _layout.ExpertCount + key.Expert;

    private void CancelPrefetch(LoadJob job)
    {
        job.State = JobState.Cancelled;
        _pending.Remove(job.Key);
        _prefetchesCancelled++;
        _prefetchesWasted++;
        _perLayer[job.Key.Layer].PrefetchesCancelled++;
        _perLayer[job.Key.Layer].PrefetchesWasted++;
    }

    // Bytes a read of key transfers (its 4096-aligned ranges).
    private long AlignedBytes(ExpertKey key)
    {
        long total = 0;
        foreach (ExpertReadPlan.Region region in _layout.Plan(key).Regions) total += region.AlignedLength;
        return total;
    }

    private void Complete(LoadJob job, long bytes, Exception? error)
    {
        _pending.Remove(job.Key);
        if (error is not null)
        {
            job.Error = error;
            job.State = JobState.Failed;
            _cache.Unpin(job.Key);
            _cache.Remove(job.Key);
            return;
        }
        if (job.Aborted)
        {
            // A wrong guess stopped mid-read: its bytes were spent for nothing and its slot holds a partial expert.
            job.State = JobState.Cancelled;
            _bytesRead += bytes;
            _prefetchesWasted++;
            _prefetchBytesWasted += bytes;
            ref LayerCounters counters = ref _perLayer[job.Key.Layer];
            counters.BytesRead += bytes;
            counters.PrefetchesWasted++;
            counters.PrefetchBytesWasted += bytes;
            _cache.Unpin(job.Key);
            _cache.Remove(job.Key);
            return;
        }
        job.State = JobState.Done;
        _loads++;
        _bytesRead += bytes;
        ref LayerCounters layer = ref _perLayer[job.Key.Layer];
        layer.Loads++;
        layer.BytesRead += bytes;
        if (job.IssuedByPrefetch)
        {
            _prefetchLoads++;
            layer.PrefetchLoads++;
        }
        _unused[job.Key] = job.IssuedByPrefetch ? LoadOrigin.Prefetch : LoadOrigin.Demand;
        // The read's pin becomes a reservation until the first acquire (demand) or the deadline (prefetch).
        long deadline = job.Demand ? Math.Max(job.Deadline, Position) : job.Deadline;
        if (deadline >= Position) Reserve(job.Key, deadline, byPrefetch: !job.Demand);
        _cache.Unpin(job.Key);
    }

    // A prefetch read with MaxWrongReads: 4 MiB pieces (each region of an expert at least one), stopping before the next piece
    // once abandoned as stale unless it has become a demand load (Aborted).
    private long ReadAbandonable(LoadJob job)
    {
        ExpertReadPlan plan = _layout.Plan(job.Key);
        byte* slotBase = _cache.Pool.SlotPointer(job.Slot);
        long capacity = _cache.Pool.SlotBytes;
        long total = 0;
        foreach (ExpertReadPlan.Region region in plan.Regions)
        {
            DirectFileReader reader = ReaderFor(region.Path);
            for (long piece = region.FileOffset; piece < region.DataEnd; piece += PieceBytes)
            {
                lock (_gate)
                {
                    if (job.Abandoned && !job.Demand)
                    {
                        job.Aborted = true;
                        return total;
                    }
                }
                long start = Math.Max(piece, region.DataStart), end = Math.Min(piece + PieceBytes, region.DataEnd);
                long at = region.SlotOffset + (piece - region.FileOffset);
                total += reader.ReadCovering(start, end - start, slotBase + at, capacity - at);
            }
        }
        return total;
    }

    private long ReadExpert(ExpertKey key, int slot)
    {
        ExpertReadPlan plan = _layout.Plan(key);
        byte* slotBase = _cache.Pool.SlotPointer(slot);
        long capacity = _cache.Pool.SlotBytes;
        long total = 0;
        foreach (ExpertReadPlan.Region region in plan.Regions)
            total += ReaderFor(region.Path).ReadCovering(region.DataStart, region.DataEnd - region.DataStart,
                slotBase + region.SlotOffset, capacity - region.SlotOffset);
        return total;
    }

    private DirectFileReader ReaderFor(string path) => _readers[path]; // every layout file, opened by the constructor

    /// <summary>The current length of layout file <paramref name="path"/>, from its open descriptor (fstat).</summary>
    /// <exception cref="KeyNotFoundException">The path is not a file of the layout.</exception>
    public long CurrentLength(string path) => _readers[path].Length;
}
