// Offloaded experts are read only by the loader (O_DIRECT), never through the memory map: after the file's cached pages
// are dropped and a run is made, mincore(2) finds no expert page in the page cache. Pages within 2 MiB of a resident
// byte are not counted: the page cache keeps folios of up to 2 MiB (x86-64 PMD size), and a folio shared with a resident
// tensor stays. The resident run, which reads experts through the map, is the control that shows the measurement works.
using System.Runtime.InteropServices;
using Pregate.Core;
using Pregate.Engine;
using Pregate.Experts;
using Pregate.Formats;
using Pregate.Formats.Synth;
using Xunit.Abstractions;

namespace Pregate.Tests.Experts;

public sealed unsafe partial class PageCacheTests(ITestOutputHelper output) : IDisposable
{
    private readonly DiskFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    private const long FolioMargin = 2 << 20;

    // Experts of 4–12 MiB per stacked tensor, so that pages far from every resident tensor exist.
    [Theory]
    [InlineData("tiny", "f32", 1024)]
    [InlineData("tiny-qwen2moe", "q8_0", 4096)]
    public void OffloadedRunsLeaveExpertPagesOutOfThePageCache(string family, string dtype, int expertFfn)
    {
        if (!OperatingSystem.IsLinux()) return;
        Assert.True(DTypes.TryParse(dtype, out DType type));
        string path = _folder.File($"{family}-{dtype}.gguf");
        var c = SynthShapes.Get(family) with { NumLayers = 2, NumExperts = 4, HiddenSize = 256, HeadDim = 64, ExpertFfn = expertFfn };
        SyntheticModel.WriteGguf(path, new SynthOptions(c, type, Seed: 5));
        bool[] expertOnly = ExpertOnlyPages(path, out int expertPages);
        var tokens = Models.ModelTestSupport.Tokens(24, c.VocabSize, 9);

        int offloaded = CachedExpertPagesAfterRun(path, expertOnly, ExpertMemory.OfFraction(1), tokens);
        int resident = CachedExpertPagesAfterRun(path, expertOnly, ExpertMemory.All, tokens);
        output.WriteLine($"{family} {dtype}: {expertPages} expert pages are {ByteSize.Format(FolioMargin)} from any resident byte; " +
                         $"cached after an offloaded run: {offloaded}, after a resident run: {resident}");
        Assert.True(resident > 0, "the resident control run should leave expert pages cached");
        Assert.Equal(0, offloaded);
    }

    private int CachedExpertPagesAfterRun(string path, bool[] expertOnly, ExpertMemory memory, int[] tokens)
    {
        using var session = ModelSession.Open(path, new EngineOptions { Context = 32, ExpertMemory = memory, ResidentWhenBudgetCoversAll = false });
        PageCache.Drop(path);
        Assert.Equal(0, CountCached(path, expertOnly));
        session.Logits(tokens, allPositions: true);
        return CountCached(path, expertOnly);
    }

    // Pages of the file that hold expert bytes and lie at least FolioMargin from the header and every resident tensor.
    private static bool[] ExpertOnlyPages(string path, out int count)
    {
        long page = Environment.SystemPageSize;
        using var ck = Checkpoint.Open(path);
        long length = new FileInfo(path).Length;
        var expert = new bool[(length + page - 1) / page];
        var other = new bool[expert.Length];
        void Mark(bool[] pages, long offset, long bytes)
        {
            for (long p = offset / page; p < pages.Length && p * page < offset + bytes; p++) pages[p] = true;
        }
        ExpertLayout layout = OffloadedExperts.LayoutOf(ck);
        long firstTensor = long.MaxValue;
        for (int l = 0; l < layout.LayerCount; l++)
            for (int e = 0; e < layout.ExpertCount; e++)
                foreach (ExpertPart part in layout.Extent(new ExpertKey(l, e)).Parts)
                {
                    Mark(expert, part.Offset, part.Length);
                    firstTensor = Math.Min(firstTensor, part.Offset);
                }
        foreach (var spec in ck.Specs.Where(s => !s.IsRoutedExpert))
        {
            if (!ck.TryGet(spec.Role, spec.Layer, out var view)) continue;
            var (_, offset) = ck.Locate(view);
            Mark(other, Math.Max(0, offset - FolioMargin), view.ByteLength + 2 * FolioMargin);
            firstTensor = Math.Min(firstTensor, offset);
        }
        Mark(other, 0, firstTensor + FolioMargin);
        for (int p = 0; p < expert.Length; p++) expert[p] &= !other[p];
        count = expert.Count(x => x);
        Assert.True(count > 0);
        return expert;
    }


    private static int CountCached(string path, bool[] pages)
    {
        using var map = new MappedFile(path);
        var residency = new byte[pages.Length];
        fixed (byte* vec = residency)
            Assert.Equal(0, Mincore(map.Base, (nuint)map.Length, vec));
        int cached = 0;
        for (int p = 0; p < pages.Length; p++)
            if (pages[p] && (residency[p] & 1) != 0) cached++;
        return cached;
    }

    [LibraryImport("libc", EntryPoint = "mincore")]
    private static partial int Mincore(void* address, nuint length, byte* residency);
}
