// Byte-pair encoding by merge rank (HF tokenizers models/bpe: word → characters → repeatedly apply the
// lowest-ranked merge, leftmost first), with byte fallback ("<0xE2>" tokens), unknown-token fusing and
// ignore_merges. Used for tokenizer.json BPE models and GGUF "gpt2" vocabularies.
using System.Collections.Concurrent;
using System.Text;

namespace Pregate.Formats.Tokenizers;

internal sealed class BpeModel
{
    private const int MaxCachedWordLength = 256;
    private const int MaxCacheEntries = 1 << 16;

    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabBySpan;
    private readonly Dictionary<long, (int Rank, int NewId)> _merges;
    private readonly int[] _byteTokenIds; // id of "<0xXX>" per byte, -1 where absent
    private readonly int? _unknownId;
    private readonly bool _fuseUnknown;
    private readonly bool _byteFallback;
    private readonly bool _ignoreMerges;
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);

    /// <param name="vocab">Model vocabulary (token → id).</param>
    /// <param name="merges">Merge pairs by rank, as token ids (left, right, merged).</param>
    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(int Left, int Right, int Merged)> merges,
        int? unknownId, bool fuseUnknown, bool byteFallback, bool ignoreMerges)
    {
        _vocab = vocab;
        _vocabBySpan = vocab.GetAlternateLookup<ReadOnlySpan<char>>();
        _merges = new Dictionary<long, (int, int)>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            (int left, int right, int merged) = merges[rank];
            _merges.TryAdd(PairKey(left, right), (rank, merged)); // a repeated pair keeps its first rank
        }
        _unknownId = unknownId;
        _fuseUnknown = fuseUnknown;
        _byteFallback = byteFallback;
        _ignoreMerges = ignoreMerges;
        _byteTokenIds = new int[256];
        for (int b = 0; b < 256; b++) _byteTokenIds[b] = vocab.TryGetValue(ByteTokenName((byte)b), out int id) ? id : -1;
    }

    /// <summary>The SentencePiece-style name of a byte token, e.g. "&lt;0x0A&gt;".</summary>
    public static string ByteTokenName(byte b) => $"<0x{b:X2}>";

    private static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

    /// <summary>Appends the ids of one pre-tokenized word.</summary>
    public void Encode(string word, List<int> output)
    {
        if (word.Length == 0) return;
        if (_ignoreMerges && _vocab.TryGetValue(word, out int whole))
        {
            output.Add(whole);
            return;
        }
        if (word.Length <= MaxCachedWordLength && _cache.TryGetValue(word, out int[]? cached))
        {
            output.AddRange(cached);
            return;
        }
        int[] ids = EncodeWord(word);
        if (word.Length <= MaxCachedWordLength && _cache.Count < MaxCacheEntries) _cache.TryAdd(word, ids);
        output.AddRange(ids);
    }

    private int[] EncodeWord(string word)
    {
        // Initial symbols: one per character, or its UTF-8 bytes as byte tokens, or the unknown token.
        var ids = new List<int>(word.Length);
        bool previousUnknown = false;
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < word.Length;)
        {
            int charLength = char.IsHighSurrogate(word[i]) && i + 1 < word.Length && char.IsLowSurrogate(word[i + 1]) ? 2 : 1;
            ReadOnlySpan<char> ch = word.AsSpan(i, charLength);
            i += charLength;
            if (_vocabBySpan.TryGetValue(ch, out int id))
            {
                ids.Add(id);
                previousUnknown = false;
                continue;
            }
            if (_byteFallback && TryByteFallback(ch, utf8, ids))
            {
                previousUnknown = false;
                continue;
            }
            if (_unknownId is int unk)
            {
                if (!(_fuseUnknown && previousUnknown)) ids.Add(unk);
                previousUnknown = true;
            }
        }
        return Merge(ids);
    }

    private bool TryByteFallback(ReadOnlySpan<char> ch, Span<byte> utf8, List<int> ids)
    {
        int n = Encoding.UTF8.GetBytes(ch, utf8);
        for (int k = 0; k < n; k++)
        {
            if (_byteTokenIds[utf8[k]] < 0) return false;
        }
        for (int k = 0; k < n; k++) ids.Add(_byteTokenIds[utf8[k]]);
        return true;
    }

    // Symbols form a linked list; a queue ordered by (rank, position) yields the next merge, stale entries skipped.
    private int[] Merge(List<int> initial)
    {
        int n = initial.Count;
        if (n < 2) return initial.ToArray();
        int[] id = initial.ToArray();
        var prev = new int[n];
        var next = new int[n];
        var alive = new bool[n];
        for (int i = 0; i < n; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
            alive[i] = true;
        }
        var queue = new PriorityQueue<(int Left, int Right), (int Rank, int Left)>();
        for (int i = 0; i + 1 < n; i++) TryQueue(i, i + 1);

        while (queue.TryDequeue(out var pair, out var priority))
        {
            (int left, int right) = pair;
            if (!alive[left] || !alive[right] || next[left] != right) continue;
            if (!_merges.TryGetValue(PairKey(id[left], id[right]), out var merge) || merge.Rank != priority.Rank) continue;
            id[left] = merge.NewId;
            alive[right] = false;
            next[left] = next[right];
            if (next[right] >= 0) prev[next[right]] = left;
            if (prev[left] >= 0) TryQueue(prev[left], left);
            if (next[left] >= 0) TryQueue(left, next[left]);
        }

        var result = new List<int>(n);
        for (int i = 0; i >= 0; i = next[i]) result.Add(id[i]);
        return result.ToArray();

        void TryQueue(int left, int right)
        {
            if (_merges.TryGetValue(PairKey(id[left], id[right]), out var merge)) queue.Enqueue((left, right), (merge.Rank, left));
        }
    }
}
