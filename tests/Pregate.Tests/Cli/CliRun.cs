// Runs the `pregate` command in process with its output captured, and logs the command line, its exit code and what it
// printed to the test's output.
using Xunit.Abstractions;

namespace Pregate.Tests.Cli;

internal static class CliRun
{
    /// <summary>pregate <paramref name="args"/>: the exit code, standard output and standard error.</summary>
    public static (int Code, string Out, string Err) Run(ITestOutputHelper output, string[] args, bool logStdout = true)
    {
        using var o = new StringWriter();
        using var e = new StringWriter();
        int code = Pregate.Cli.Cli.Run(args, o, e);
        output.WriteLine($"$ pregate {string.Join(' ', args)} -> {code}");
        if (logStdout && o.ToString().Length > 0) output.WriteLine(o.ToString().Trim());
        if (e.ToString().Length > 0) output.WriteLine("stderr: " + e.ToString().Trim());
        return (code, o.ToString(), e.ToString());
    }
}
