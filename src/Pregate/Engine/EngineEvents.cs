// Per-token engine events for live views (the web console's expert grid): the router's choices per layer, which experts
// were resident, predicted and missed, and the expert counters. Off unless someone listens; listeners never slow a token.
using System.Diagnostics;
using System.Threading.Channels;
using Pregate.Experts;
using Pregate.Models;

namespace Pregate.Engine;

/// <summary>Per-expert flags of one layer in an <see cref="EngineEventRecord"/>.</summary>
[Flags]
public enum ExpertCellFlags : byte
{
    None = 0,
    /// <summary>In the cache and loaded when the router chose (always set for resident experts).</summary>
    Resident = 1,
    /// <summary>Guessed by the predictor one layer ahead and prefetched.</summary>
    Predicted = 2,
    /// <summary>Chosen by the router for this token.</summary>
    Chosen = 4,
    /// <summary>Chosen but not loaded when the router chose it: the layer waited for (or shared) its read.</summary>
    Missed = 8,
}

/// <summary>
/// One token's pass through the model, as seen by <see cref="EngineEvents"/>. Allocated once and overwritten; read it
/// through <see cref="EngineEventListener.TryRead"/>, which copies the latest one into a record of the listener's own.
/// </summary>
public sealed class EngineEventRecord
{
    /// <param name="layers">Layers of the model.</param>
    /// <param name="experts">Routed experts per layer.</param>
    /// <param name="topK">Experts the router picks per token and layer.</param>
    public EngineEventRecord(int layers, int experts, int topK)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(layers);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(experts);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(topK);
        Layers = layers;
        Experts = experts;
        TopK = topK;
        ChosenIds = new int[layers * topK];
        ChosenWeights = new float[layers * topK];
        Cells = new ExpertCellFlags[layers * experts];
    }

    public int Layers { get; }
    public int Experts { get; }
    public int TopK { get; }

    /// <summary>Index of this token among all the engine has recorded since the session opened (0, 1, 2, …; gaps are tokens a listener skipped).</summary>
    public long Token { get; internal set; }

    /// <summary>The token's position in its sequence (for a prompt block, its last token's).</summary>
    public int Position { get; internal set; }

    /// <summary>When the token's forward pass finished, in <see cref="Stopwatch.GetTimestamp"/> ticks.</summary>
    public long Timestamp { get; internal set; }

    /// <summary>[layer · topK + j] the router's j-th chosen expert of each layer, in accumulation order.</summary>
    public int[] ChosenIds { get; }

    /// <summary>[layer · topK + j] the weight of <see cref="ChosenIds"/>'s expert.</summary>
    public float[] ChosenWeights { get; }

    /// <summary>[layer · experts + expert] what each expert was when the layer routed this token.</summary>
    public ExpertCellFlags[] Cells { get; }

    /// <summary>The expert counters after this token (all zero for resident experts).</summary>
    public ExpertStats Stats { get; internal set; }

    /// <summary>Copies every field into <paramref name="into"/>, a record of the same shape.</summary>
    /// <exception cref="ArgumentException">The shapes differ.</exception>
    public void CopyTo(EngineEventRecord into)
    {
        ArgumentNullException.ThrowIfNull(into);
        if (into.Layers != Layers || into.Experts != Experts || into.TopK != TopK)
            throw new ArgumentException($"a record of {into.Layers}×{into.Experts} (top {into.TopK}) cannot hold one of {Layers}×{Experts} (top {TopK})", nameof(into));
        into.Token = Token;
        into.Position = Position;
        into.Timestamp = Timestamp;
        into.Stats = Stats;
        ChosenIds.CopyTo(into.ChosenIds, 0);
        ChosenWeights.CopyTo(into.ChosenWeights, 0);
        Cells.CopyTo(into.Cells, 0);
    }
}

