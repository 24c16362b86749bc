// A hand-built SentencePiece-style (Llama / Mistral / Mixtral) tokenizer.json: "<unk>", "<s>", "</s>", the 256
// byte tokens "<0x00>".."<0xFF>", single characters and a few '▁'-prefixed merges. Most non-ASCII text has no
// pieces, so it goes through byte fallback.
using System.Text.Json.Nodes;

namespace Pregate.Tests.Tokenizers;

internal static class SentencePieceStyleJson
{
    private const string Space = "\u2581";

    public static readonly (string Left, string Right)[] MergeList =
    [
        (Space, "t"), ("h", "e"), (Space + "t", "he"), ("i", "n"), (Space, "a"), ("a", "n"), (Space + "a", "n"), (Space + "an", "d"),
        ("e", "r"), ("o", "n"), (Space, "w"), ("o", "r"), (Space + "w", "or"), ("l", "d"), (Space + "wor", "ld"), (Space, "h"),
        ("e", "l"), ("l", "o"), (Space + "h", "el"), (Space + "hel", "lo"), ("i", "s"), (Space, "i"), (Space + "i", "s"),
        (Space, "c"), ("a", "f"), (Space + "c", "af"), (Space + "caf", "é"), (Space, Space), (Space + Space, Space + Space),
        (Space + "t", "e"), ("s", "t"), (Space + "te", "st"), ("e", "s"), (Space, "s"), ("T", "he"), (Space, "T"), (Space + "T", "he"),
    ];

    /// <summary>Vocabulary and merges; <paramref name="metaspace"/> picks the Metaspace pre-tokenizer (prepend_scheme "first") instead of the Prepend+Replace normalizer.</summary>
    public static string Build(bool metaspace)
    {
        var vocab = new JsonObject();
        int next = 0;
        void Add(string token)
        {
            if (!vocab.ContainsKey(token)) vocab[token] = next++;
        }
        Add("<unk>");
        Add("<s>");
        Add("</s>");
        for (int b = 0; b < 256; b++) Add($"<0x{b:X2}>");
        foreach (char c in Space + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,!?;:'-é") Add(c.ToString());
        var merges = new JsonArray();
        foreach ((string l, string r) in MergeList)
        {
            Add(l + r);
            merges.Add(l + " " + r);
        }

        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(Added(0, "<unk>"), Added(1, "<s>"), Added(2, "</s>")),
        };
        if (metaspace)
        {
            root["normalizer"] = null;
            root["pre_tokenizer"] = new JsonObject { ["type"] = "Metaspace", ["replacement"] = Space, ["prepend_scheme"] = "first", ["split"] = false };
        }
        else
        {
            root["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = Space },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = Space }),
            };
            root["pre_tokenizer"] = null;
        }
        root["post_processor"] = new JsonObject
        {
            ["type"] = "TemplateProcessing",
            ["single"] = new JsonArray(
                new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } },
                new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } }),
            ["pair"] = new JsonArray(
                new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 0 } },
                new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "A", ["type_id"] = 0 } },
                new JsonObject { ["SpecialToken"] = new JsonObject { ["id"] = "<s>", ["type_id"] = 1 } },
                new JsonObject { ["Sequence"] = new JsonObject { ["id"] = "B", ["type_id"] = 1 } }),
            ["special_tokens"] = new JsonObject
            {
                ["<s>"] = new JsonObject { ["id"] = "<s>", ["ids"] = new JsonArray(1), ["tokens"] = new JsonArray("<s>") },
            },
        };
        root["decoder"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["decoders"] = new JsonArray(
                new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = Space }, ["content"] = " " },
                new JsonObject { ["type"] = "ByteFallback" },
                new JsonObject { ["type"] = "Fuse" },
                new JsonObject { ["type"] = "Strip", ["content"] = " ", ["start"] = 1, ["stop"] = 0 }),
        };
        root["model"] = new JsonObject
        {
            ["type"] = "BPE",
            ["dropout"] = null,
            ["unk_token"] = "<unk>",
            ["continuing_subword_prefix"] = null,
            ["end_of_word_suffix"] = null,
            ["fuse_unk"] = true,
            ["byte_fallback"] = true,
            ["ignore_merges"] = false,
            ["vocab"] = vocab,
            ["merges"] = merges,
        };
        return root.ToJsonString();
    }

    public const string ConfigJson = """{"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}""";

    private static JsonObject Added(int id, string content) => new()
    {
        ["id"] = id, ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true,
    };
}
