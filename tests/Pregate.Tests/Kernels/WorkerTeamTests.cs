// The worker team: every row exactly once, exceptions reach the caller, no concurrent or nested runs, many quick hand-offs.
using Pregate.Kernels;

namespace Pregate.Tests.Kernels;

public class WorkerTeamTests
{
    private struct CountRows : IRowJob
    {
        public int[] Hits;
        public int[] Thread;

        public readonly void Execute(int start, int end)
        {
            for (int r = start; r < end; r++)
            {
                Interlocked.Increment(ref Hits[r]);
                Thread[r] = Environment.CurrentManagedThreadId;
            }
        }
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 1)]
    [InlineData(2, 1001)]
    [InlineData(3, 7)]
    [InlineData(3, 10_000)]
    [InlineData(8, 33)]
    public void EveryRowRunsExactlyOnce(int threads, int rows)
    {
        using var team = new WorkerTeam(threads);
        Assert.Equal(threads, team.ThreadCount);
        for (int round = 0; round < 20; round++)
        {
            var job = new CountRows { Hits = new int[rows], Thread = new int[rows] };
            team.Run(ref job, rows);
            Assert.All(job.Hits, h => Assert.Equal(1, h));
        }
    }

    [Fact]
    public void WorkIsSharedWhenThereIsEnough()
    {
        using var team = new WorkerTeam(3);
        var job = new CountRows { Hits = new int[30_000], Thread = new int[30_000] };
        // Slow rows so the workers wake up before the caller finishes alone.
        var slow = new SlowRows { Inner = job };
        team.Run(ref slow, 30_000);
        Assert.All(job.Hits, h => Assert.Equal(1, h));
        Assert.True(job.Thread.Distinct().Count() >= 2, "rows should be spread over more than one thread");
    }

    private struct SlowRows : IRowJob
    {
        public CountRows Inner;

        public readonly void Execute(int start, int end)
        {
            for (int r = start; r < end; r++)
            {
                System.Threading.Thread.SpinWait(200);
                Inner.Execute(r, r + 1);
            }
        }
    }

    private struct Throwing : IRowJob
    {
        public int BadRow;

        public readonly void Execute(int start, int end)
        {
            if (BadRow >= start && BadRow < end) throw new InvalidDataException($"row {BadRow}");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(4)]
    public void ExceptionsReachTheCallerAndTheTeamStaysUsable(int threads)
    {
        using var team = new WorkerTeam(threads);
        for (int bad = 0; bad < 1000; bad += 97)
        {
            var job = new Throwing { BadRow = bad };
            var e = Assert.Throws<InvalidDataException>(() => team.Run(ref job, 1000));
            Assert.Equal($"row {bad}", e.Message);
        }
        var ok = new CountRows { Hits = new int[1000], Thread = new int[1000] };
        team.Run(ref ok, 1000);
        Assert.All(ok.Hits, h => Assert.Equal(1, h));
    }

    private struct Nested : IRowJob
    {
        public WorkerTeam Team;

        public readonly void Execute(int start, int end)
        {
            var inner = new CountRows { Hits = new int[4], Thread = new int[4] };
            Team.Run(ref inner, 4);
        }
    }

    [Fact]
    public void NestedRunThrows()
    {
        using var team = new WorkerTeam(2);
        var job = new Nested { Team = team };
        Assert.Throws<InvalidOperationException>(() => team.Run(ref job, 1));
    }

    private struct Accumulate : IRowJob
    {
        public long[] Sums;

        public readonly void Execute(int start, int end)
        {
            for (int r = start; r < end; r++) Sums[r] += r;
        }
    }

    [Fact]
    public void ManyQuickRunsInARow()
    {
        using var team = new WorkerTeam(3);
        var sums = new long[64];
        for (int i = 0; i < 20_000; i++)
        {
            var job = new Accumulate { Sums = sums };
            team.Run(ref job, 64);
        }
        for (int r = 0; r < 64; r++) Assert.Equal(20_000L * r, sums[r]);
    }

    [Fact]
    public void DisposeIsIdempotentAndRunAfterDisposeThrows()
    {
        var team = new WorkerTeam(2);
        team.Dispose();
        team.Dispose();
        var job = new CountRows { Hits = new int[1], Thread = new int[1] };
        Assert.Throws<ObjectDisposedException>(() => team.Run(ref job, 1));
    }

    [Fact]
    public void DefaultSizeIsTheProcessorCount()
    {
        using var team = new WorkerTeam();
        Assert.Equal(Environment.ProcessorCount, team.ThreadCount);
    }
}