/// <summary>
/// Records one <see cref="EngineEventRecord"/> per forward pass (each decoded token; a prompt block counts once) while at
/// least one <see cref="EngineEventListener"/> is subscribed, by observing the model (<see cref="MoeModel.Observer"/>,
/// chained in front of any observer already set). With no listener it is detached and costs nothing. The forward pass
/// fills a preallocated record and copies it to a shared "latest" record; each listener is woken through a bounded
/// channel of one that keeps only the newest token, so a slow listener skips tokens and never stalls generation.
/// </summary>
public sealed class EngineEvents : IForwardObserver
{
    private readonly MoeModel _model;
    private readonly OffloadedExperts? _offloaded;
    private readonly Lock _gate = new();             // listeners, attaching, the latest record
    private readonly EngineEventRecord _work;        // filled by the forward pass
    private readonly EngineEventRecord _latest;      // the last finished token, under _gate
    private readonly int[] _layerPosition;           // [layer] position last routed
    private readonly bool[] _needCells;              // [layer] attention ran; capture residency at the next routing
    private EngineEventListener[] _listeners = [];
    private IForwardObserver? _previous;
    private bool _attached;
    private long _tokens;
    private long _recordsFilled;

    /// <param name="model">The model to observe.</param>
    /// <param name="offloaded">The model's offloading expert runner; null when the experts are resident.</param>
    public EngineEvents(MoeModel model, OffloadedExperts? offloaded)
    {
        ArgumentNullException.ThrowIfNull(model);
        _model = model;
        _offloaded = offloaded;
        var c = model.Config;
        _work = NewRecord();
        _latest = NewRecord();
        _layerPosition = new int[c.NumLayers];
        _needCells = new bool[c.NumLayers];
    }

    /// <summary>Layers × experts of the observed model, and its top k.</summary>
    public int Layers => _model.Config.NumLayers;
    public int Experts => _model.Config.NumExperts;
    public int TopK => _model.Config.NumExpertsUsed;

    /// <summary>True when the experts are offloaded (cache, prediction and misses are meaningful).</summary>
    public bool Offloaded => _offloaded is not null;

    /// <summary>Listeners subscribed now.</summary>
    public int Listeners
    {
        get { lock (_gate) return _listeners.Length; }
    }

    /// <summary>Routing decisions recorded so far (one per layer and token); stays still while nobody listens.</summary>
    public long RecordsFilled => Interlocked.Read(ref _recordsFilled);

    /// <summary>Tokens published so far (the next record's <see cref="EngineEventRecord.Token"/>).</summary>
    public long Tokens => Interlocked.Read(ref _tokens);

    /// <summary>
    /// Experts loaded in the cache now, over all layers (layers × experts when resident). Takes the loader's lock once per
    /// expert: call it at a display's pace, not per token.
    /// </summary>
    public int CountResidentExperts()
    {
        if (_offloaded is null) return Layers * Experts;
        int count = 0;
        for (int l = 0; l < Layers; l++)
            for (int x = 0; x < Experts; x++)
                if (_offloaded.IsResident(l, x)) count++;
        return count;
    }

    /// <summary>A record shaped for this model, for <see cref="EngineEventListener.TryRead"/>.</summary>
    public EngineEventRecord NewRecord() => new(Layers, Experts, TopK);

    /// <summary>
    /// Starts recording (when it is the first listener) and returns a listener that is woken after each token. Dispose the
    /// listener to unsubscribe; the last one to leave detaches the observer.
    /// </summary>
    public EngineEventListener Subscribe()
    {
        var listener = new EngineEventListener(this);
        lock (_gate)
        {
            _listeners = [.. _listeners, listener];
            if (!_attached)
            {
                _previous = _model.Observer;
                Array.Clear(_needCells);
                _model.Observer = this;
                _attached = true;
            }
        }
        return listener;
    }

    internal void Unsubscribe(EngineEventListener listener)
    {
        lock (_gate)
        {
            int at = Array.IndexOf(_listeners, listener);
            if (at < 0) return;
            _listeners = [.. _listeners.AsSpan(0, at), .. _listeners.AsSpan(at + 1)];
            if (_listeners.Length == 0 && _attached)
            {
                if (ReferenceEquals(_model.Observer, this)) _model.Observer = _previous;
                _previous = null;
                _attached = false;
            }
        }
    }

    // Copies the latest token into `into`; false before the first token.
    internal bool CopyLatest(EngineEventRecord into)
    {
        lock (_gate)
        {
            if (Interlocked.Read(ref _tokens) == 0) return false;
            _latest.CopyTo(into);
            return true;
        }
    }

    void IForwardObserver.OnTensor(string name, int layer, int position, ReadOnlySpan<float> values)
    {
        _previous?.OnTensor(name, layer, position, values);
        if (name == "attn_residual") _needCells[layer] = true;
        else if (name == "moe_out" && layer == Layers - 1 && position == _layerPosition[layer]) Publish(position);
    }

