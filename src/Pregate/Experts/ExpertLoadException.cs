// The error an acquire reports when reading an expert's bytes failed on an I/O thread.
namespace Pregate.Experts;

/// <summary>Reading <see cref="Key"/> failed; <see cref="Exception.InnerException"/> is the I/O error (it names the file).</summary>
public sealed class ExpertLoadException(ExpertKey key, Exception inner)
    : IOException($"Loading expert {key} failed: {inner.Message}", inner)
{
    public ExpertKey Key { get; } = key;
}
