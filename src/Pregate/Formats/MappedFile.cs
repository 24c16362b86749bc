// A read-only memory map of a whole file with a stable base pointer; tensor views point into it.
using System.IO.MemoryMappedFiles;
using Pregate.Core;

namespace Pregate.Formats;

/// <summary>Maps a file read-only. <see cref="Base"/> stays valid until <see cref="Dispose"/>.</summary>
public sealed unsafe class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _base;

    public string Path { get; }
    public long Length { get; }
    public byte* Base => _base;

    public MappedFile(string path)
    {
        Path = path;
        FileInfo info;
        try { info = new FileInfo(path); }
        catch (Exception e) { throw new ModelFormatException(path, e.Message, e); }
        if (!info.Exists) throw new ModelFormatException(path, "file not found");
        Length = info.Length;
        if (Length == 0) return; // an empty file cannot be mapped; readers report it as truncated
        try
        {
            _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            _view = _map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* p = null;
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _base = p + _view.PointerOffset;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Dispose();
            throw new ModelFormatException(path, $"cannot map file: {e.Message}", e);
        }
    }

    /// <summary>The bytes [offset, offset+length) after a bounds check that names the file.</summary>
    public ReadOnlySpan<byte> Span(long offset, int length)
    {
        if (offset < 0 || length < 0 || offset > Length - length)
            throw new ModelFormatException(Path, $"range [{offset}, {offset + (long)length}) is outside the file ({Length} bytes)");
        return new ReadOnlySpan<byte>(_base + offset, length);
    }

    public void Dispose()
    {
        if (_base != null && _view != null)
        {
            _view.SafeMemoryMappedViewHandle.ReleasePointer();
            _base = null;
        }
        _view?.Dispose();
        _map?.Dispose();
    }
}
