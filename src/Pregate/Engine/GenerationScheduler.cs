// Shares one model session between concurrent callers: a fixed number of sequence slots (each with its own KV cache),
// forward passes serialized on the session's worker team, and a bounded queue of callers waiting for a slot.
// Sequences interleave token by token; decoding several sequences in one batched step is not done here.
namespace Pregate.Engine;

/// <summary>The wait queue of a <see cref="GenerationScheduler"/> is full; the caller should retry later.</summary>
public sealed class SchedulerFullException(string message) : Exception(message);

/// <summary>
/// Hands out generators of one <see cref="ModelSession"/> to concurrent callers. At most <see cref="MaxConcurrent"/>
/// sequences run at once (slot 0 uses the session's own state, the others get states of the same context length);
/// up to <see cref="MaxQueued"/> more callers wait; beyond that <see cref="AcquireAsync"/> throws
/// <see cref="SchedulerFullException"/>. While a scheduler is in use, run the session only through it.
/// </summary>
public sealed class GenerationScheduler
{
    private readonly Stack<Generator> _free = new();
    private readonly SemaphoreSlim _slots;
    private readonly Lock _gate = new();
    private int _admitted;   // running + waiting
    private int _running;
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxConcurrent"/> outside 1..256 or <paramref name="maxQueued"/> outside 0..100000.</exception>
    public GenerationScheduler(ModelSession session, int maxConcurrent = 1, int maxQueued = 16)
    {
        ArgumentNullException.ThrowIfNull(session);
        if (maxConcurrent is < 1 or > 256) throw new ArgumentOutOfRangeException(nameof(maxConcurrent), maxConcurrent, "concurrent sequences must be between 1 and 256");
        if (maxQueued is < 0 or > 100_000) throw new ArgumentOutOfRangeException(nameof(maxQueued), maxQueued, "the queue length must be between 0 and 100000");
        Session = session;
        MaxConcurrent = maxConcurrent;
        MaxQueued = maxQueued;
        // One slot needs no lock: its forward passes never overlap with another's.
        Lock? forward = maxConcurrent > 1 ? new Lock() : null;
        for (int i = maxConcurrent - 1; i >= 0; i--)
        {
            var state = i == 0 ? session.State : session.Model.CreateState(session.State.Context);
            _free.Push(new Generator(session.Model, session.Tokenizer, state, session.Team) { ForwardLock = forward });
        }
        _slots = new SemaphoreSlim(maxConcurrent, maxConcurrent);
    }

    public ModelSession Session { get; }
    public int MaxConcurrent { get; }
    public int MaxQueued { get; }

    /// <summary>Sequences generating now.</summary>
    public int Running => Volatile.Read(ref _running);

    /// <summary>Callers waiting for a slot.</summary>
    public int Queued => Math.Max(0, Volatile.Read(ref _admitted) - Volatile.Read(ref _running));

    /// <summary>
    /// Waits for a free slot. Dispose the lease to give the slot back. Cancelling <paramref name="cancel"/> while waiting
    /// leaves the queue.
    /// </summary>
    /// <exception cref="SchedulerFullException">All slots are busy and the queue is full.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancel"/> was cancelled while waiting.</exception>
    public async Task<GenerationLease> AcquireAsync(CancellationToken cancel = default)
    {
        if (Interlocked.Increment(ref _admitted) > MaxConcurrent + MaxQueued)
        {
            Interlocked.Decrement(ref _admitted);
            throw new SchedulerFullException($"the server is busy: {MaxConcurrent} sequence(s) running and {MaxQueued} waiting; retry later");
        }
        try
        {
            await _slots.WaitAsync(cancel).ConfigureAwait(false);
        }
        catch
        {
            Interlocked.Decrement(ref _admitted);
            throw;
        }
        Generator g;
        lock (_gate) g = _free.Pop();
        Interlocked.Increment(ref _running);
        return new GenerationLease(this, g);
    }

    internal void Release(Generator g)
    {
        lock (_gate) _free.Push(g);
        Interlocked.Decrement(ref _running);
        Interlocked.Decrement(ref _admitted);
        _slots.Release();
    }
}

/// <summary>One sequence slot, held until disposed.</summary>
public sealed class GenerationLease : IDisposable
{
    private readonly GenerationScheduler _owner;
    private readonly Lock _gate = new();
    private Task? _running;
    private bool _disposed;

    internal GenerationLease(GenerationScheduler owner, Generator generator)
    {
        _owner = owner;
        Generator = generator;
    }

    /// <summary>The slot's generator; use it only until the lease is disposed.</summary>
    public Generator Generator { get; }

    /// <summary>
    /// Runs <see cref="Generator.Generate(IReadOnlyList{int}, GenerationOptions, Action{string}?, CancellationToken)"/>
    /// on a thread of its own, so asynchronous callers are never blocked by the model. One generation at a time per lease.
    /// </summary>
    /// <exception cref="InvalidOperationException">The lease is disposed or already generating.</exception>
    public Task<GenerationResult> GenerateAsync(IReadOnlyList<int> promptIds, GenerationOptions options, Action<string>? onText = null,
        CancellationToken cancel = default)
    {
        lock (_gate)
        {
            if (_disposed) throw new InvalidOperationException("the lease has been disposed");
            if (_running is { IsCompleted: false }) throw new InvalidOperationException("the lease is already generating");
            var task = Task.Factory.StartNew(() => Generator.Generate(promptIds, options, onText, cancel), CancellationToken.None,
                TaskCreationOptions.LongRunning, TaskScheduler.Default);
            _running = task;
            return task;
        }
    }

    /// <summary>Gives the slot back; when a generation is still running (e.g. being cancelled), once it has finished.</summary>
    public void Dispose()
    {
        Task? running;
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            running = _running;
        }
        if (running is null || running.IsCompleted) _owner.Release(Generator);
        else running.ContinueWith(_ => _owner.Release(Generator), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }
}
