// A model's chat layout: its chat template (HF chat_template.jinja / chat_template.json / tokenizer_config.json
// "chat_template", GGUF tokenizer.chat_template) or ChatML when it ships none, rendered and tokenized into a prompt.
// Reference: transformers tokenization_utils_base.apply_chat_template; llama.cpp common_chat_templates_init.
using Pregate.Core;
using Pregate.Engine.ChatTemplates;
using Pregate.Formats;
using Pregate.Formats.Tokenizers;

namespace Pregate.Engine;

/// <summary>Turns a conversation into prompt tokens for one model, and says where its template came from.</summary>
public sealed class ChatFormat
{
    // End-of-turn markers of common templates; where a template writes one, generation stops at it.
    private static readonly string[] EndOfTurnMarkers =
        ["<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>", "<|endoftext|>", "</s>"];

    private readonly TextTokenizer _tokenizer;

    private ChatFormat(TextTokenizer tokenizer, ChatTemplate template, string? origin, string? fallbackReason,
        string? bosToken = null, string? eosToken = null)
    {
        _tokenizer = tokenizer;
        Template = template;
        Origin = origin;
        FallbackReason = fallbackReason;
        BosToken = bosToken ?? (tokenizer.BosId is int b ? tokenizer.TokenText(b) : null);
        EosToken = eosToken ?? (tokenizer.EosIds.Count > 0 ? tokenizer.TokenText(tokenizer.EosIds[0]) : null);
        var stopTokens = new List<int>();
        var stopStrings = new List<string>();
        foreach (string marker in EndOfTurnMarkers)
        {
            if (!template.Source.Contains(marker, StringComparison.Ordinal)) continue;
            if (tokenizer.TokenToId(marker) is int id && tokenizer.IsSpecial(id)) stopTokens.Add(id);
            else stopStrings.Add(marker);
        }
        // ChatML written out by a model that lacks its tokens: the next turn's start also ends the reply.
        if (origin is null) stopStrings.Add("<|im_start|>");
        StopTokens = stopTokens;
        StopStrings = stopStrings;
    }

    public ChatTemplate Template { get; }

    /// <summary>Where the template was read (the HF folder, or "FILE: KEY" for GGUF); null when <see cref="ChatTemplate.ChatMl"/> is used instead.</summary>
    public string? Origin { get; }

    /// <summary>True when the model has no usable template and ChatML is used.</summary>
    public bool IsFallback => Origin is null;

    /// <summary>Why ChatML is used (no template, or the model's template could not be parsed); null otherwise.</summary>
    public string? FallbackReason { get; }

    /// <summary>The <c>bos_token</c> / <c>eos_token</c> strings the template sees (null when the tokenizer has none).</summary>
    public string? BosToken { get; }
    public string? EosToken { get; }

    /// <summary>End-of-turn tokens of the template (special tokens), to stop generation at.</summary>
    public IReadOnlyList<int> StopTokens { get; }

    /// <summary>End-of-turn markers of the template that are not single special tokens, to stop generation at.</summary>
    public IReadOnlyList<string> StopStrings { get; }

    /// <summary>The chat format of an open session.</summary>
    /// <exception cref="ModelFormatException">The template entry of the model files is malformed (e.g. not a string).</exception>
    public static ChatFormat For(ModelSession session) => Load(session.Checkpoint, session.Tokenizer);

    /// <summary>
    /// Reads the chat template of <paramref name="checkpoint"/>: for a HF folder where transformers looks
    /// (<see cref="ChatTemplateConfig.Load"/>), for GGUF the key tokenizer.chat_template. A missing template, or one that
    /// does not parse, gives ChatML. bos/eos strings come from tokenizer_config.json when it names them, else from the tokenizer.
    /// </summary>
    /// <exception cref="ModelFormatException">A template file or entry is malformed.</exception>
    public static ChatFormat Load(Checkpoint checkpoint, TextTokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ArgumentNullException.ThrowIfNull(tokenizer);
        string? source, origin, bos = null, eos = null;
        if (checkpoint.Format == CheckpointFormat.Gguf)
        {
            source = checkpoint.Gguf!.TryGetString("tokenizer.chat_template", out var s) ? s : null;
            origin = $"{checkpoint.Path}: tokenizer.chat_template";
        }
        else
        {
            var config = ChatTemplateConfig.Load(checkpoint.Path);
            (source, bos, eos) = (config.Template, config.BosToken, config.EosToken);
            origin = checkpoint.Path;
        }
        if (source is null)
            return new ChatFormat(tokenizer, ChatTemplate.ChatMl, null, "the model files have no chat template", bos, eos);
        try
        {
            return new ChatFormat(tokenizer, ChatTemplate.Parse(source), origin, null, bos, eos);
        }
        catch (ChatTemplateException e)
        {
            return new ChatFormat(tokenizer, ChatTemplate.ChatMl, null, $"the chat template of {origin} could not be parsed: {e.Message}", bos, eos);
        }
    }

    /// <summary>ChatML over <paramref name="tokenizer"/>, for models without files (and tests).</summary>
    public static ChatFormat ChatMl(TextTokenizer tokenizer) => new(tokenizer, ChatTemplate.ChatMl, null, "ChatML requested");

    /// <summary>The rendered prompt text of <paramref name="messages"/>.</summary>
    /// <exception cref="ChatTemplateException">The template failed, e.g. raised an error about the message order.</exception>
    public string Render(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true) =>
        Template.Render(messages, addGenerationPrompt, BosToken, EosToken);

    /// <summary>
    /// Prompt tokens of <paramref name="messages"/>: the rendered text tokenized with special tokens recognised, and BOS put
    /// first only when the tokenizer asks for it and the template did not already write it (llama.cpp's rule; HF templates
    /// write their own BOS).
    /// </summary>
    /// <exception cref="ChatTemplateException">The template failed.</exception>
    public IReadOnlyList<int> Encode(IReadOnlyList<ChatMessage> messages, bool addGenerationPrompt = true)
    {
        var ids = _tokenizer.Encode(Render(messages, addGenerationPrompt), addBos: false);
        if (_tokenizer.AddBosToken && _tokenizer.BosId is int bos && (ids.Count == 0 || ids[0] != bos))
            return [bos, .. ids];
        return ids;
    }

    /// <summary><paramref name="options"/> with this format's end-of-turn tokens and strings added to its stops.</summary>
    public GenerationOptions WithStops(GenerationOptions options) => options with
    {
        StopTokens = [.. options.StopTokens, .. StopTokens],
        StopStrings = [.. options.StopStrings, .. StopStrings],
    };
}
