// ExpertLayout: slot placement of unaligned parts, stacked (GGUF) offsets, merging of adjacent parts, and validation.
using Pregate.Core;
using Pregate.Experts;
using Xunit.Abstractions;

namespace Pregate.Tests.Experts;

public sealed class ExpertLayoutTests(ITestOutputHelper output) : IDisposable
{
    private readonly DiskFolder _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void UnalignedPartsGetTheirCoveringAlignedRanges()
    {
        _dir.WriteRandom("m.bin", 40_000, seed: 1);
        string path = _dir.File("m.bin");
        // part 0 covers [0, 8192); part 1 [16384, 24576); part 2 is aligned: [32768, 36864)
        var extent = new ExpertExtent([new ExpertPart(path, 100, 5000), new ExpertPart(path, 20000, 4096), new ExpertPart(path, 32768, 4096)]);
        var layout = new ExpertLayout(1, 1, [extent]);
        var key = new ExpertKey(0, 0);
        output.WriteLine($"slot bytes {layout.SlotBytes}; part offsets {layout.PartOffsetInSlot(key, 0)}, {layout.PartOffsetInSlot(key, 1)}, {layout.PartOffsetInSlot(key, 2)}");
        Assert.Equal(8192 + 8192 + 4096, layout.SlotBytes);
        Assert.Equal(100, layout.PartOffsetInSlot(key, 0));
        Assert.Equal(8192 + (20000 - 16384), layout.PartOffsetInSlot(key, 1));
        Assert.Equal(16384, layout.PartOffsetInSlot(key, 2));
        Assert.Equal(5000 + 4096 + 4096, layout.TotalBytes);
        Assert.Equal(3, layout.PartCount);
    }

    [Fact]
    public void PartsSharingAlignedPagesAreReadOnce()
    {
        _dir.WriteRandom("hf.bin", 30_000, seed: 2);
        string path = _dir.File("hf.bin");
        // expert-major repacking: gate, up, down back to back from an unaligned start
        var extent = new ExpertExtent([new ExpertPart(path, 1000, 3000), new ExpertPart(path, 4000, 3000), new ExpertPart(path, 7000, 3000)]);
        var layout = new ExpertLayout(1, 1, [extent]);
        var key = new ExpertKey(0, 0);
        Assert.Equal(DirectFileReader.CoveringLength(1000, 9000), layout.SlotBytes);
        Assert.Single(layout.Plan(key).Regions);
        Assert.Equal([1000L, 4000L, 7000L], Enumerable.Range(0, 3).Select(p => layout.PartOffsetInSlot(key, p)));
    }

    [Fact]
    public void StackedTensorsPlaceExpertEAtOffsetPlusEStrides()
    {
        var file = new StackedExpertFile(_dir, "s.bin", layers: 2, experts: 5, partBytes: [3000, 5000, 4100], headerBytes: 1234, seed: 3);
        ExpertLayout layout = file.Layout;
        long bound = 0;
        foreach (long bytes in new long[] { 3000, 5000, 4100 }) bound += DirectFileReader.AlignUp(bytes) + DirectFileReader.Alignment;
        output.WriteLine($"slot bytes {layout.SlotBytes} (bound {bound}), total expert bytes {layout.TotalBytes}");
        Assert.Equal(2 * 5 * (3000 + 5000 + 4100), layout.TotalBytes);
        Assert.InRange(layout.SlotBytes, 3000 + 5000 + 4100, bound);
        ExpertExtent e3 = layout.Extent(new ExpertKey(1, 3)), e0 = layout.Extent(new ExpertKey(1, 0));
        for (int p = 0; p < 3; p++)
        {
            Assert.Equal(e0.Parts[p].Offset + 3 * e0.Parts[p].Length, e3.Parts[p].Offset);
            Assert.Equal(0, e0.Parts[p].Offset % 32);
        }
        Assert.Single(layout.Files);
    }

    [Fact]
    public void PartBeyondTheFileIsAFormatErrorNamingTheFile()
    {
        _dir.WriteRandom("small.bin", 10_000, seed: 4);
        string path = _dir.File("small.bin");
        var e = Assert.Throws<ModelFormatException>(() => new ExpertLayout(1, 1, [new ExpertExtent([new ExpertPart(path, 9000, 2000)])]));
        output.WriteLine(e.Message);
        Assert.Contains(path, e.Message);
        var missing = Assert.Throws<ModelFormatException>(() => new ExpertLayout(1, 1, [new ExpertExtent([new ExpertPart(_dir.File("none.bin"), 0, 1)])]));
        Assert.Contains("none.bin", missing.Message);
    }

    [Fact]
    public void RejectsInconsistentExtentsAndKeys()
    {
        _dir.WriteRandom("c.bin", 10_000, seed: 5);
        string path = _dir.File("c.bin");
        var one = new ExpertExtent([new ExpertPart(path, 0, 10)]);
        var two = new ExpertExtent([new ExpertPart(path, 0, 10), new ExpertPart(path, 10, 10)]);
        Assert.Throws<ArgumentException>(() => new ExpertLayout(1, 2, [one, two]));
        Assert.Throws<ArgumentException>(() => new ExpertLayout(2, 2, [one, one]));
        Assert.Throws<ArgumentException>(() => new ExpertExtent([new ExpertPart(path, 0, 0)]));
        var layout = new ExpertLayout(1, 2, [one, one]);
        Assert.Throws<ArgumentOutOfRangeException>(() => layout.Extent(new ExpertKey(0, 2)));
        Assert.Throws<ArgumentOutOfRangeException>(() => layout.Extent(new ExpertKey(1, 0)));
    }
}
