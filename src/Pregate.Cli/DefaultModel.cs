// The built-in default model: the small trained Mixtral-style model shipped in the repository's models/ folder,
// found through PREGATE_HOME (set by the ./pregate wrapper) or next to the program's own files.
namespace Pregate.Cli;

internal static class DefaultModel
{
    public const string Name = "brown-moe-14m";

    /// <summary>The default model's folder, or null when it is not installed.</summary>
    public static string? Find()
    {
        var roots = new List<string>();
        if (Environment.GetEnvironmentVariable("PREGATE_HOME") is { Length: > 0 } home) roots.Add(home);
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent) roots.Add(d.FullName);
        foreach (string root in roots)
        {
            string dir = Path.Combine(root, "models", Name);
            if (File.Exists(Path.Combine(dir, "config.json"))) return dir;
        }
        return null;
    }

    /// <summary>The default model's folder; a <see cref="UserException"/> explaining what to do when it is missing.</summary>
    public static string Require() =>
        Find() ?? throw new UserException($"no --model given and the default model (models/{Name}) was not found; set PREGATE_HOME to the Pregate folder or give --model PATH");
}