    void IForwardObserver.OnRouting(int layer, int position, ReadOnlySpan<float> probs, ReadOnlySpan<int> ids, ReadOnlySpan<float> weights)
    {
        _previous?.OnRouting(layer, position, probs, ids, weights);
        Interlocked.Increment(ref _recordsFilled);
        int e = Experts, k = TopK;
        var cells = _work.Cells.AsSpan(layer * e, e);
        if (_needCells[layer])
        {
            // The cache is the same for every token of a block: nothing runs between one layer's routing calls.
            _needCells[layer] = false;
            for (int x = 0; x < e; x++)
            {
                var f = ExpertCellFlags.None;
                if (_offloaded is null || _offloaded.IsResident(layer, x)) f |= ExpertCellFlags.Resident;
                if (_offloaded is not null && _offloaded.IsPredicted(layer, x)) f |= ExpertCellFlags.Predicted;
                cells[x] = f;
            }
        }
        else
        {
            for (int x = 0; x < e; x++) cells[x] &= ExpertCellFlags.Resident | ExpertCellFlags.Predicted;
        }
        int n = Math.Min(ids.Length, k);
        for (int j = 0; j < n; j++)
        {
            int id = ids[j];
            _work.ChosenIds[layer * k + j] = id;
            _work.ChosenWeights[layer * k + j] = weights[j];
            if ((uint)id >= (uint)e) continue;
            cells[id] |= ExpertCellFlags.Chosen;
            if ((cells[id] & ExpertCellFlags.Resident) == 0) cells[id] |= ExpertCellFlags.Missed;
        }
        _layerPosition[layer] = position;
    }

    // The last layer's output of the block's last token: the token is complete.
    private void Publish(int position)
    {
        _work.Position = position;
        _work.Timestamp = Stopwatch.GetTimestamp();
        _work.Stats = _offloaded?.Stats ?? default;
        EngineEventListener[] listeners;
        lock (_gate)
        {
            _work.Token = Interlocked.Read(ref _tokens);
            _work.CopyTo(_latest);
            Interlocked.Increment(ref _tokens);
            listeners = _listeners;
        }
        foreach (var l in listeners) l.Wake(_work.Token);
    }
}

/// <summary>
/// One subscriber of <see cref="EngineEvents"/>. <see cref="WaitAsync"/> returns once a token newer than the last read is
/// ready; <see cref="TryRead"/> copies the newest token. Tokens that finish between two reads are skipped and counted.
/// </summary>
public sealed class EngineEventListener : IDisposable
{
    private readonly EngineEvents _source;
    // Capacity one, newest wins: the forward pass's write never waits however slowly this listener reads.
    private readonly Channel<long> _wake = Channel.CreateBounded<long>(new BoundedChannelOptions(1)
    {
        FullMode = BoundedChannelFullMode.DropOldest, SingleReader = true, SingleWriter = true,
    });
    private long _lastRead = -1;
    private long _firstSeen = -1;

    internal EngineEventListener(EngineEvents source) => _source = source;

    /// <summary>Tokens finished since subscribing that this listener did not read (the latest one wins).</summary>
    public long Skipped { get; private set; }

    /// <summary>Waits until a token newer than the last one read has finished.</summary>
    /// <exception cref="OperationCanceledException"><paramref name="cancel"/> was cancelled.</exception>
    public async ValueTask WaitAsync(CancellationToken cancel)
    {
        while (true)
        {
            long token = await _wake.Reader.ReadAsync(cancel).ConfigureAwait(false);
            if (token > _lastRead) return;
        }
    }

    /// <summary>Copies the newest finished token into <paramref name="into"/> (from <see cref="EngineEvents.NewRecord"/>).</summary>
    /// <returns>False when no token newer than the last one read has finished.</returns>
    public bool TryRead(EngineEventRecord into)
    {
        long first = Interlocked.Read(ref _firstSeen);
        if (first < 0 || !_source.CopyLatest(into) || into.Token <= _lastRead || into.Token < first) return false;
        long previous = _lastRead >= 0 ? _lastRead : first - 1;
        Skipped += into.Token - previous - 1;
        _lastRead = into.Token;
        return true;
    }

    internal void Wake(long token)
    {
        Interlocked.CompareExchange(ref _firstSeen, token, -1);
        _wake.Writer.TryWrite(token);
    }

    public void Dispose() => _source.Unsubscribe(this);
}
