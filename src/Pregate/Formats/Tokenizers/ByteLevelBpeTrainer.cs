// A small byte-level BPE trainer (GPT-2 style): words from the GPT-2 pre-tokenizer regex, 256 byte tokens,
// then merges learned greedily by pair frequency. Gives synthetic models a real tokenizer.json / GGUF vocabulary.
namespace Pregate.Formats.Tokenizers;

public static partial class ByteLevelBpeTrainer
{
    /// <summary>
    /// Learns a byte-level BPE vocabulary from <paramref name="text"/>: ids 0..255 are the bytes (in GPT-2's
    /// byte→character spelling), then one token per learned merge, then <paramref name="specialTokens"/>.
    /// Each step merges the most frequent adjacent pair inside GPT-2-regex words (ties: smallest left id, then
    /// smallest right id), so the result is deterministic. Training stops at <paramref name="vocabSize"/> tokens
    /// or when no pair is left (the vocabulary is then smaller). Special tokens in the text are not learned from.
    /// </summary>
    /// <exception cref="ArgumentException">Special tokens empty or repeated.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="vocabSize"/> is below 256 + the special tokens, or above 2^20.</exception>
    public static TrainedByteLevelBpe Train(string text, int vocabSize, IReadOnlyList<string> specialTokens)
    {
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(specialTokens);
        if (specialTokens.Any(string.IsNullOrEmpty)) throw new ArgumentException("special tokens must be non-empty", nameof(specialTokens));
        if (specialTokens.Distinct(StringComparer.Ordinal).Count() != specialTokens.Count) throw new ArgumentException("special tokens repeat", nameof(specialTokens));
        if (vocabSize < 256 + specialTokens.Count || vocabSize > 1 << 20)
        {
            throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, $"must be between {256 + specialTokens.Count} and {1 << 20}");
        }

