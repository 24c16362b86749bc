// Root command and error policy shared by every subcommand.
using System.CommandLine;
using Pregate.Core;

namespace Pregate.Cli;

/// <summary>A mistake the user can fix (bad option value, missing file): printed without a stack trace, exit code 1.</summary>
public sealed class UserException(string message) : Exception(message);

public static class Cli
{
    public const int ExitOk = 0, ExitUserError = 1, ExitUsage = 2;

    public static RootCommand BuildRoot(TextWriter stdout, TextWriter stderr, TextReader? stdin = null)
    {
        var root = new RootCommand("Pregate: run Mixture-of-Experts models bigger than fast memory, fast.");
        foreach (var c in CommandList.All(stdout, stderr, stdin ?? Console.In)) root.Subcommands.Add(c);
        return root;
    }

    /// <summary>Runs the CLI with <paramref name="args"/>; returns the process exit code.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr) => Run(args, Console.In, stdout, stderr);

    /// <summary>Runs the CLI with <paramref name="args"/>, reading interactive input (chat) from <paramref name="stdin"/>.</summary>
    public static int Run(string[] args, TextReader stdin, TextWriter stdout, TextWriter stderr)
    {
        var root = BuildRoot(stdout, stderr, stdin);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var e in parse.Errors) stderr.WriteLine($"error: {e.Message}");
            stderr.WriteLine("run 'pregate --help' for usage");
            return ExitUsage;
        }
        try
        {
            var config = new InvocationConfiguration { Output = stdout, Error = stderr, EnableDefaultExceptionHandler = false };
            return parse.Invoke(config);
        }
        catch (Exception e) when (Unwrap(e) is ModelFormatException or UserException or IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"error: {Unwrap(e).Message}");
            return ExitUserError;
        }
    }

    private static Exception Unwrap(Exception e) =>
        e is AggregateException { InnerExceptions.Count: 1 } a ? Unwrap(a.InnerExceptions[0]) : e;
}
