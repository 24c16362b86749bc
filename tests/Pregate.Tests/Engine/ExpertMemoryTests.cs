// --expert-memory parsing (sizes, percentages, all; and what is rejected), the automatic budget, and reading the memory
// available from /proc/meminfo and cgroup v1/v2 limit files (fed through a fake file reader).
using Pregate.Engine;
using Xunit.Abstractions;

namespace Pregate.Tests.Engine;

public sealed class ExpertMemoryTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("2GiB", 2L << 30)]
    [InlineData("512MiB", 512L << 20)]
    [InlineData("512 MiB", 512L << 20)]
    [InlineData("1.5GB", 1_500_000_000L)]
    [InlineData("1.5gib", 3L << 29)]
    [InlineData("4096", 4096L)]
    [InlineData("10B", 10L)]
    [InlineData("3g", 3L << 30)]
    [InlineData("0.5K", 512L)]
    [InlineData("2TB", 2_000_000_000_000L)]
    [InlineData(" 64KiB ", 64L << 10)]
    [InlineData("250kb", 250_000L)]
    public void SizesParseToBytes(string text, long bytes)
    {
        Assert.True(ExpertMemory.TryParse(text, out var m, out string error), error);
        Assert.Equal(ExpertMemoryKind.Bytes, m.Kind);
        Assert.Equal(bytes, m.Bytes);
        Assert.Equal(bytes, m.BudgetBytes(totalExpertBytes: 1));
        Assert.Equal(m, ExpertMemory.Parse(text));
    }

    [Theory]
    [InlineData("25%", 0.25)]
    [InlineData("100%", 1.0)]
    [InlineData("0.5%", 0.005)]
    [InlineData("12.5 %", 0.125)]
    public void PercentagesParseToFractionsOfTheExpertBytes(string text, double fraction)
    {
        Assert.True(ExpertMemory.TryParse(text, out var m, out string error), error);
        Assert.Equal(ExpertMemoryKind.Fraction, m.Kind);
        Assert.Equal(fraction, m.Fraction, 12);
        Assert.Equal((long)Math.Floor(fraction * 1_000_000), m.BudgetBytes(1_000_000));
    }

    [Theory]
    [InlineData("all")]
    [InlineData("ALL")]
    [InlineData(" All ")]
    public void AllMeansResident(string text)
    {
        var m = ExpertMemory.Parse(text);
        Assert.True(m.IsResident);
        Assert.Equal("all", m.ToString());
        Assert.Throws<InvalidOperationException>(() => m.BudgetBytes(100));
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("abc")]
    [InlineData("-1GiB")]
    [InlineData("0")]
    [InlineData("0GiB")]
    [InlineData("0.1B")]
    [InlineData("0%")]
    [InlineData("150%")]
    [InlineData("-5%")]
    [InlineData("%")]
    [InlineData("NaN%")]
    [InlineData("Infinity%")]
    [InlineData("GiB")]
    [InlineData("12XB")]
    [InlineData("1.2.3MB")]
    [InlineData("1e9")]
    [InlineData("2 GiB extra")]
    [InlineData("99999999999TiB")]
    [InlineData("all%")]
    public void MalformedBudgetsAreRejectedWithAReason(string text)
    {
        Assert.False(ExpertMemory.TryParse(text, out _, out string error));
        output.WriteLine($"'{text}': {error}");
        Assert.False(string.IsNullOrWhiteSpace(error));
        var e = Assert.Throws<FormatException>(() => ExpertMemory.Parse(text));
        Assert.Equal(error, e.Message);
    }

    [Fact]
    public void ToStringRoundTrips()
    {
        foreach (string text in new[] { "25%", "all", "512MiB", "1.5GiB" })
        {
            var m = ExpertMemory.Parse(text);
            output.WriteLine($"{text} -> {m}");
            Assert.Equal(m, ExpertMemory.Parse(m.ToString()));
        }
        Assert.Equal("9.19 MiB", ByteSize.Format(9_633_792));
        Assert.Equal("512 B", ByteSize.Format(512));
        Assert.Equal("1.50 GiB", ByteSize.Format(3L << 29));
    }

    [Fact]
    public void AutomaticBudgetIsResidentWhenTheModelTakesAtMostHalfTheMemory()
    {
        const long GiB = 1L << 30;
        Assert.True(ExpertMemory.Automatic(modelBytes: 4 * GiB, reservedBytes: GiB, availableBytes: 8 * GiB, minimumBudgetBytes: 100).IsResident);
        Assert.True(ExpertMemory.Automatic(4 * GiB, GiB, availableBytes: null, 100).IsResident);
        var offloaded = ExpertMemory.Automatic(modelBytes: 4 * GiB + 1, reservedBytes: GiB, availableBytes: 8 * GiB, minimumBudgetBytes: 100);
        Assert.Equal(ExpertMemoryKind.Bytes, offloaded.Kind);
        Assert.Equal(3 * GiB, offloaded.Bytes);
        // Never below the minimum, even when the resident weights alone take half the memory.
        Assert.Equal(5 * GiB, ExpertMemory.Automatic(100 * GiB, 10 * GiB, 8 * GiB, minimumBudgetBytes: 5 * GiB).Bytes);
    }

    [Fact]
    public void MemAvailableIsReadFromMeminfo()
    {
        const string meminfo = "MemTotal:       24608224 kB\nMemFree:        19000000 kB\nMemAvailable:   21012345 kB\nBuffers:  1 kB\n";
        Assert.Equal(21012345L * 1024, SystemMemory.ParseMemAvailable(meminfo));
        Assert.Null(SystemMemory.ParseMemAvailable("MemTotal: 1 kB\n"));
        Assert.Null(SystemMemory.ParseMemAvailable("MemAvailable: lots kB\n"));
    }

    [Fact]
    public void CgroupV1LimitOfTheProcessGroupAndItsAncestorsCounts()
    {
        var files = new Dictionary<string, string>
        {
            ["/proc/meminfo"] = "MemAvailable:   20971520 kB\n", // 20 GiB
            ["/proc/self/cgroup"] = "12:cpu,cpuacct:/\n9:memory:/bench/run1\n1:name=systemd:/\n",
            ["/sys/fs/cgroup/memory/bench/run1/memory.limit_in_bytes"] = "9223372036854771712\n", // no limit
            ["/sys/fs/cgroup/memory/bench/memory.limit_in_bytes"] = "419430400\n",                // 400 MiB on the parent
            ["/sys/fs/cgroup/memory/memory.limit_in_bytes"] = "9223372036854771712\n",
        };
        var listed = SystemMemory.CgroupLimitFiles(files["/proc/self/cgroup"]).ToList();
        output.WriteLine(string.Join("\n", listed));
        Assert.Contains("/sys/fs/cgroup/memory/bench/run1/memory.limit_in_bytes", listed);
        Assert.Contains("/sys/fs/cgroup/memory/memory.limit_in_bytes", listed);
        Assert.Equal(400L << 20, SystemMemory.Available(f => files.GetValueOrDefault(f)));
    }

    [Fact]
    public void CgroupV2MemoryMaxCountsAndMaxMeansNoLimit()
    {
        var files = new Dictionary<string, string>
        {
            ["/proc/meminfo"] = "MemAvailable:   1048576 kB\n", // 1 GiB
            ["/proc/self/cgroup"] = "0::/user.slice/job\n",
            ["/sys/fs/cgroup/user.slice/job/memory.max"] = "max\n",
        };
        Assert.Equal(1L << 30, SystemMemory.Available(f => files.GetValueOrDefault(f)));
        files["/sys/fs/cgroup/user.slice/memory.max"] = "536870912\n";
        Assert.Equal(512L << 20, SystemMemory.Available(f => files.GetValueOrDefault(f)));
        Assert.Null(SystemMemory.Available(_ => null));
        // Without /proc/self/cgroup the root files of both versions are read.
        Assert.Equal(["/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"], SystemMemory.CgroupLimitFiles(null));
    }

    [Fact]
    public void ThisMachineReportsSomeAvailableMemory()
    {
        long? available = SystemMemory.AvailableBytes();
        output.WriteLine($"available: {(available is long a ? ByteSize.Format(a) : "unknown")}");
        if (OperatingSystem.IsLinux()) Assert.True(available > 0);
    }
}
