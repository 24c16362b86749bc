// The one error type for malformed model files and configs: it names the file and what is wrong.
namespace Pregate.Core;

/// <summary>A model file, config or tokenizer is malformed or unsupported. The message names the file.</summary>
public sealed class ModelFormatException : Exception
{
    public string? FilePath { get; }

    public ModelFormatException(string? filePath, string message, Exception? inner = null)
        : base(filePath is null ? message : $"{filePath}: {message}", inner)
    {
        FilePath = filePath;
    }
}
