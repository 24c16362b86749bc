// `pregate convert`: a Hugging Face MoE checkpoint (mixtral, qwen2_moe, qwen3_moe, olmoe) as a GGUF file llama.cpp loads.
using System.CommandLine;
using Pregate.Core;
using Pregate.Formats;
using Pregate.Formats.Export;

namespace Pregate.Cli.Commands;

internal static class ConvertCommand
{
    private static readonly DType[] Types = [DType.F32, DType.F16, DType.BF16];

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json)", Required = true };
        var output = new Option<string>("--out") { Description = "GGUF file to write (atomically)", Required = true };
        var type = new Option<string>("--type") { Description = "weight type of the matrices: f32, f16 or bf16 (norms and routers stay f32)", DefaultValueFactory = _ => "f16" };
        var cmd = new Command("convert", "Convert a Hugging Face MoE checkpoint to GGUF (q/k permutation, stacked experts, vocabulary and chat template)") { model, output, type };
        cmd.SetAction(p =>
        {
            string src = p.GetValue(model)!, dst = p.GetValue(output)!;
            if (!DTypes.TryParse(p.GetValue(type)!, out var t) || Array.IndexOf(Types, t) < 0)
                throw new UserException($"--type must be f32, f16 or bf16, not '{p.GetValue(type)}' (use quantize for quantized types)");
            if (!Directory.Exists(src)) throw new UserException($"{src}: not a Hugging Face checkpoint folder (convert reads config.json + safetensors)");
            using var ck = Checkpoint.Open(src);
            var options = new GgufExportOptions { TypeOf = spec => GgufLayout.KeepsF32(spec) ? DType.F32 : t, FileType = t };
            var progress = new ConsoleProgress(stderr, "converting", GgufExport.TensorBytes(ck, options));
            GgufExport.Write(ck, dst, options, progress);
            progress.Done();
            var c = ck.Config;
            stdout.WriteLine($"wrote {dst}: {c.ModelType}, {c.NumLayers} layers, {c.NumExperts} experts top-{c.NumExpertsUsed}, {DTypes.Name(t)}, {new FileInfo(dst).Length:N0} bytes");
            return 0;
        });
        return cmd;
    }
}
