// The cost model behind --on-miss auto: per missed expert, load it into a slot (O_DIRECT) or compute it in place from the
// memory map, from measured disk and map read rates, the expert's bytes, page-cache residency (mincore) and how often the
// expert and the one a load would evict are used.
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace Pregate.Experts;

/// <summary>
/// Chooses, for an expert that is neither cached nor loading, between a load and an in-place compute. Computing the expert
/// costs the same either way once its bytes are in memory (the same kernels read the same bytes), so only the reads and
/// their later consequences are compared, per byte of the expert (B bytes):
/// <list type="bullet">
/// <item>Its bytes are all in the page cache (mincore over its ranges, the answer kept for <see cref="ResidencyTtl"/>):
/// compute in place. The map read costs nothing more, a load would read B again from the disk (O_DIRECT ignores the
/// page cache) and take a slot.</item>
/// <item>Otherwise, with <c>s_direct</c> the seconds per byte of loader reads (measured: I/O busy time / bytes read),
/// <c>s_map</c> the extra seconds per byte of computing from a cold map (measured: in-place compute time of uncached
/// experts per byte minus that of cached ones), <c>f</c> an expert's use frequency (the share of recent tokens that used
/// it, decayed by <see cref="Decay"/> per token) and <c>victim</c> the expert the load would evict (none when a slot is
/// free):
/// <c>cost(load) = B·s_direct·(1 + f_victim)</c> (read it now, and re-read the victim when it is next needed);
/// <c>cost(compute) = B·(s_map + f_new·s_direct)</c> (read through the map now, and load it when it is next needed).
/// Load when cheaper. An expert used by few tokens that would evict a frequently used one is computed in place; with a
/// free slot the faster O_DIRECT read wins.</item>
/// </list>
/// Until measured, the rates are the priors <see cref="PriorDirectBytesPerSecond"/> and <see cref="PriorMapBytesPerSecond"/>.
/// Only single-token (decode) computes update the map rate: a block's compute time is dominated by arithmetic, not reads.
/// Under a memory cap the map's pages are charged to the cap's page cache and may be dropped and re-read: the measured
/// map rate includes that.
/// </summary>
internal sealed unsafe partial class MissCostModel
{
    /// <summary>Weight of the old use frequency per token.</summary>
    public const double Decay = 0.9;

    /// <summary>How long a page-cache residency answer is reused.</summary>
    public static readonly TimeSpan ResidencyTtl = TimeSpan.FromMilliseconds(50);

    /// <summary>O_DIRECT reads with several in flight before any is measured (bytes/s).</summary>
    public const double PriorDirectBytesPerSecond = 1.0e9;

    /// <summary>Buffered cold reads through page faults before any is measured (bytes/s).</summary>
    public const double PriorMapBytesPerSecond = 0.6e9;

    private const double Smoothing = 0.2;              // weight of a new measurement in the moving averages
    private const long MinimumMeasuredBytes = 1 << 20; // loader bytes before its rate replaces the prior

    private readonly int _expertCount, _partCount;
    private readonly nint[] _pointers;     // [(layer · E + expert) · parts + part] part start in the memory map
    private readonly long[] _lengths;      // same index
    private readonly double[] _frequency;  // [layer · E + expert] decayed share of tokens that used it
    private readonly long[] _frequencyAt;  // token after the block of the last update
    private readonly long[] _residencyAt;  // timestamp of the last mincore answer; 0 = none
    private readonly bool[] _resident;
    private byte[] _pages = [];
    private double _mapSecondsPerByte = 1 / PriorMapBytesPerSecond;       // extra over a cached compute
    private double _computeSecondsPerByte = double.NaN;                     // measured only
    private double _directSecondsPerByte = 1 / PriorDirectBytesPerSecond;

    public MissCostModel(int layerCount, int expertCount, int partCount, nint[] pointers, long[] lengths)
    {
        _expertCount = expertCount;
        _partCount = partCount;
        _pointers = pointers;
        _lengths = lengths;
        int experts = checked(layerCount * expertCount);
        _frequency = new double[experts];
        _frequencyAt = new long[experts];
        _residencyAt = new long[experts];
        _resident = new bool[experts];
    }

    /// <summary>Seconds per byte of loader reads now assumed.</summary>
    public double DirectSecondsPerByte => _directSecondsPerByte;

    /// <summary>Extra seconds per byte of computing from a cold map now assumed.</summary>
    public double MapSecondsPerByte => _mapSecondsPerByte;

    /// <summary>Bytes of an expert's parts.</summary>
    public long BytesOf(ExpertKey key)
    {
        long bytes = 0;
        int at = Index(key) * _partCount;
        for (int p = 0; p < _partCount; p++) bytes += _lengths[at + p];
        return bytes;
    }

    /// <summary>Start and length of part <paramref name="part"/> of <paramref name="key"/> in the memory map.</summary>
    public (nint Pointer, long Length) Part(ExpertKey key, int part)
    {
        int at = Index(key) * _partCount + part;
        return (_pointers[at], _lengths[at]);
    }

