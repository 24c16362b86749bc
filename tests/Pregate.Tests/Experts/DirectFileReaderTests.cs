// DirectFileReader: O_DIRECT on a disk filesystem (checked in /proc/self/fdinfo), the buffered fallback, and byte-exact
// reads of unaligned ranges including the file tail.
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using Pregate.Experts;
using Xunit.Abstractions;

namespace Pregate.Tests.Experts;

public sealed unsafe partial class DirectFileReaderTests(ITestOutputHelper output) : IDisposable
{
    private const long ODirectOctalBit = 0x4000; // 040000 in fdinfo's octal flags (x86_64)
    private readonly DiskFolder _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void DiskFileIsOpenedWithODirect()
    {
        if (!OperatingSystem.IsLinux()) return; // O_DIRECT is Linux-only
        _dir.WriteRandom("a.bin", 10_000, seed: 1);
        using var direct = new DirectFileReader(_dir.File("a.bin"));
        using var buffered = new DirectFileReader(_dir.File("a.bin"), allowDirect: false);
        long directFlags = FdFlags(direct), bufferedFlags = FdFlags(buffered);
        output.WriteLine($"fdinfo flags: direct reader 0{Convert.ToString(directFlags, 8)}, buffered reader 0{Convert.ToString(bufferedFlags, 8)}");
        Assert.True(direct.IsDirect);
        Assert.NotEqual(0, directFlags & ODirectOctalBit);
        Assert.False(buffered.IsDirect);
        Assert.Equal(0, bufferedFlags & ODirectOctalBit);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void UnalignedRangesMatchTheFile(bool allowDirect)
    {
        const int length = 5 * 4096 + 1234; // not a multiple of 4096: the last aligned read passes the end
        byte[] bytes = _dir.WriteRandom("r.bin", length, seed: 2);
        using var reader = new DirectFileReader(_dir.File("r.bin"), allowDirect);
        var random = new Random(3);
        var ranges = new List<(long Offset, long Length)>
        {
            (0, length), (0, 1), (length - 1, 1), (4095, 2), (4096, 4096), (length - 1234, 1234), (length - 5000, 5000), (100, 4096 * 3),
        };
        for (int i = 0; i < 200; i++)
        {
            long offset = random.Next(length);
            ranges.Add((offset, 1 + random.Next(length - (int)offset)));
        }
        using var buffer = new AlignedBuffer(DirectFileReader.CoveringLength(0, length) + 4096);
        int mismatched = 0;
        foreach ((long offset, long count) in ranges)
        {
            long read = reader.ReadCovering(offset, count, buffer.Pointer, buffer.Length);
            long inner = offset - DirectFileReader.AlignDown(offset);
            Assert.True(read >= inner + count, $"range ({offset}, {count}) transferred only {read} bytes");
            if (!buffer.Span(inner, count).SequenceEqual(bytes.AsSpan((int)offset, (int)count))) mismatched++;
        }
        output.WriteLine($"IsDirect={reader.IsDirect}: {ranges.Count} ranges, {mismatched} differ from the file (tolerance 0)");
        Assert.Equal(allowDirect && OperatingSystem.IsLinux(), reader.IsDirect);
        Assert.Equal(0, mismatched);
    }

    [Fact]
    public void FilesystemThatRefusesODirectFallsBackToBufferedReads()
    {
        // procfs answers EINVAL to O_DIRECT (tmpfs did too before Linux 6.6): the reader must fall back, not fail.
        if (!OperatingSystem.IsLinux()) return; // O_DIRECT is Linux-only
        const string path = "/proc/version";
        byte[] expected = File.ReadAllBytes(path);
        using var reader = new DirectFileReader(path);
        using var buffer = new AlignedBuffer(DirectFileReader.CoveringLength(0, expected.Length));
        reader.ReadCovering(0, expected.Length, buffer.Pointer, buffer.Length);
        output.WriteLine($"{path}: IsDirect={reader.IsDirect}, fdinfo flags 0{Convert.ToString(FdFlags(reader), 8)}, {expected.Length} bytes");
        Assert.False(reader.IsDirect);
        Assert.Equal(0, FdFlags(reader) & ODirectOctalBit);
        Assert.True(buffer.Span(0, expected.Length).SequenceEqual(expected));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ReadingPastTheEndNamesTheFile(bool allowDirect)
    {
        _dir.WriteRandom("short.bin", 5000, seed: 4);
        using var reader = new DirectFileReader(_dir.File("short.bin"), allowDirect);
        using var buffer = new AlignedBuffer(3 * 4096);
        var e = Assert.Throws<IOException>(() => reader.ReadCovering(4000, 2000, buffer.Pointer, buffer.Length));
        output.WriteLine(e.Message);
        Assert.Contains(_dir.File("short.bin"), e.Message);
        Assert.Contains("ends before byte 6000", e.Message);
    }

    [Fact]
    public void MissingFileNamesTheFile()
    {
        var e = Assert.Throws<FileNotFoundException>(() => new DirectFileReader(_dir.File("absent.bin")));
        output.WriteLine(e.Message);
        Assert.Contains(_dir.File("absent.bin"), e.Message);
    }

    [Fact]
    public void RejectsUnalignedOrSmallBuffers()
    {
        _dir.WriteRandom("b.bin", 9000, seed: 5);
        using var reader = new DirectFileReader(_dir.File("b.bin"));
        using var buffer = new AlignedBuffer(3 * 4096);
        Assert.Throws<ArgumentException>(() => reader.ReadCovering(0, 10, buffer.Pointer + 1, buffer.Length - 1));
        Assert.Throws<ArgumentException>(() => reader.ReadCovering(4000, 200, buffer.Pointer, 4096)); // covers 8192 bytes
        Assert.Equal(8192, DirectFileReader.CoveringLength(4000, 200));
        Assert.Equal(4096, DirectFileReader.CoveringLength(4096, 4096));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ReadsLeaveNoFilePagesInThePageCache(bool allowDirect)
    {
        if (!OperatingSystem.IsLinux()) return; // posix_fadvise and mincore are Linux calls here
        const int length = 2 << 20;
        string path = _dir.File("cache.bin");
        var bytes = new byte[length];
        new Random(6).NextBytes(bytes);
        using (var f = new FileStream(path, FileMode.Create))
        {
            f.Write(bytes);
            f.Flush(flushToDisk: true); // clean pages: DONTNEED only drops pages already written back
        }
        using (var dropper = new DirectFileReader(path, allowDirect: false))
        using (var buffer = new AlignedBuffer(length))
        {
            dropper.ReadCovering(0, length, buffer.Pointer, buffer.Length); // leaves the file uncached
            using var reader = new DirectFileReader(path, allowDirect);
            reader.ReadCovering(0, length, buffer.Pointer, buffer.Length);
            Assert.True(buffer.Span(0, length).SequenceEqual(bytes));
        }
        long cached = CachedPages(path, length);
        output.WriteLine($"IsDirect={allowDirect}: {cached} of {length / 4096} pages cached after reading the whole file (tolerance 0)");
        Assert.Equal(0, cached);
    }

    private static long CachedPages(string path, long length)
    {
        using var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        using MemoryMappedViewAccessor view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
        byte* start = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref start);
        try
        {
            var residency = new byte[(length + 4095) / 4096];
            fixed (byte* vec = residency)
                Assert.Equal(0, MinCore(start + view.PointerOffset, (nuint)length, vec));
            return residency.Count(b => (b & 1) != 0);
        }
        finally
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
    }

    [LibraryImport("libc", EntryPoint = "mincore")]
    private static partial int MinCore(byte* address, nuint length, byte* residency);

    private static long FdFlags(DirectFileReader reader)
    {
        long fd = reader.Handle.DangerousGetHandle();
        string line = File.ReadLines($"/proc/self/fdinfo/{fd}").First(l => l.StartsWith("flags:", StringComparison.Ordinal));
        return Convert.ToInt64(line["flags:".Length..].Trim(), 8);
    }
}
