// A persistent team of threads that splits row ranges of one job at a time. The caller participates; workers spin briefly
// and then block, so back-to-back kernels (a decode step is hundreds of them) hand off in microseconds without allocating.
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;

namespace Pregate.Kernels;

/// <summary>Work over rows [start, end). Implemented by small structs so dispatch is static (no delegate, no boxing).</summary>
public interface IRowJob
{
    /// <summary>Processes rows start ≤ r &lt; end. Called concurrently on disjoint ranges of one shared copy of the job.</summary>
    void Execute(int start, int end);
}

/// <summary>
/// A fixed team of threads (the calling thread plus <c>ThreadCount − 1</c> workers) created once and reused.
/// <see cref="Run{TJob}(ref TJob, int, int)"/> hands out row chunks dynamically; every row is processed by exactly one
/// thread with the same code, so results do not depend on the thread count as long as the job computes each row
/// independently. One <c>Run</c> at a time: concurrent or nested calls throw <see cref="InvalidOperationException"/>.
/// </summary>
public sealed unsafe class WorkerTeam : IDisposable
{
    private const int SpinIterations = 2000;

    private readonly Thread[] _workers;
    private readonly ManualResetEventSlim[] _wake;
    private readonly ManualResetEventSlim _done = new(false);

    // Current job, published before _generation is bumped.
    private void* _job;
    private delegate*<void*, int, int, void> _invoke;
    private int _rows;
    private int _chunk;
    private int _nextRow;
    private int _pending;
    private Exception? _error;

    private int _generation;
    private int _running;
    private volatile bool _disposed;

    /// <summary>Creates a team of <paramref name="threads"/> threads including the caller (≤ 0: <see cref="Environment.ProcessorCount"/>).</summary>
    public WorkerTeam(int threads = 0)
    {
        ThreadCount = threads > 0 ? threads : Environment.ProcessorCount;
        _workers = new Thread[ThreadCount - 1];
        _wake = new ManualResetEventSlim[ThreadCount - 1];
        for (int i = 0; i < _workers.Length; i++)
        {
            _wake[i] = new ManualResetEventSlim(false);
            int index = i;
            _workers[i] = new Thread(() => WorkerLoop(index)) { IsBackground = true, Name = $"pregate-worker-{i + 1}" };
            _workers[i].Start();
        }
    }

    /// <summary>Threads that execute a job, the caller included.</summary>
    public int ThreadCount { get; }

    /// <summary>
    /// Runs <paramref name="job"/> over rows [0, <paramref name="rows"/>) split into chunks of at least
    /// <paramref name="minChunk"/> rows, on all threads; returns when every row is done. The first exception thrown by any
    /// thread is rethrown here (remaining chunks are skipped). The job is shared by reference for the duration of the call.
    /// </summary>
    public void Run<TJob>(ref TJob job, int rows, int minChunk = 1) where TJob : struct, IRowJob
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        if (rows == 0) return;
        if (Interlocked.Exchange(ref _running, 1) != 0)
            throw new InvalidOperationException("WorkerTeam.Run is already in progress (concurrent or nested call)");
        try
        {
            int chunk = Math.Max(Math.Max(1, minChunk), (rows + ThreadCount * 4 - 1) / (ThreadCount * 4));
            if (_workers.Length == 0 || rows <= chunk)
            {
                job.Execute(0, rows);
                return;
            }

            TJob local = job;   // a stack copy has a stable address for the workers
            _job = Unsafe.AsPointer(ref local);
            _invoke = &Invoke<TJob>;
            _rows = rows;
            _chunk = chunk;
            _nextRow = 0;
            _error = null;
            _pending = _workers.Length;
            Interlocked.Increment(ref _generation);
            foreach (var w in _wake) w.Set();

            Work();

            // Wait for the workers: spin first, then block.
            int spins = 0;
            while (Volatile.Read(ref _pending) != 0)
            {
                if (spins++ < SpinIterations) { Thread.SpinWait(20); continue; }
                _done.Wait();
                _done.Reset();
            }
            _job = null;
            job = local;
            if (_error is { } e) ExceptionDispatchInfo.Capture(e).Throw();
        }
        finally
        {
            Volatile.Write(ref _running, 0);
        }
    }

    private static void Invoke<TJob>(void* job, int start, int end) where TJob : struct, IRowJob =>
        Unsafe.AsRef<TJob>(job).Execute(start, end);

    private void Work()
    {
        try
        {
            while (Volatile.Read(ref _error) is null)
            {
                int start = Interlocked.Add(ref _nextRow, _chunk) - _chunk;
                if (start >= _rows) break;
                _invoke(_job, start, Math.Min(_rows, start + _chunk));
            }
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _error, e, null);
        }
    }

    private void WorkerLoop(int index)
    {
        var wake = _wake[index];
        int seen = 0;
        while (true)
        {
            int spins = 0;
            while (Volatile.Read(ref _generation) == seen && !_disposed)
            {
                if (spins++ < SpinIterations) { Thread.SpinWait(20); continue; }
                wake.Wait();
                wake.Reset();
            }
            if (_disposed) return;
            seen = Volatile.Read(ref _generation);
            Work();
            if (Interlocked.Decrement(ref _pending) == 0) _done.Set();
        }
    }

    /// <summary>Stops and joins the workers. Idempotent.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var w in _wake) w.Set();
        foreach (var t in _workers) t.Join();
        foreach (var w in _wake) w.Dispose();
        _done.Dispose();
    }
}