        var words = new WordTable(CountWords(text, specialTokens));
        var tokens = new List<string>(vocabSize);
        var tokenIds = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++)
        {
            string s = ByteLevelAlphabet.ByteToChar((byte)b).ToString();
            tokens.Add(s);
            tokenIds[s] = b;
        }

        var merges = new List<(int Left, int Right)>();
        var mergedPairs = new HashSet<long>();
        int target = vocabSize - specialTokens.Count;
        while (tokens.Count < target && words.TryTakeBestPair(out int left, out int right))
        {
            string mergedText = tokens[left] + tokens[right];
            if (!tokenIds.TryGetValue(mergedText, out int merged))
            {
                merged = tokens.Count;
                tokens.Add(mergedText);
                tokenIds[mergedText] = merged;
            }
            if (mergedPairs.Add(WordTable.PairKey(left, right))) merges.Add((left, right));
            words.Merge(left, right, merged);
        }

        var specialIds = new List<int>(specialTokens.Count);
        foreach (string special in specialTokens)
        {
            if (tokenIds.ContainsKey(special)) throw new ArgumentException($"special token '{special}' is also a learned token", nameof(specialTokens));
            specialIds.Add(tokens.Count);
            tokens.Add(special);
        }
        return new TrainedByteLevelBpe(tokens, merges.Select(m => (tokens[m.Left], tokens[m.Right])).ToArray(), specialIds);
    }

    private static Dictionary<string, long> CountWords(string text, IReadOnlyList<string> specialTokens)
    {
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        var regex = new CodePointRegex(CodePointRegex.Gpt2Pattern);
        var segments = new List<TextSegment>();
        new AddedTokenMatcher(specialTokens.Select((s, i) => new AddedToken(i, s))).Split(text, segments);
        var matches = new List<(int Start, int Length)>();
        foreach (TextSegment segment in segments)
        {
            if (segment.IsToken) continue;
            string part = text.Substring(segment.Start, segment.Length);
            matches.Clear();
            regex.Matches(part, matches);
            foreach ((int start, int length) in matches)
            {
                string word = part.Substring(start, length);
                counts[word] = counts.GetValueOrDefault(word) + 1;
            }
        }
        return counts;
    }

    /// <summary>Distinct words as symbol sequences with their counts, and the count of every adjacent symbol pair.</summary>
    private sealed class WordTable
    {
        private readonly List<int>[] _symbols;   // [word] current token ids
        private readonly long[] _frequency;      // [word]
        private readonly int[] _visited;         // [word] stamp of the last merge that touched it
        private readonly Dictionary<long, long> _pairCount = [];
        private readonly Dictionary<long, List<int>> _pairWords = [];
        private readonly PriorityQueue<long, (long NegCount, long Pair)> _queue = new();
        private int _stamp;

        public WordTable(Dictionary<string, long> counts)
        {
            string[] words = counts.Keys.Order(StringComparer.Ordinal).ToArray();
            _symbols = new List<int>[words.Length];
            _frequency = new long[words.Length];
            _visited = new int[words.Length];
            for (int w = 0; w < words.Length; w++)
            {
                byte[] bytes = System.Text.Encoding.UTF8.GetBytes(words[w]);
                _symbols[w] = bytes.Select(b => (int)b).ToList();
                _frequency[w] = counts[words[w]];
                AddPairs(w, +1, null);
            }
            foreach ((long pair, long count) in _pairCount) _queue.Enqueue(pair, (-count, pair));
        }

        public static long PairKey(int left, int right) => ((long)left << 32) | (uint)right;

        /// <summary>The most frequent pair (ties: smallest left, then right id); false when no pair is left.</summary>
        public bool TryTakeBestPair(out int left, out int right)
        {
            while (_queue.TryDequeue(out long pair, out var priority))
            {
                long current = _pairCount.GetValueOrDefault(pair);
                if (current <= 0 || current != -priority.NegCount) continue; // stale entry
                left = (int)(pair >> 32);
                right = (int)(uint)pair;
                return true;
            }
            left = right = 0;
            return false;
        }

        /// <summary>Replaces every non-overlapping (left, right), scanning left to right, by <paramref name="merged"/>.</summary>
        public void Merge(int left, int right, int merged)
        {
            long key = PairKey(left, right);
            if (!_pairWords.Remove(key, out List<int>? wordList)) return;
            _stamp++;
            var changed = new HashSet<long>();
            foreach (int w in wordList)
            {
                if (_visited[w] == _stamp) continue;
                _visited[w] = _stamp;
                List<int> s = _symbols[w];
                if (!Contains(s, left, right)) continue;
                AddPairs(w, -1, changed);
                var result = new List<int>(s.Count);
                for (int i = 0; i < s.Count; i++)
                {
                    if (i + 1 < s.Count && s[i] == left && s[i + 1] == right)
                    {
                        result.Add(merged);
                        i++;
                    }
                    else
                    {
                        result.Add(s[i]);
                    }
                }
                _symbols[w] = result;
                AddPairs(w, +1, changed);
            }
            foreach (long pair in changed)
            {
                long count = _pairCount.GetValueOrDefault(pair);
                if (count > 0) _queue.Enqueue(pair, (-count, pair));
            }
        }

        private static bool Contains(List<int> s, int left, int right)
        {
            for (int i = 0; i + 1 < s.Count; i++)
            {
                if (s[i] == left && s[i + 1] == right) return true;
            }
            return false;
        }

        private void AddPairs(int w, int sign, HashSet<long>? changed)
        {
            List<int> s = _symbols[w];
            for (int i = 0; i + 1 < s.Count; i++)
            {
                long pair = PairKey(s[i], s[i + 1]);
                long count = _pairCount.GetValueOrDefault(pair) + sign * _frequency[w];
                if (count == 0) _pairCount.Remove(pair);
                else _pairCount[pair] = count;
                changed?.Add(pair);
                if (sign > 0)
                {
                    if (!_pairWords.TryGetValue(pair, out List<int>? list)) _pairWords[pair] = list = [];
                    if (list.Count == 0 || list[^1] != w) list.Add(w);
                }
            }
        }
    }
}
