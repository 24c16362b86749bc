// SentencePiece BPE by piece score (sentencepiece bpe_model.cc; llama.cpp llm_tokenizer_spm): start from
// characters, repeatedly merge the adjacent pair whose concatenation is a vocabulary piece with the highest
// score (leftmost on ties); characters that end up outside the vocabulary become byte tokens or unknown.
using System.Text;

namespace Pregate.Formats.Tokenizers;

internal sealed class SentencePieceBpe
{
    private readonly Dictionary<string, int> _pieces;
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _piecesBySpan;
    private readonly float[] _scores; // [vocab]
    private readonly int[] _byteTokenIds; // id of the byte piece per byte value, -1 where absent
    private readonly int? _unknownId;

    /// <param name="pieces">Piece text → id (pieces that take part in merging).</param>
    /// <param name="scores">Score per id; higher merges first.</param>
    /// <param name="byteTokenIds">Token id per byte value (-1 where the vocabulary has none).</param>
    public SentencePieceBpe(Dictionary<string, int> pieces, float[] scores, int[] byteTokenIds, int? unknownId)
    {
        _pieces = pieces;
        _piecesBySpan = pieces.GetAlternateLookup<ReadOnlySpan<char>>();
        _scores = scores;
        _byteTokenIds = byteTokenIds;
        _unknownId = unknownId;
    }

    /// <summary>Appends the ids of <paramref name="text"/> (already whitespace-escaped).</summary>
    public void Encode(string text, List<int> output)
    {
        if (text.Length == 0) return;
        // Symbols are code points: [start, start+length) in text.
        var start = new List<int>(text.Length);
        var length = new List<int>(text.Length);
        for (int i = 0; i < text.Length;)
        {
            int n = char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]) ? 2 : 1;
            start.Add(i);
            length.Add(n);
            i += n;
        }
        int count = start.Count;
        var len = length.ToArray();
        var prev = new int[count];
        var next = new int[count];
        for (int i = 0; i < count; i++)
        {
            prev[i] = i - 1;
            next[i] = i + 1 < count ? i + 1 : -1;
        }

        // Highest score first, then leftmost; an entry is stale once either symbol has changed length.
        var queue = new PriorityQueue<(int Left, int Right, int Size), (float NegScore, int Left)>();
        for (int i = 0; i + 1 < count; i++) TryQueue(i, i + 1);
        while (queue.TryDequeue(out var bigram, out _))
        {
            (int left, int right, int size) = bigram;
            if (len[left] == 0 || len[right] == 0 || len[left] + len[right] != size || next[left] != right) continue;
            len[left] += len[right];
            len[right] = 0;
            next[left] = next[right];
            if (next[right] >= 0) prev[next[right]] = left;
            if (prev[left] >= 0) TryQueue(prev[left], left);
            if (next[left] >= 0) TryQueue(left, next[left]);
        }

        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i >= 0; i = next[i])
        {
            ReadOnlySpan<char> piece = text.AsSpan(start[i], len[i]);
            if (_piecesBySpan.TryGetValue(piece, out int id))
            {
                output.Add(id);
                continue;
            }
            // Only single characters can be left unmatched (every merge result is a piece).
            int bytes = Encoding.UTF8.GetBytes(piece, utf8);
            bool allBytes = true;
            for (int k = 0; k < bytes; k++) allBytes &= _byteTokenIds[utf8[k]] >= 0;
            if (allBytes)
            {
                for (int k = 0; k < bytes; k++) output.Add(_byteTokenIds[utf8[k]]);
            }
            else if (_unknownId is int unk)
            {
                output.Add(unk);
            }
        }

        void TryQueue(int left, int right)
        {
            int size = len[left] + len[right];
            if (_piecesBySpan.TryGetValue(text.AsSpan(start[left], size), out int id))
            {
                queue.Enqueue((left, right, size), (-_scores[id], left));
            }
        }
    }
}