    /// <summary>
    /// Records that <paramref name="served"/> of the <paramref name="blockTokens"/> tokens starting at token
    /// <paramref name="token"/> used the expert: <c>f ← f·Decay^T + (1 − Decay^T)·served/T</c> after decaying f over the
    /// tokens since its last update.
    /// </summary>
    public void ObserveUse(ExpertKey key, int served, int blockTokens, long token)
    {
        int i = Index(key);
        int tokens = Math.Max(blockTokens, 1);
        double keep = Math.Pow(Decay, tokens);
        _frequency[i] = FrequencyAt(i, token) * keep + (1 - keep) * served / tokens;
        _frequencyAt[i] = token + tokens;
    }

    /// <summary>The expert's use frequency before token <paramref name="token"/> runs, in [0, 1].</summary>
    public double Frequency(ExpertKey key, long token) => FrequencyAt(Index(key), token);

    /// <summary>Takes the loader's counters: aggregate read rate = bytes read / time with a read in flight.</summary>
    public void ObserveLoader(ExpertCacheStats stats)
    {
        if (stats.BytesRead >= MinimumMeasuredBytes && stats.IoBusy > TimeSpan.Zero)
            _directSecondsPerByte = stats.IoBusy.TotalSeconds / stats.BytesRead;
    }

    /// <summary>Records one single-token compute of <paramref name="bytes"/> in <paramref name="seconds"/>, from cached or cold bytes.</summary>
    public void ObserveCompute(long bytes, double seconds, bool cold)
    {
        if (bytes <= 0 || seconds <= 0) return;
        double perByte = seconds / bytes;
        if (!cold)
        {
            _computeSecondsPerByte = double.IsNaN(_computeSecondsPerByte) ? perByte : Blend(_computeSecondsPerByte, perByte);
            return;
        }
        if (double.IsNaN(_computeSecondsPerByte)) return; // the extra over a cached compute is not known yet
        _mapSecondsPerByte = Blend(_mapSecondsPerByte, Math.Max(0, perByte - _computeSecondsPerByte));
    }

    /// <summary>
    /// True when the model prefers computing <paramref name="key"/> in place over loading it; <paramref name="victim"/> is
    /// the expert a load would evict (null: a slot is free). Sets <paramref name="pageCached"/> to whether its bytes were
    /// all in the page cache.
    /// </summary>
    public bool PreferCompute(ExpertKey key, ExpertKey? victim, long token, out bool pageCached)
    {
        pageCached = IsPageCached(key);
        if (pageCached) return true;
        double victimFrequency = victim is { } v ? Frequency(v, token) : 0;
        double load = _directSecondsPerByte * (1 + victimFrequency);
        double compute = _mapSecondsPerByte + Frequency(key, token) * _directSecondsPerByte;
        return compute < load;
    }

    /// <summary>True when every page of the expert's parts is in the page cache (mincore; false where unsupported).</summary>
    public bool IsPageCached(ExpertKey key)
    {
        int i = Index(key);
        long now = Stopwatch.GetTimestamp();
        if (_residencyAt[i] != 0 && Stopwatch.GetElapsedTime(_residencyAt[i], now) < ResidencyTtl) return _resident[i];
        bool resident = OperatingSystem.IsLinux();
        for (int p = 0; p < _partCount && resident; p++) resident = AllPagesCached(_pointers[i * _partCount + p], _lengths[i * _partCount + p]);
        _residencyAt[i] = now;
        return _resident[i] = resident;
    }

    /// <summary>Asks the kernel to start reading the expert's pages (MADV_WILLNEED), so an in-place compute finds them sooner.</summary>
    public void AdviseWillNeed(ExpertKey key)
    {
        if (!OperatingSystem.IsLinux()) return;
        long page = Environment.SystemPageSize;
        int at = Index(key) * _partCount;
        for (int p = 0; p < _partCount; p++)
        {
            if (_lengths[at + p] == 0) continue;
            long start = _pointers[at + p] / page * page;
            long end = (_pointers[at + p] + _lengths[at + p] + page - 1) / page * page;
            _ = Madvise((void*)start, (nuint)(end - start), AdviseWillNeedFlag); // advisory: a refusal only slows the fault
        }
    }

    private bool AllPagesCached(nint pointer, long length)
    {
        if (length == 0) return true;
        long page = Environment.SystemPageSize;
        long start = pointer / page * page;
        long end = (pointer + length + page - 1) / page * page;
        int pages = checked((int)((end - start) / page));
        if (_pages.Length < pages) _pages = new byte[pages];
        fixed (byte* vector = _pages)
            if (Mincore((void*)start, (nuint)(end - start), vector) != 0) return false;
        for (int i = 0; i < pages; i++)
            if ((_pages[i] & 1) == 0) return false;
        return true;
    }

    private double FrequencyAt(int i, long token) => _frequency[i] * Math.Pow(Decay, Math.Max(0, token - _frequencyAt[i]));

    private static double Blend(double old, double sample) => (1 - Smoothing) * old + Smoothing * sample;

    private int Index(ExpertKey key) => key.Layer * _expertCount + key.Expert;

    private const int AdviseWillNeedFlag = 3;

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(void* address, nuint length, int advice);

    [LibraryImport("libc", EntryPoint = "mincore")]
    private static partial int Mincore(void* address, nuint length, byte* residency);
}
