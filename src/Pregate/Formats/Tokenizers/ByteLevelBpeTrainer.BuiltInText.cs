// A built-in English sample (original prose, public domain) for training the tokenizers of synthetic models.
namespace Pregate.Formats.Tokenizers;

public static partial class ByteLevelBpeTrainer
{
    /// <summary>About 6 KB of varied English prose, dialogue, numbers and punctuation, for <see cref="Train"/>.</summary>
    public const string BuiltInText = """
        The morning train left the station at 7:42, six minutes late, and nobody on the platform seemed surprised.
        A woman in a green coat folded her newspaper twice, checked her watch, and sighed. "It's always the same
        on Mondays," she said to no one in particular. The man beside her nodded; he had been waiting since half
        past six, because the timetable printed on the wall was wrong again.

        In the valley below, the river ran high after three days of rain. Farmers walked along the fences to see
        which fields had flooded. Some of the lower meadows were under a foot of brown water, and the sheep had
        gathered on the little hill near the old mill. Children stood on the bridge and dropped sticks into the
        current, racing them from one side to the other. "Mine won!" shouted the youngest. "No, it didn't, it got
        stuck under the bank," answered his sister, who was older and therefore always right.

        Cooking a good soup takes patience more than skill. Start with an onion, two carrots and a stick of celery,
        chopped small. Warm a spoonful of oil in a heavy pot, add the vegetables, and let them soften slowly for ten
        minutes without letting them brown. Then pour in a litre of stock, add a handful of lentils, a bay leaf and
        a pinch of salt. Simmer for forty minutes. Taste it, adjust the seasoning, and serve it with fresh bread.
        If you're feeling generous, grate some cheese on top; if you're feeling lazy, nobody will complain.

        The library on Elm Street opened in 1894. Its reading room has tall windows, oak tables and a ceiling painted
        with faded stars. Students come in the afternoon to study for their exams; retired teachers come in the
        morning to read the papers and argue quietly about politics, football and the weather. The librarian, a
        patient man with round glasses, knows every regular by name. He says the most borrowed book last year was a
        guide to growing tomatoes, which tells you something about the town.

        Scientists measure things carefully because small errors grow. A ruler that is off by one millimetre may not
        matter when you build a bookshelf, but it matters a great deal when you align a telescope or machine an
        engine part. Good experiments are repeated, their results are written down honestly, and their uncertainties
        are stated plainly: 3.14 plus or minus 0.02, not simply "about three". When two careful measurements disagree,
        something interesting is usually hiding in the gap between them.

        We'll meet at the café at noon, unless it's raining, in which case we'll meet at the museum instead. Don't be
        late! Last time you were twenty minutes late, and I had already finished my coffee, read the menu twice and
        started counting the tiles on the floor (there were 412, by the way). Bring the map, the tickets and the
        umbrella; I'll bring sandwiches, apples and a flask of tea.

        Questions worth asking: Why do leaves change colour in autumn? How far can a pigeon fly in one day? What
        makes bread rise? Who decided that a week should have seven days, and why not eight or ten? Some answers are
        simple, some are complicated, and some are still unknown. That is what makes the questions worth asking.

        Numbers appear everywhere: 12 eggs in a box, 24 hours in a day, 365 days in a year, 1,000 metres in a
        kilometre, 60 seconds in a minute. Prices rise from $4.99 to $5.49; temperatures fall from 21 degrees to 9
        overnight. A recipe might call for 250 grams of flour, 2 eggs and 150 ml of milk. Phone numbers, dates like
        2024-03-15, and codes such as A7-B9-C3 all mix letters, digits and punctuation in their own ways.

        The old lighthouse keeper kept a diary for forty years. Most entries are short: "Wind from the north-west.
        Fog at dawn. Lamp cleaned. Two fishing boats passed at noon." But some are longer. On a stormy night in
        November he wrote about a ship that lost its mast and drifted towards the rocks, and how the crew rowed a
        small boat through the waves to the harbour, soaked and frightened but alive. "I have never been so glad to
        see a light burning," the captain told him the next morning, shaking his hand for a long time.

        Learning a language is mostly practice. You listen, you repeat, you make mistakes, and people correct you,
        sometimes kindly and sometimes not. Words that seemed impossible become ordinary; sentences that once took a
        minute to build arrive without effort. One day you notice that you dreamed in the new language, and you
        realise that something in your head has quietly changed.

        The naïve plan was to walk the whole coast path in a week. It took eleven days, two pairs of boots and more
        plasters than anyone would like to admit. Still, the views were wonderful: cliffs, coves, seals on the
        rocks, and at the end of each day a warm kitchen, a bowl of stew, and a bed that did not move.

        Computers follow instructions exactly, which is both their strength and their weakness. A program that adds
        two numbers will do so a billion times without complaint, but it will also repeat the same mistake a billion
        times if the instructions are wrong. Testing, reviewing and measuring are how programmers catch those
        mistakes before the users do. "Trust, but verify," as the saying goes.
        """;
}
