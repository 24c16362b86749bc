// A persistent team of threads that splits row ranges of one job at a time. The caller participates; workers spin briefly
// and then block, so back-to-back kernels (a decode step is hundreds of them) hand off in microseconds without allocating.
// Workers that wake too late to find work are never waited for: the caller closes the job once every chunk is claimed
// and waits only for threads still executing one.
using System.Diagnostics;
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
    // How long an idle thread spins before blocking: long enough to bridge the gaps between the kernels of a forward
    // pass, short enough not to burn a core between tokens.
    private static readonly long SpinTicks = Stopwatch.Frequency / 20_000;   // 50 µs

    private readonly Thread[] _workers;
    private readonly ManualResetEventSlim[] _wake;
    private readonly ManualResetEventSlim _done = new(false);

    // The current job; written before _open is set, valid while a thread holds _inFlight.
    private void* _job;
    private delegate*<void*, int, int, void> _invoke;
    private int _rows;
    private int _chunk;
    private int _nextRow;
    private Exception? _error;

    private int _open;        // 1 while the job accepts helpers
    private int _inFlight;    // workers inside the current job
    private int _generation;  // bumped once per job
    private int _running;     // guards against concurrent / nested Run
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
    /// Runs <paramref name="job"/> over rows [0, <paramref name="rows"/>) split into about
    /// <paramref name="chunksPerThread"/> chunks per thread (more chunks balance rows of uneven cost), each of at least
    /// <paramref name="minChunk"/> rows and a multiple of <paramref name="granule"/> rows (so chunks start on a group of
    /// interleaved rows), on all threads, and returns when every row is done. The first exception thrown
    /// on any thread is rethrown here (chunks not yet started are skipped). The job is shared by reference during the call.
    /// </summary>
    public void Run<TJob>(ref TJob job, int rows, int minChunk = 1, int chunksPerThread = 4, int granule = 1) where TJob : struct, IRowJob
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        if (rows == 0) return;
        if (Interlocked.Exchange(ref _running, 1) != 0)
            throw new InvalidOperationException("WorkerTeam.Run is already in progress (concurrent or nested call)");
        try
        {
            int chunks = ThreadCount * Math.Max(1, chunksPerThread);
            int chunk = Math.Max(Math.Max(1, minChunk), (rows + chunks - 1) / chunks);
            if (granule > 1) chunk = (int)Math.Min(rows, ((long)chunk + granule - 1) / granule * granule);
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
            Volatile.Write(ref _open, 1);
            Interlocked.Increment(ref _generation);
            foreach (var w in _wake) w.Set();

            Work();

            // No new helpers from here on; wait for those still executing a chunk.
            Interlocked.Exchange(ref _open, 0);
            long deadline = Stopwatch.GetTimestamp() + SpinTicks;
            while (Volatile.Read(ref _inFlight) != 0)
            {
                if (Stopwatch.GetTimestamp() < deadline) { Thread.SpinWait(8); continue; }
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
            long deadline = Stopwatch.GetTimestamp() + SpinTicks;
            while (Volatile.Read(ref _generation) == seen && !_disposed)
            {
                if (Stopwatch.GetTimestamp() < deadline) { Thread.SpinWait(8); continue; }
                wake.Wait();
                wake.Reset();
            }
            if (_disposed) return;
            seen = Volatile.Read(ref _generation);

            // Join only while the job is open; the caller, having closed it, waits for every thread that got in.
            Interlocked.Increment(ref _inFlight);
            if (Volatile.Read(ref _open) == 1) Work();
            if (Interlocked.Decrement(ref _inFlight) == 0) _done.Set();
        }
    }

    /// <summary>Stops and joins the workers. Idempotent; not to be called while a Run is in progress.</summary>
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
