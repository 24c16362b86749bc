// Shares one model session between concurrent callers by continuous batching (Orca-style iteration-level scheduling):
// a fixed number of sequence slots (each with its own KV cache), a bounded queue of callers waiting for a slot, and one
// decode thread that prefills newly admitted prompts (one block of tokens between two decode steps, so a long prompt does
// not stall the running sequences), then decodes every running sequence together in one batched step
// (MoeModel.ForwardStep) per token; sequences join and leave the batch between steps.
using System.Diagnostics;
using Pregate.Models;

namespace Pregate.Engine;

/// <summary>The wait queue of a <see cref="GenerationScheduler"/> is full; the caller should retry later.</summary>
public sealed class SchedulerFullException(string message) : Exception(message);

/// <summary>
/// Runs the generations of one <see cref="ModelSession"/> for concurrent callers. At most <see cref="MaxConcurrent"/>
/// sequences hold a slot at once (slot 0 uses the session's own state, the others get states of the same context length);
/// up to <see cref="MaxQueued"/> more callers wait; beyond that <see cref="AcquireAsync"/> throws
/// <see cref="SchedulerFullException"/>. Generations run on one decode thread: a new sequence's prompt is prefilled in
/// blocks of the state's <see cref="InferenceState.MaxBatch"/> tokens, one block between two decode steps, then it joins the
/// running sequences, which all advance by one token per batched step, each sampled with its own
/// settings and streamed to its own caller. A sequence leaves the batch when it ends (token limit, EOS, stop string, full
/// context) or, at the next step, when its caller cancels. While a scheduler is in use, run the session only through it.
/// </summary>
public sealed class GenerationScheduler
{
    private readonly Stack<InferenceState> _free = new();
    private readonly SemaphoreSlim _slots;
    private readonly Lock _gate = new();
    private readonly List<Sequence> _incoming = new();   // submitted, not yet prefilled (under _gate)
    private readonly List<Sequence> _prefilling = new(); // decode thread only: admitted, prompt not yet all run
    private readonly List<Sequence> _batch = new();      // decode thread only: the running sequences
    private readonly float[] _prefillLogits;             // [V]
    private DecodeBatch? _scratch;                       // grown to the largest batch seen, at most MaxConcurrent
    private float[] _stepLogits = [];                    // [B, V]
    private InferenceState[] _stepStates = [];
    private int[] _stepTokens = [];
    private bool _loopActive;
    private int _admitted;   // running + waiting
    private int _running;
    private long _steps, _stepTokensTotal;

    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxConcurrent"/> outside 1..256 or <paramref name="maxQueued"/> outside 0..100000.</exception>
    public GenerationScheduler(ModelSession session, int maxConcurrent = 1, int maxQueued = 16)
    {
        ArgumentNullException.ThrowIfNull(session);
        if (maxConcurrent is < 1 or > 256) throw new ArgumentOutOfRangeException(nameof(maxConcurrent), maxConcurrent, "concurrent sequences must be between 1 and 256");
        if (maxQueued is < 0 or > 100_000) throw new ArgumentOutOfRangeException(nameof(maxQueued), maxQueued, "the queue length must be between 0 and 100000");
        Session = session;
        MaxConcurrent = maxConcurrent;
        MaxQueued = maxQueued;
        for (int i = maxConcurrent - 1; i >= 0; i--)
            _free.Push(i == 0 ? session.State : session.Model.CreateState(session.State.Context));
        _slots = new SemaphoreSlim(maxConcurrent, maxConcurrent);
        _prefillLogits = new float[session.Config.VocabSize];
    }

    public ModelSession Session { get; }
    public int MaxConcurrent { get; }
    public int MaxQueued { get; }

    /// <summary>Sequences holding a slot now (generating, or about to).</summary>
    public int Running => Volatile.Read(ref _running);

    /// <summary>Callers waiting for a slot.</summary>
    public int Queued => Math.Max(0, Volatile.Read(ref _admitted) - Volatile.Read(ref _running));

    /// <summary>Batched decode steps run so far.</summary>
    public long DecodeSteps => Interlocked.Read(ref _steps);

