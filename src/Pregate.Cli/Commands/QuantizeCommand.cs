// `pregate quantize`: an f32/f16/bf16 model (GGUF or Hugging Face folder) to a quantized GGUF, round-to-nearest or GPTQ
// calibrated per expert on the tokens routed to it (optionally expert-balanced).
using System.CommandLine;
using System.Globalization;
using Pregate.Core;
using Pregate.Engine;

namespace Pregate.Cli.Commands;

internal static class QuantizeCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Option<string>("--model") { Description = "unquantized GGUF file or Hugging Face checkpoint folder", Required = true };
        var output = new Option<string>("--out") { Description = "GGUF file to write (atomically)", Required = true };
        var type = new Option<string>("--type") { Description = "q8_0, q4_0, q4_k or q6_k", Required = true };
        var method = new Option<string>("--method") { Description = "rtn (round to nearest per block) or calibrated (GPTQ on calibration activations)", DefaultValueFactory = _ => "rtn" };
        var calibration = new Option<string?>("--calibration") { Description = "UTF-8 calibration text (needed by --method calibrated)" };
        var tokens = new Option<int>("--calibration-tokens") { Description = "calibration tokens to use", DefaultValueFactory = _ => 4096 };
        var balanced = new Option<bool>("--expert-balanced") { Description = "also calibrate each expert on the tokens where it ranks in the router's top k+2" };
        var router = new Option<string>("--keep-router") { Description = "router type: f32 or f16", DefaultValueFactory = _ => "f32" };
        var seed = new Option<ulong>("--seed") { Description = "seed for choosing calibration windows", DefaultValueFactory = _ => 0 };
        var dual = new Option<string?>("--dual") { Description = "MAIN,LOW: experts in MAIN (= --type) plus a LOW copy of each expert tensor named {name}.LOW (not loadable by llama.cpp)" };
        var cmd = new Command("quantize", "Quantize a model to GGUF: round-to-nearest or GPTQ calibrated per expert")
            { model, output, type, method, calibration, tokens, balanced, router, seed, dual };
        cmd.SetAction(p =>
        {
            var t = ParseType(p.GetValue(type)!, "--type");
            var duals = new List<DType>();
            if (p.GetValue(dual) is string d)
            {
                var parts = d.Split(',', StringSplitOptions.TrimEntries);
                if (parts.Length != 2) throw new UserException($"--dual takes MAIN,LOW (e.g. q8_0,q4_0), not '{d}'");
                if (ParseType(parts[0], "--dual") != t) throw new UserException($"--dual's main type {parts[0]} differs from --type {DTypes.Name(t)}");
                duals.Add(ParseType(parts[1], "--dual"));
            }
            QuantMethod m = p.GetValue(method)!.ToLowerInvariant() switch
            {
                "rtn" => QuantMethod.Rtn,
                "calibrated" => QuantMethod.Calibrated,
                string other => throw new UserException($"--method must be rtn or calibrated, not '{other}'"),
            };
            string? text = p.GetValue(calibration);
            if (m == QuantMethod.Calibrated && text is null) throw new UserException("--method calibrated needs --calibration TEXT_FILE");
            if (m == QuantMethod.Rtn && (text is not null || p.GetValue(balanced))) throw new UserException("--calibration and --expert-balanced apply to --method calibrated only");
            if (text is not null && !File.Exists(text)) throw new UserException($"{text}: no such calibration file");
            if (p.GetValue(tokens) < 2) throw new UserException("--calibration-tokens must be at least 2");
            DType routerType = p.GetValue(router)!.ToLowerInvariant() switch
            {
                "f32" => DType.F32,
                "f16" => DType.F16,
                string other => throw new UserException($"--keep-router must be f32 or f16, not '{other}'"),
            };
            string src = p.GetValue(model)!;
            if (!File.Exists(src) && !Directory.Exists(src)) throw new UserException($"{src}: no such file or folder");
            var o = new QuantizeOptions
            {
                Type = t, Method = m, RouterType = routerType, DualTypes = duals,
                CalibrationText = text is null ? null : File.ReadAllText(text),
                Calibration = new QuantCalibrationOptions { Tokens = p.GetValue(tokens), Seed = p.GetValue(seed), ExpertBalanced = p.GetValue(balanced) },
            };
            string dst = p.GetValue(output)!;
            QuantizeReport r;
            try
            {
                var progress = new ConsoleProgress(stderr, "writing", ModelQuantizer.TensorBytes(src, o));
                r = ModelQuantizer.Run(src, dst, o, new LineProgress(stderr), progress);
                progress.Done();
            }
            catch (ArgumentException e) { throw new UserException(e.Message); }
            Print(stdout, r, dst);
            return 0;
        });
        return cmd;
    }

    // Progress lines written synchronously, in order (Progress<T> would post them to the thread pool).
    private sealed class LineProgress(TextWriter writer) : IProgress<string>
    {
        public void Report(string value) => writer.WriteLine(value);
    }

    private static DType ParseType(string s, string option)
    {
        if (!DTypes.TryParse(s, out var t) || Array.IndexOf(QuantizeOptions.SupportedTypes, t) < 0)
            throw new UserException($"{option}: unknown quantization type '{s}' (q8_0, q4_0, q4_k, q6_k)");
        return t;
    }

    private static void Print(TextWriter stdout, QuantizeReport r, string path)
    {
        var inv = CultureInfo.InvariantCulture;
        stdout.WriteLine(string.Create(inv, $"wrote {path}: {DTypes.Name(r.Type)} {r.Method.ToString().ToLowerInvariant()}, {r.FileBytes:N0} bytes, {r.ExpertBytesPerToken:N0} expert bytes per token"));
        if (r.Calibration is { } c)
        {
            stdout.WriteLine($"calibrated on {c.Tokens} tokens; tokens per expert (routed → calibrated):");
            for (int l = 0; l < c.RoutedTokens.GetLength(0); l++)
                stdout.WriteLine($"  layer {l}: " + string.Join(" ", Enumerable.Range(0, c.RoutedTokens.GetLength(1))
                    .Select(e => c.RoutedTokens[l, e] == c.CalibrationTokens[l, e] ? $"{c.RoutedTokens[l, e]}" : $"{c.RoutedTokens[l, e]}→{c.CalibrationTokens[l, e]}")));
            stdout.WriteLine("output error Σ‖(W−Ŵ)X‖² on the calibration activations:");
            foreach (var e in r.Errors)
                stdout.WriteLine(string.Create(inv, $"  {e.Group} ({e.Matrices} matrices): rtn {e.Rtn:E3}, gptq {e.Gptq:E3} ({e.Gptq / e.Rtn:P1} of rtn)"));
        }
    }
}
