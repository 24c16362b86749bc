// The `pregate` command: parses arguments, runs one subcommand, maps errors to exit codes
// (0 success, 1 user error with a message on stderr, 2 usage error).
using System.CommandLine;
using Pregate.Cli;

return Cli.Run(args, Console.Out, Console.Error);