    /// <summary>Tokens those steps decoded (Σ batch sizes); divided by <see cref="DecodeSteps"/>, the mean batch size.</summary>
    public long DecodedTokens => Interlocked.Read(ref _stepTokensTotal);

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
        InferenceState state;
        lock (_gate) state = _free.Pop();
        Interlocked.Increment(ref _running);
        return new GenerationLease(this, state);
    }

    internal void Release(InferenceState state)
    {
        lock (_gate) _free.Push(state);
        Interlocked.Decrement(ref _running);
        Interlocked.Decrement(ref _admitted);
        _slots.Release();
    }

    // Hands a generation to the decode thread (starting it when idle); the task ends when the sequence leaves the batch.
    internal Task<GenerationResult> Submit(InferenceState state, IReadOnlyList<int> promptIds, GenerationOptions options, Action<string>? onText,
        CancellationToken cancel)
    {
        SequenceDecoding decoding;
        try
        {
            decoding = new SequenceDecoding(Session.Tokenizer, Session.Config.VocabSize, state.Context, promptIds, options, onText);
        }
        catch (ArgumentException e)
        {
            return Task.FromException<GenerationResult>(e);
        }
        var sequence = new Sequence(state, promptIds.ToArray(), decoding, cancel);
        lock (_gate)
        {
            _incoming.Add(sequence);
            if (!_loopActive)
            {
                _loopActive = true;
                new Thread(DecodeLoop) { IsBackground = true, Name = "pregate-decode" }.Start();
            }
        }
        return sequence.Completion.Task;
    }

    // The decode thread: admit new sequences, drop cancelled ones, run one block of the oldest unfinished prompt, then one
    // batched step of the running sequences; it ends when nothing is running, being prefilled or waiting to start.
    private void DecodeLoop()
    {
        while (true)
        {
            lock (_gate)
            {
                if (_incoming.Count == 0 && _prefilling.Count == 0 && _batch.Count == 0)
                {
                    _loopActive = false;
                    return;
                }
                _prefilling.AddRange(_incoming);
                _incoming.Clear();
            }
            for (int i = _prefilling.Count - 1; i >= 0; i--)
                if (_prefilling[i].Cancel.IsCancellationRequested)
                {
                    _prefilling[i].Completion.TrySetCanceled(_prefilling[i].Cancel);
                    _prefilling.RemoveAt(i);
                }
            if (_prefilling.Count > 0 && PrefillBlock(_prefilling[0])) _prefilling.RemoveAt(0);
            for (int i = _batch.Count - 1; i >= 0; i--)
                if (_batch[i].Cancel.IsCancellationRequested) Leave(i, s => s.Completion.TrySetCanceled(s.Cancel));
            if (_batch.Count > 0) Step();
        }
    }

    // Runs the next block of the prompt (the same blocks one Forward of the whole prompt runs); after the last one samples
    // the first token, and the sequence joins the batch unless it already ended. True when the prompt is done (or failed).
    private bool PrefillBlock(Sequence s)
    {
        try
        {
            if (s.Prefilled == 0) s.State.Reset();
            int count = Math.Min(s.State.MaxBatch, s.Prompt.Length - s.Prefilled);
            bool last = s.Prefilled + count == s.Prompt.Length;
            long start = Stopwatch.GetTimestamp();
            Session.Model.Forward(s.State, s.Prompt.AsSpan(s.Prefilled, count), last ? _prefillLogits : default, allPositions: false, Session.Team);
            s.PrefillTime += Stopwatch.GetElapsedTime(start);
            s.Prefilled += count;
            if (!last) return false;
            s.DecodeStart = Stopwatch.GetTimestamp();
            if (s.Decoding.Accept(_prefillLogits, s.State.Position)) _batch.Add(s);
            else Complete(s);
        }
        catch (Exception e)
        {
            s.Completion.TrySetException(e);
        }
        return true;
    }

    private void Step()
    {
        int n = _batch.Count, vocab = Session.Config.VocabSize;
        try
        {
            EnsureCapacity(n);
            for (int b = 0; b < n; b++)
            {
                _stepStates[b] = _batch[b].State;
                _stepTokens[b] = _batch[b].Decoding.NextToken;
            }
            Session.Model.ForwardStep(_scratch!, _stepStates.AsSpan(0, n), _stepTokens.AsSpan(0, n), _stepLogits.AsSpan(0, n * vocab), Session.Team);
        }
        catch (Exception e)
        {
            // The step failed for all (e.g. an expert could not be read, or no memory for a larger batch): every sequence fails.
            for (int i = n - 1; i >= 0; i--) Leave(i, s => s.Completion.TrySetException(e));
            return;
        }
        Interlocked.Increment(ref _steps);
        Interlocked.Add(ref _stepTokensTotal, n);
        // Sample every row first, then remove the finished ones from the end so indices stay valid.
        Array.Clear(_stepStates, 0, n);
        for (int b = n - 1; b >= 0; b--)
        {
            var s = _batch[b];
            bool goesOn;
            try
            {
                goesOn = s.Decoding.Accept(_stepLogits.AsSpan(b * vocab, vocab), s.State.Position);
            }
            catch (Exception e)
            {
                Leave(b, x => x.Completion.TrySetException(e));
                continue;
            }
            if (!goesOn) Leave(b, Complete);
        }
    }

    private void Leave(int index, Action<Sequence> finish)
    {
        var s = _batch[index];
        _batch.RemoveAt(index);
        finish(s);
    }

    private static void Complete(Sequence s)
    {
        try
        {
            s.Completion.TrySetResult(s.Decoding.Finish(s.PrefillTime, Stopwatch.GetElapsedTime(s.DecodeStart)));
        }
        catch (Exception e)
        {
            s.Completion.TrySetException(e);
        }
    }

    // Step buffers for n sequences, grown (doubling, up to MaxConcurrent) only when a batch is larger than any before.
    private void EnsureCapacity(int n)
    {
        if (_scratch is not null && _scratch.MaxSequences >= n) return;
        int capacity = Math.Min(MaxConcurrent, Math.Max(n, 2 * (_scratch?.MaxSequences ?? 2)));
        _scratch = Session.Model.CreateDecodeBatch(capacity);
        _stepLogits = new float[checked(capacity * Session.Config.VocabSize)];
        _stepStates = new InferenceState[capacity];
        _stepTokens = new int[capacity];
    }

    private sealed class Sequence(InferenceState state, int[] prompt, SequenceDecoding decoding, CancellationToken cancel)
    {
        public InferenceState State { get; } = state;
        public int[] Prompt { get; } = prompt;
        public SequenceDecoding Decoding { get; } = decoding;
        public CancellationToken Cancel { get; } = cancel;
        public TaskCompletionSource<GenerationResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Prefilled { get; set; }      // prompt tokens run so far
        public TimeSpan PrefillTime { get; set; }
        public long DecodeStart { get; set; }
    }
}

