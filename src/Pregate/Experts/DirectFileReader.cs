// Reads file ranges around the page cache: open(2) with O_DIRECT, 4096-aligned offsets, lengths and buffers; where the
// filesystem refuses O_DIRECT, buffered reads followed by posix_fadvise(DONTNEED) so cached pages do not accumulate.
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Pregate.Experts;

/// <summary>
/// Positional reads of one file into 4096-aligned native memory, bypassing the page cache where the platform allows it
/// (Linux O_DIRECT). Thread-safe: concurrent <see cref="ReadCovering"/> calls are independent <c>pread</c>s.
/// </summary>
public sealed unsafe partial class DirectFileReader : IDisposable
{
    /// <summary>Offset, length and buffer alignment of every read, in bytes.</summary>
    public const int Alignment = 4096;

    private const int ReadChunkBytes = 1 << 30; // one pread moves at most 1 GiB (a span's length is an int)
    private const int OpenReadOnly = 0;
    private const int OpenCloseOnExec = 0x80000;
    private const int ErrorNoEntry = 2, ErrorAccess = 13, ErrorInvalid = 22;
    private const int FadviseDontNeed = 4;

    private readonly SafeFileHandle _handle;

    /// <summary>The file's path as given.</summary>
    public string Path { get; }

    /// <summary>True when reads bypass the page cache (O_DIRECT); false for buffered reads with DONTNEED advice.</summary>
    public bool IsDirect { get; }

    /// <summary>
    /// Opens <paramref name="path"/> for reading. On Linux with <paramref name="allowDirect"/> it asks for O_DIRECT and falls
    /// back to a buffered handle when the filesystem answers EINVAL; elsewhere it opens a buffered handle.
    /// </summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="UnauthorizedAccessException">The file may not be read.</exception>
    /// <exception cref="IOException">Any other open failure; the message names the file.</exception>
    public DirectFileReader(string path, bool allowDirect = true)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        Path = path;
        int directFlag = OperatingSystem.IsLinux() ? DirectFlagForArchitecture() : 0;
        if (allowDirect && directFlag != 0)
        {
            int fd = Open(path, OpenReadOnly | OpenCloseOnExec | directFlag);
            if (fd >= 0)
            {
                _handle = new SafeFileHandle(fd, ownsHandle: true);
                IsDirect = true;
                return;
            }
            int errno = Marshal.GetLastPInvokeError();
            if (errno != ErrorInvalid) throw OpenError(path, errno);
        }
        _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
    }

    /// <summary>The current file length in bytes.</summary>
    public long Length => RandomAccess.GetLength(_handle);

    internal SafeFileHandle Handle => _handle;

    /// <summary>Largest multiple of <see cref="Alignment"/> ≤ <paramref name="offset"/>.</summary>
    public static long AlignDown(long offset) => offset & ~(long)(Alignment - 1);

    /// <summary>Smallest multiple of <see cref="Alignment"/> ≥ <paramref name="offset"/>.</summary>
    public static long AlignUp(long offset) => checked(offset + Alignment - 1) & ~(long)(Alignment - 1);

    /// <summary>Bytes of the aligned range covering [offset, offset + length): <c>AlignUp(offset + length) − AlignDown(offset)</c>.</summary>
    public static long CoveringLength(long offset, long length) => AlignUp(checked(offset + length)) - AlignDown(offset);

    /// <summary>
    /// Reads the 4096-aligned range covering [<paramref name="offset"/>, <paramref name="offset"/> + <paramref name="length"/>)
    /// into <paramref name="destination"/>; the byte at <paramref name="offset"/> lands at
    /// <c>destination + (offset − AlignDown(offset))</c>. The aligned range may pass the end of the file: the short read
    /// there is accepted as long as every requested byte arrived (bytes past the end are left unspecified).
    /// </summary>
    /// <param name="destination">4096-aligned native memory of at least <paramref name="destinationCapacity"/> bytes.</param>
    /// <returns>Bytes transferred from the file.</returns>
    /// <exception cref="ArgumentException">Unaligned destination, negative range, or capacity below <see cref="CoveringLength"/>.</exception>
    /// <exception cref="IOException">The read failed or the file ends before the requested range; the message names the file.</exception>
    public long ReadCovering(long offset, long length, byte* destination, long destinationCapacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        if (((nuint)destination & (Alignment - 1)) != 0)
            throw new ArgumentException($"The destination buffer must be {Alignment}-byte aligned.", nameof(destination));
        long start = AlignDown(offset);
        long total = CoveringLength(offset, length);
        if (destinationCapacity < total)
            throw new ArgumentException($"Reading {length} bytes at offset {offset} needs {total} bytes of buffer, got {destinationCapacity}.", nameof(destinationCapacity));
        long needed = offset + length - start;
        long done = 0;
        try
        {
            while (done < total)
            {
                int chunk = (int)Math.Min(total - done, ReadChunkBytes);
                int n = RandomAccess.Read(_handle, new Span<byte>(destination + done, chunk), start + done);
                if (n <= 0) break;
                done += n;
                if (n < chunk && IsDirect && n % Alignment != 0) break; // an unaligned short O_DIRECT read is the end of the file
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            throw new IOException($"Reading '{Path}' at offset {start} ({total} bytes) failed: {e.Message}", e);
        }
        finally
        {
            if (!IsDirect) DropCachedPages(start, total);
        }
        if (done < needed)
            throw new IOException($"Reading '{Path}': the file ends before byte {offset + length} (wanted {length} bytes at offset {offset}, got {Math.Max(0, done - (offset - start))}).");
        return done;
    }

    public void Dispose() => _handle.Dispose();

    private void DropCachedPages(long offset, long length)
    {
        if (!OperatingSystem.IsLinux()) return;
        bool added = false;
        try
        {
            _handle.DangerousAddRef(ref added);
            // Advisory only: a failure leaves pages cached but the bytes read are still right.
            _ = PosixFadvise((int)_handle.DangerousGetHandle(), offset, length, FadviseDontNeed);
        }
        finally
        {
            if (added) _handle.DangerousRelease();
        }
    }

    private static int DirectFlagForArchitecture() => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 or Architecture.X86 => 0x4000,
        Architecture.Arm64 or Architecture.Arm => 0x10000,
        _ => 0,
    };

    private static Exception OpenError(string path, int errno) => errno switch
    {
        ErrorNoEntry => new FileNotFoundException($"Could not find file '{path}'.", path),
        ErrorAccess => new UnauthorizedAccessException($"Access to '{path}' is denied."),
        _ => new IOException($"Cannot open '{path}': {Marshal.GetPInvokeErrorMessage(errno)}"),
    };

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "posix_fadvise")]
    private static partial int PosixFadvise(int fd, long offset, long length, int advice);
}
