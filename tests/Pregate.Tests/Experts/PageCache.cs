// Dropping a file's pages from the page cache, for tests that need its reads to come from the disk (or to count
// against a memory cap).
using System.Runtime.InteropServices;

namespace Pregate.Tests.Experts;

internal static partial class PageCache
{
    private const int FadviseDontNeed = 4;

    /// <summary>Writes back and drops every cached page of <paramref name="path"/> (fsync, then POSIX_FADV_DONTNEED).</summary>
    public static void Drop(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        int fd = (int)stream.SafeFileHandle.DangerousGetHandle();
        Assert.Equal(0, Fsync(fd)); // dirty pages (the file was just written) are not dropped
        Assert.Equal(0, PosixFadvise(fd, 0, 0, FadviseDontNeed));
    }

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int PosixFadvise(int fd, long offset, long length, int advice);

    [LibraryImport("libc", EntryPoint = "fsync")]
    private static partial int Fsync(int fd);
}
