// Online calibration of a predictor's guesses: how often a guess of a given lookahead, rank and softmax probability turns
// out to be among the experts its layer routes to, counted while the model runs (a reliability table), smoothed toward
// the guess's rank alone and, before any evidence, toward "always right".
namespace Pregate.Experts.Prediction;

/// <summary>
/// The calibrated probability that a guess is routed to. A guess is described by its lookahead <c>a</c> (1 = next layer),
/// its rank <c>r</c> among the token's guesses (0 = best) and <c>p</c>, the softmax of the predictor's scores at that
/// expert, cut into <see cref="Buckets"/> equal bins <c>b</c>. With <c>n</c> guesses seen and <c>h</c> of them routed,
/// <c>P(a, r) = (h_ar + w) / (n_ar + w)</c> and <c>P(a, r, b) = (h_arb + w · P(a, r)) / (n_arb + w)</c>, <c>w</c> =
/// <see cref="PriorWeight"/>: a new predictor starts out trusted and is judged on what it gets right. Raw softmax
/// probabilities are not comparable across models (a trained router may give its top choice 0.12 of 16 experts and be
/// right 9 times in 10); the counts are. Not thread-safe.
/// </summary>
public sealed class GuessCalibration
{
    /// <summary>Bins of the softmax probability.</summary>
    public const int Buckets = 20;

    /// <summary>The weight, in guesses, of the coarser estimate each cell is smoothed toward.</summary>
    public const double PriorWeight = 2;

    private readonly int _ranks;
    private readonly long[] _cellGuesses, _cellHits; // [(a - 1) · ranks · Buckets + r · Buckets + b]
    private readonly long[] _rankGuesses, _rankHits; // [(a - 1) · ranks + r]

    /// <exception cref="ArgumentOutOfRangeException">A lookahead or rank count below 1.</exception>
    public GuessCalibration(int maxLookahead, int ranks)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxLookahead);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(ranks);
        MaxLookahead = maxLookahead;
        _ranks = ranks;
        _rankGuesses = new long[checked(maxLookahead * ranks)];
        _rankHits = new long[_rankGuesses.Length];
        _cellGuesses = new long[checked(_rankGuesses.Length * Buckets)];
        _cellHits = new long[_cellGuesses.Length];
    }

    public int MaxLookahead { get; }

    /// <summary>Guesses per token this table ranks.</summary>
    public int Ranks => _ranks;

    /// <summary>Guesses observed so far.</summary>
    public long Observed { get; private set; }

    /// <summary>The calibrated probability that a guess of lookahead <paramref name="ahead"/>, rank <paramref name="rank"/> and softmax probability <paramref name="softmax"/> is routed to.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The lookahead or rank is outside the table.</exception>
    public double Probability(int ahead, int rank, double softmax)
    {
        int r = RankIndex(ahead, rank), cell = r * Buckets + Bucket(softmax);
        double byRank = (_rankHits[r] + PriorWeight) / (_rankGuesses[r] + PriorWeight);
        return (_cellHits[cell] + PriorWeight * byRank) / (_cellGuesses[cell] + PriorWeight);
    }

    /// <summary>Counts one guess and whether its layer then routed to it.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The lookahead or rank is outside the table.</exception>
    public void Observe(int ahead, int rank, double softmax, bool routed)
    {
        int r = RankIndex(ahead, rank), cell = r * Buckets + Bucket(softmax);
        _rankGuesses[r]++;
        _cellGuesses[cell]++;
        if (routed)
        {
            _rankHits[r]++;
            _cellHits[cell]++;
        }
        Observed++;
    }

    /// <summary>The bin of a softmax probability: <c>floor(p · Buckets)</c>, clamped to the table (NaN: bin 0).</summary>
    public static int Bucket(double softmax) => softmax >= 1 ? Buckets - 1 : softmax > 0 ? (int)(softmax * Buckets) : 0;

    private int RankIndex(int ahead, int rank)
    {
        if (ahead < 1 || ahead > MaxLookahead) throw new ArgumentOutOfRangeException(nameof(ahead), ahead, $"the table holds lookaheads 1 to {MaxLookahead}");
        if ((uint)rank >= (uint)_ranks) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"the table holds ranks 0 to {_ranks - 1}");
        return (ahead - 1) * _ranks + rank;
    }
}
