// Progress of long writes and loads on stderr: a percentage line that updates in place on a terminal,
// and a few plain lines when stderr is redirected.
using System.Diagnostics;

namespace Pregate.Cli;

internal sealed class ConsoleProgress(TextWriter err, string what, long total) : IProgress<long>
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly bool _interactive = ReferenceEquals(err, Console.Error) && !Console.IsErrorRedirected;
    private long _done;
    private int _lastPercent = -1;
    private long _lastTick;

    public void Report(long bytes)
    {
        _done = bytes; // writers report a running total
        if (total < (64L << 20)) return; // small outputs finish before progress is worth printing
        int pct = (int)(100 * Math.Min(_done, total) / Math.Max(total, 1));
        long now = _clock.ElapsedMilliseconds;
        bool step = _interactive ? pct != _lastPercent && now - _lastTick > 200 : pct / 25 != _lastPercent / 25;
        if (!step) return;
        _lastPercent = pct;
        _lastTick = now;
        string line = $"{what} {pct,3}%  {Units.Bytes(_done)} / {Units.Bytes(total)}";
        if (_interactive) err.Write("\r" + line);
        else err.WriteLine(line);
    }

    public void Done()
    {
        if (_interactive && _lastPercent >= 0) err.WriteLine();
    }
}
