// The list of subcommands; each lives in its own file under Commands/.
using System.CommandLine;

namespace Pregate.Cli;

internal static class Commands
{
    public static IEnumerable<Command> All(TextWriter stdout, TextWriter stderr)
    {
        yield break;
    }
}
