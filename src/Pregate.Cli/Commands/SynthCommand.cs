// `pregate synth`: deterministic synthetic models of real shapes, as GGUF or a Hugging Face folder.
using System.CommandLine;
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Synth;

namespace Pregate.Cli.Commands;

internal static class SynthCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var shape = new Option<string?>("--shape") { Description = $"named shape: {string.Join(", ", SynthShapes.Names)}" };
        var config = new Option<string?>("--config") { Description = "a Hugging Face config.json to take the shape from" };
        var dtype = new Option<string>("--dtype") { Description = "weight type: f32, f16, bf16, q8_0, q4_0 (q8_0/q4_0 need --format gguf)", DefaultValueFactory = _ => "f32" };
        var format = new Option<string>("--format") { Description = "gguf (one file) or hf (a folder with config.json, safetensors, tokenizer.json)", DefaultValueFactory = _ => "gguf" };
        var output = new Option<string>("--out") { Description = "output file (gguf) or folder (hf)", Required = true };
        var seed = new Option<ulong>("--seed") { Description = "random seed; the same seed gives the same weights in both formats", DefaultValueFactory = _ => 0 };
        var layers = new Option<int?>("--layers") { Description = "keep only the first N layers of the shape" };
        var cmd = new Command("synth", "Write a deterministic synthetic model of a real shape") { shape, config, dtype, format, output, seed, layers };
        cmd.SetAction(p =>
        {
            var cfg = Resolve(p.GetValue(shape), p.GetValue(config), p.GetValue(layers));
            if (!DTypes.TryParse(p.GetValue(dtype)!, out var type) || Array.IndexOf(SyntheticModel.SupportedTypes, type) < 0)
                throw new UserException($"--dtype must be one of {string.Join(", ", SyntheticModel.SupportedTypes.Select(DTypes.Name))}, not '{p.GetValue(dtype)}'");
            string fmt = p.GetValue(format)!.ToLowerInvariant();
            if (fmt is not ("gguf" or "hf")) throw new UserException($"--format must be gguf or hf, not '{fmt}'");
            if (fmt == "hf" && DTypes.IsQuantized(type)) throw new UserException($"--dtype {DTypes.Name(type)} needs --format gguf (Hugging Face checkpoints hold f32, f16 or bf16)");
            var o = new SynthOptions(cfg, type, p.GetValue(seed));
            string path = p.GetValue(output)!;
            var progress = new ConsoleProgress(stderr, "writing", SyntheticModel.WeightBytes(o, fmt == "gguf"));
            try
            {
                if (fmt == "gguf") SyntheticModel.WriteGguf(path, o, progress);
                else SyntheticModel.WriteHf(path, o, progress);
            }
            catch (ArgumentException e) { throw new UserException(e.Message); }
            progress.Done();
            stdout.WriteLine($"wrote {path}: {cfg.ModelType}, {cfg.NumLayers} layers, {cfg.NumExperts} experts top-{cfg.NumExpertsUsed}, {DTypes.Name(type)}");
            return 0;
        });
        return cmd;
    }

    internal static ModelConfig Resolve(string? shape, string? configPath, int? layers)
    {
        if ((shape is null) == (configPath is null)) throw new UserException("give exactly one of --shape NAME or --config FILE");
        ModelConfig cfg;
        if (shape is not null)
        {
            try { cfg = SynthShapes.Get(shape); }
            catch (ArgumentException e) { throw new UserException(e.Message); }
        }
        else cfg = HfConfig.Load(configPath!);
        if (layers is int n)
        {
            if (n < 1 || n > cfg.NumLayers) throw new UserException($"--layers must be between 1 and {cfg.NumLayers}, not {n}");
            cfg = cfg with { NumLayers = n };
        }
        return cfg;
    }
}
