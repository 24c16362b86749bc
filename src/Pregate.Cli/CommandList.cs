// The list of subcommands; each lives in its own file under Commands/.
using System.CommandLine;
using Pregate.Cli.Commands;

namespace Pregate.Cli;

internal static class CommandList
{
    public static IEnumerable<Command> All(TextWriter stdout, TextWriter stderr, TextReader stdin)
    {
        yield return DemoCommand.Create(stdout, stderr);
        yield return InspectCommand.Create(stdout);
        yield return ServeCommand.Create(stdout, stderr);
        yield return ChatCommand.Create(stdin, stdout, stderr);
        yield return SynthCommand.Create(stdout, stderr);
        yield return RunCommand.Create(stdout, stderr);
        yield return LogitsCommand.Create(stdout, stderr);
        yield return BenchCommand.Create(stdout, stderr);
        yield return CalibrateCommand.Create(stdout, stderr);
        yield return EvalCommand.Create(stdout, stderr);
        yield return SelftestCommand.Create(stdout, stderr);
        yield return ConvertCommand.Create(stdout, stderr);
        yield return QuantizeCommand.Create(stdout, stderr);
    }
}