/// <summary>One sequence slot, held until disposed.</summary>
public sealed class GenerationLease : IDisposable
{
    private readonly GenerationScheduler _owner;
    private readonly InferenceState _state;
    private readonly Lock _gate = new();
    private Task? _running;
    private bool _disposed;

    internal GenerationLease(GenerationScheduler owner, InferenceState state)
    {
        _owner = owner;
        _state = state;
    }

    /// <summary>
    /// Generates on the scheduler's decode thread (the prompt in prefill blocks between decode steps, then one token per
    /// batched step with the other running sequences), with the same tokens as <see cref="Generator.Generate(IReadOnlyList{int}, GenerationOptions, Action{string}?, CancellationToken)"/>
    /// alone. <paramref name="onText"/> is called on the decode thread: keep it short. Cancelling <paramref name="cancel"/>
    /// ends the sequence at the next step (the task is then cancelled). Bad arguments give a faulted task
    /// (<see cref="ArgumentException"/>). One generation at a time per lease.
    /// </summary>
    /// <exception cref="InvalidOperationException">The lease is disposed or already generating.</exception>
    public Task<GenerationResult> GenerateAsync(IReadOnlyList<int> promptIds, GenerationOptions options, Action<string>? onText = null,
        CancellationToken cancel = default)
    {
        lock (_gate)
        {
            if (_disposed) throw new InvalidOperationException("the lease has been disposed");
            if (_running is { IsCompleted: false }) throw new InvalidOperationException("the lease is already generating");
            var task = _owner.Submit(_state, promptIds, options, onText, cancel);
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
        if (running is null || running.IsCompleted) _owner.Release(_state);
        else running.ContinueWith(_ => _owner.Release(_state), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }
}
