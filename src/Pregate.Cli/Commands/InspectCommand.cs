// `pregate inspect`: architecture, sizes and the resident/expert byte split of a checkpoint.
using System.CommandLine;
using System.Text.Json;
using Pregate.Formats;

namespace Pregate.Cli.Commands;

internal static class InspectCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string>("--model") { Description = "GGUF file or Hugging Face checkpoint folder", Required = true };
        var json = new Option<bool>("--json") { Description = "print one JSON object" };
        var cmd = new Command("inspect", "Show a model's architecture, parameter counts and bytes (resident vs routed experts)") { model, json };
        cmd.SetAction(p =>
        {
            using var ck = Checkpoint.Open(p.GetValue(model)!);
            var s = ModelSummary.Of(ck);
            if (p.GetValue(json)) WriteJson(stdout, ck, s);
            else WriteText(stdout, ck, s);
            return 0;
        });
        return cmd;
    }

    private static void WriteText(TextWriter o, Checkpoint ck, ModelSummary s)
    {
        var c = s.Config;
        o.WriteLine($"model          {ck.Path}");
        o.WriteLine($"format         {(ck.Format == CheckpointFormat.Gguf ? "gguf" : "huggingface")}");
        o.WriteLine($"architecture   {c.ModelType}");
        o.WriteLine($"layers         {c.NumLayers}");
        o.WriteLine($"experts        {c.NumExperts} (top-{c.NumExpertsUsed}{(c.NormTopKProb ? ", renormalised" : "")}){(c.SharedExpertFfn > 0 ? $", shared expert ffn {c.SharedExpertFfn}" : "")}");
        o.WriteLine($"hidden         {c.HiddenSize}");
        o.WriteLine($"expert ffn     {c.ExpertFfn}");
        o.WriteLine($"heads          {c.NumHeads} (kv {c.NumKvHeads}, head dim {c.HeadDim})");
        o.WriteLine($"vocab          {c.VocabSize}");
        o.WriteLine($"context        {c.MaxContext}");
        o.WriteLine($"parameters     {Units.Count(s.TotalParams)} total, {Units.Count(s.ActiveParams)} active per token");
        o.WriteLine($"bytes          {Units.Bytes(s.TotalBytes)} total: {Units.Bytes(s.ResidentBytes)} resident, {Units.Bytes(s.ExpertBytes)} routed experts ({Units.Bytes(s.BytesPerExpert)} per expert)");
        o.WriteLine($"dtypes         {string.Join(", ", s.BytesByType.Select(kv => $"{kv.Key} {Units.Bytes(kv.Value)}"))}");
    }

    private static void WriteJson(TextWriter o, Checkpoint ck, ModelSummary s)
    {
        var c = s.Config;
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("path", ck.Path);
            w.WriteString("format", ck.Format == CheckpointFormat.Gguf ? "gguf" : "huggingface");
            w.WriteString("architecture", c.ModelType);
            w.WriteNumber("n_layers", c.NumLayers);
            w.WriteNumber("n_experts", c.NumExperts);
            w.WriteNumber("n_experts_used", c.NumExpertsUsed);
            w.WriteNumber("hidden_size", c.HiddenSize);
            w.WriteNumber("expert_ffn", c.ExpertFfn);
            w.WriteNumber("shared_expert_ffn", c.SharedExpertFfn);
            w.WriteNumber("n_heads", c.NumHeads);
            w.WriteNumber("n_kv_heads", c.NumKvHeads);
            w.WriteNumber("head_dim", c.HeadDim);
            w.WriteNumber("vocab_size", c.VocabSize);
            w.WriteNumber("context_length", c.MaxContext);
            w.WriteBoolean("norm_topk_prob", c.NormTopKProb);
            w.WriteNumber("total_params", s.TotalParams);
            w.WriteNumber("active_params", s.ActiveParams);
            w.WriteNumber("total_bytes", s.TotalBytes);
            w.WriteNumber("expert_bytes", s.ExpertBytes);
            w.WriteNumber("resident_bytes", s.ResidentBytes);
            w.WriteNumber("bytes_per_expert", s.BytesPerExpert);
            w.WriteStartObject("bytes_by_dtype");
            foreach (var kv in s.BytesByType) w.WriteNumber(kv.Key, kv.Value);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        o.WriteLine(System.Text.Encoding.UTF8.GetString(ms.ToArray()));
    }
}
