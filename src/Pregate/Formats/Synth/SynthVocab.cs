// The tokenizer of a synthetic model: a byte-level BPE trained on a built-in English sample, padded with unused special
// tokens up to the model's vocabulary size, written identically as tokenizer.json (HF) and as a GGUF "gpt2" vocabulary.
using System.Text.Json;
using Pregate.Core;
using Pregate.Formats.Gguf;
using Pregate.Formats.Tokenizers;

namespace Pregate.Formats.Synth;

internal sealed class SynthVocab
{
    public const string EndOfText = "<|endoftext|>";

    public TrainedByteLevelBpe Bpe { get; }
    public int EndOfTextId => Bpe.SpecialTokenIds[0];

    private SynthVocab(TrainedByteLevelBpe bpe) => Bpe = bpe;

    /// <summary>A vocabulary of exactly <c>c.VocabSize</c> tokens (at least 257).</summary>
    public static SynthVocab Get(ModelConfig c)
    {
        if (c.VocabSize < 257) throw new ArgumentException($"synthetic models need a vocabulary of at least 257 tokens (256 bytes + {EndOfText}), not {c.VocabSize}");
        var bpe = ByteLevelBpeTrainer.Train(ByteLevelBpeTrainer.BuiltInText, c.VocabSize, [EndOfText]);
        int missing = c.VocabSize - bpe.VocabSize;
        if (missing > 0)
        {
            // The sample ran out of merges: the same merges again, then unused specials fill the vocabulary.
            var specials = new List<string>(missing + 1) { EndOfText };
            for (int i = 0; i < missing; i++) specials.Add($"<|extra_{i}|>");
            bpe = ByteLevelBpeTrainer.Train(ByteLevelBpeTrainer.BuiltInText, c.VocabSize, specials);
        }
        return new SynthVocab(bpe);
    }

    /// <summary>The config with bos/eos set to this vocabulary's end-of-text token.</summary>
    public ModelConfig Apply(ModelConfig c) => c with { BosTokenId = null, EosTokenIds = [EndOfTextId] };

    public void WriteGguf(GgufWriter w)
    {
        w.AddString("tokenizer.ggml.model", "gpt2");
        w.AddString("tokenizer.ggml.pre", "gpt-2");
        w.AddStringArray("tokenizer.ggml.tokens", Bpe.Tokens);
        w.AddInt32Array("tokenizer.ggml.token_type", Bpe.GgufTokenTypes.ToArray());
        w.AddStringArray("tokenizer.ggml.merges", Bpe.Merges);
        w.AddBool("tokenizer.ggml.add_bos_token", false);
    }

    public void WriteHf(string directory, ModelConfig c)
    {
        File.WriteAllText(Path.Combine(directory, "tokenizer.json"), Bpe.ToTokenizerJson());
        using var ms = new MemoryStream();
        using (var j = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            j.WriteStartObject();
            j.WriteString("tokenizer_class", "PreTrainedTokenizerFast");
            j.WriteBoolean("add_bos_token", false);
            j.WriteBoolean("add_eos_token", false);
            j.WriteNull("bos_token");
            j.WriteString("eos_token", EndOfText);
            j.WriteString("unk_token", EndOfText);
            j.WriteNumber("model_max_length", c.MaxContext);
            j.WriteEndObject();
        }
        File.WriteAllBytes(Path.Combine(directory, "tokenizer_config.json"), ms.ToArray());
    }
}
