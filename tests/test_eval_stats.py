"""The statistics of a comparison: intervals, the sign test, length control, judge agreement.

The length-control check is the issue's synthetic one: a judge that prefers the longer answer
nine times in ten, on pairs where A is longer on about 80% of the questions and otherwise no
better, must give a raw win rate well above 0.5 and a length-controlled one near 0.5.
"""

from __future__ import annotations

import doctest
import math
import random
import statistics
from collections.abc import Sequence
from fractions import Fraction

import pytest

from expertprompting._evaluation import stats
from expertprompting._evaluation.stats import (
    Interval,
    adjusted_win_rate,
    cohen_kappa,
    judge_agreement,
    lc_interval,
    length_controlled_win_rate,
    length_summary,
    paired_bootstrap,
    questions_needed,
    score_ratio,
    sign_test,
)
from expertprompting._evaluation.verdicts import Outcome
from expertprompting._method.errors import ConfigurationError, ExpertPromptingWarning


def test_docstring_examples_hold() -> None:
    assert doctest.testmod(stats).failed == 0


def many(outcome: Outcome, n: int) -> list[Outcome]:
    return [outcome] * n


# -- synthetic comparisons -----------------------------------------------------------------------
def length_biased(
    n: int, seed: int, *, share_longer: float = 0.8, prefers_longer: float = 0.9
) -> tuple[list[Outcome], list[int], list[int]]:
    """A longer on ``share_longer`` of the questions by 80-300 tokens, otherwise no better;
    the judge picks the longer answer with probability ``prefers_longer``, whoever wrote it."""
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    length_a: list[int] = []
    length_b: list[int] = []
    for _ in range(n):
        base, extra = rng.randint(100, 400), rng.randint(80, 300)
        a_longer = rng.random() < share_longer
        a, b = (base + extra, base) if a_longer else (base, base + extra)
        picks_longer = rng.random() < prefers_longer
        outcomes.append("win" if a_longer == picks_longer else "loss")
        length_a.append(a)
        length_b.append(b)
    return outcomes, length_a, length_b


def better_not_longer(n: int, seed: int) -> tuple[list[Outcome], list[int], list[int]]:
    """A really better (the judge prefers it 3 times in 4, 1 in 10 a tie), lengths unrelated."""
    rng = random.Random(seed)
    outcomes: list[Outcome] = []
    for _ in range(n):
        draw = rng.random()
        outcomes.append("tie" if draw < 0.1 else "win" if draw < 0.775 else "loss")
    length_a = [rng.randint(100, 400) for _ in range(n)]
    length_b = [rng.randint(100, 400) for _ in range(n)]
    return outcomes, length_a, length_b


# On 200 such pairs the length-controlled rate scatters around 0.5 with a standard deviation of
# about 0.065 (over 200 seeds: mean 0.516, 90% within 0.1 of 0.5): the ~40 questions where A is
# the shorter carry most of the information, so one draw in ten lands further out (seed 0 gives
# 0.64). The headline check uses seed 1; the next test shows it is not a lucky one.
def test_a_length_biased_judge_inflates_the_raw_win_rate_but_not_the_length_controlled_one() -> (
    None
):
    outcomes, length_a, length_b = length_biased(200, seed=1)
    assert 0.7 < sum(a > b for a, b in zip(length_a, length_b, strict=True)) / 200 < 0.9

    raw = paired_bootstrap(outcomes, adjusted_win_rate, seed=1)
    assert raw is not None
    assert raw.estimate > 0.65
    assert raw.excludes(0.5)  # the raw figure "shows" a difference...

    lc = lc_interval(outcomes, length_a, length_b, seed=1)
    assert lc is not None
    assert lc.estimate == length_controlled_win_rate(outcomes, length_a, length_b)
    assert abs(lc.estimate - 0.5) < 0.1
    assert not lc.excludes(0.5)  # ...that length control shows to be the judge's taste
    assert lc.low <= lc.estimate <= lc.high


def test_length_control_is_centred_on_half_over_many_seeds() -> None:
    """Over 30 synthetic comparisons the raw rate averages about 0.74 (0.8 * 0.9 + 0.2 * 0.1)
    and is always above 0.65; the length-controlled one averages about 0.5."""
    raw, lc = [], []
    for seed in range(30):
        outcomes, length_a, length_b = length_biased(200, seed=seed)
        raw.append(adjusted_win_rate(outcomes) or 0.0)
        lc.append(length_controlled_win_rate(outcomes, length_a, length_b) or 0.0)
    assert abs(statistics.fmean(raw) - 0.74) < 0.03
    assert min(raw) > 0.65
    assert abs(statistics.fmean(lc) - 0.5) < 0.05
    assert sum(abs(v - 0.5) < 0.1 for v in lc) >= 24


def test_a_real_quality_difference_survives_length_control() -> None:
    outcomes, length_a, length_b = better_not_longer(200, seed=0)
    raw = adjusted_win_rate(outcomes)
    assert raw is not None
    assert raw > 0.65
    lc = lc_interval(outcomes, length_a, length_b, seed=1)
    assert lc is not None
    assert lc.estimate > 0.65
    assert abs(lc.estimate - raw) < 0.05
    assert lc.excludes(0.5)
    assert lc.low > 0.5


def test_length_control_reads_the_fitted_model_at_equal_length() -> None:
    """Equal and opposite length differences (x = +c or -c): unpenalised, the fit gives
    b0 + b1 c = logit(0.9) and b0 - b1 c = logit(0.3), so sigmoid(b0) is known exactly."""
    outcomes = many("win", 90) + many("loss", 10) + many("win", 30) + many("loss", 70)
    length_a = [300] * 100 + [100] * 100
    length_b = [100] * 100 + [300] * 100
    b0 = (math.log(0.9 / 0.1) + math.log(0.3 / 0.7)) / 2
    expected = 1 / (1 + math.exp(-b0))
    got = length_controlled_win_rate(outcomes, length_a, length_b)
    assert got == pytest.approx(expected, abs=0.002)


def test_ties_are_half_a_win_and_unparsed_pairs_are_left_out() -> None:
    assert length_controlled_win_rate(["tie"] * 10, [200] * 10, [100] * 10) == pytest.approx(0.5)
    outcomes = many("win", 6) + many("loss", 4) + many("unparsed", 5)
    same = [100] * 15
    lc = length_controlled_win_rate(outcomes, same, same)
    assert lc == pytest.approx(0.6, abs=0.002)  # no length difference: the raw rate, barely shrunk
    assert length_controlled_win_rate(["unparsed"] * 3, [1, 2, 3], [3, 2, 1]) is None
    assert lc_interval(["unparsed"] * 3, [1, 2, 3], [3, 2, 1]) is None


def test_separated_data_still_give_a_finite_answer() -> None:
    """A longer and winning on every question: the penalty keeps the fit finite."""
    lc = length_controlled_win_rate(["win"] * 50, list(range(200, 250)), [100] * 50)
    assert lc is not None
    assert 0.5 < lc < 1


def test_length_inputs_must_line_up() -> None:
    with pytest.raises(ConfigurationError, match="one entry per question"):
        length_controlled_win_rate(["win", "loss"], [1, 2], [1])


def test_length_summary() -> None:
    assert length_summary([100, 200, 600]) == (300.0, 200.0)
    assert length_summary([1, 2, 3, 4]) == (2.5, 2.5)
    assert length_summary([]) is None


# -- the bootstrap -----------------------------------------------------------------------------
def test_bootstrap_interval_of_a_proportion_matches_the_normal_theory() -> None:
    rows = [1] * 200 + [0] * 200
    interval = paired_bootstrap(rows, statistics.fmean, resamples=4000, seed=3)
    assert interval is not None
    half_width = 1.96 * math.sqrt(0.25 / 400)  # 0.049
    assert interval.estimate == 0.5
    assert interval.low == pytest.approx(0.5 - half_width, abs=0.01)
    assert interval.high == pytest.approx(0.5 + half_width, abs=0.01)
    assert interval.resamples == 4000
    assert interval.skipped == 0
    assert interval.level == 0.95


def test_bootstrap_covers_the_estimate_and_is_reproducible_for_a_seed() -> None:
    rng = random.Random(5)
    scores = [(rng.uniform(4, 10), rng.uniform(3, 9)) for _ in range(60)]
    first = paired_bootstrap(scores, score_ratio, seed=7)
    again = paired_bootstrap(scores, score_ratio, seed=7)
    other = paired_bootstrap(scores, score_ratio, seed=8)
    assert first is not None
    assert other is not None
    assert first.low <= first.estimate <= first.high
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)


def test_bootstrap_narrows_with_more_questions() -> None:
    widths = []
    for n in (40, 160, 640):
        outcomes, _, _ = better_not_longer(n, seed=11)
        interval = paired_bootstrap(outcomes, adjusted_win_rate, seed=0)
        assert interval is not None
        widths.append(interval.high - interval.low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4, rel=0.35)  # width ~ 1 / sqrt(n)


def test_bootstrap_pairs_what_was_measured_on_one_question() -> None:
    """Score ratio with both scores drawn together: a question's pair is never split."""
    scores = [(8.0, 6.0), (7.0, 7.0), (9.0, 5.0), (6.0, 8.0)] * 10
    interval = paired_bootstrap(scores, score_ratio, seed=0)
    assert interval is not None
    assert interval.estimate == pytest.approx(30 / 26)
    assert interval.low <= interval.estimate <= interval.high


def test_bootstrap_is_none_when_the_statistic_is_undefined_on_the_data() -> None:
    assert paired_bootstrap(many("unparsed", 20), adjusted_win_rate) is None
    assert paired_bootstrap(many("win", 0), adjusted_win_rate) is None


def test_bootstrap_skips_undefined_samples_and_says_so_when_most_are() -> None:
    # defined only on samples that drew every row once: 6 in 27 of them
    def mean_of_distinct(sample: Sequence[float]) -> float | None:
        return statistics.fmean(sample) if len(set(sample)) == len(sample) else None

    with pytest.warns(ExpertPromptingWarning, match="undefined on"):
        interval = paired_bootstrap([1.0, 2.0, 3.0], mean_of_distinct, resamples=1000, seed=0)
    assert interval is not None
    assert interval.skipped + interval.resamples == 1000
    assert interval.skipped > interval.resamples
    assert interval.shaky


def test_bootstrap_enforces_enough_resamples_and_a_sensible_level() -> None:
    with pytest.raises(ConfigurationError, match="at least 1000"):
        paired_bootstrap([1, 2, 3], statistics.fmean, resamples=999)
    with pytest.raises(ConfigurationError, match="level"):
        paired_bootstrap([1, 2, 3], statistics.fmean, level=95)


def test_interval_reads_and_excludes() -> None:
    interval = Interval(estimate=0.62, low=0.514, high=0.73, resamples=2000)
    assert str(interval) == "0.62 [0.51, 0.73]"
    assert interval.excludes(0.5)
    assert not interval.excludes(0.6)
    assert not interval.shaky
    with pytest.raises(ValueError, match="frozen"):
        interval.low = 0.0


def test_figures_to_bootstrap() -> None:
    assert adjusted_win_rate(["win", "win", "tie", "loss", "unparsed"]) == pytest.approx(0.625)
    assert adjusted_win_rate(["unparsed"]) is None
    assert score_ratio([(8.0, 4.0), (None, 3.0), (2.0, 6.0)]) == pytest.approx(1.0)
    assert score_ratio([(0.0, 0.0)]) is None


# -- the sign test -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("wins", "losses", "p"),
    [
        (8, 2, 0.109375),  # 2 * (1 + 10 + 45) / 1024
        (2, 8, 0.109375),
        (10, 0, 0.001953125),  # 2 / 1024
        (6, 1, 0.125),  # 2 * (1 + 7) / 128
        (5, 5, 1.0),
        (1, 0, 1.0),
        (60, 40, 0.056887933640980),  # scipy.stats.binomtest(60, 100).pvalue
    ],
)
def test_sign_test_known_values(wins: int, losses: int, p: float) -> None:
    assert sign_test(wins, losses) == pytest.approx(p, rel=1e-12)


def test_sign_test_is_exact_for_many_pairs_too() -> None:
    n, k = 5100, 2500  # beyond the integer path: summed in log space
    exact = Fraction(2 * sum(math.comb(n, i) for i in range(k + 1)), 2**n)
    assert sign_test(n - k, k) == pytest.approx(float(exact), rel=1e-9)
    tiny = sign_test(60_000, 40_000)  # far past float range: 0.0, no overflow
    assert tiny is not None
    assert tiny < 1e-300


def test_sign_test_without_decided_pairs() -> None:
    assert sign_test(0, 0) is None
    with pytest.raises(ConfigurationError):
        sign_test(-1, 3)


# -- how many questions ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("win_rate", "power", "needed"),
    [(0.6, 0.8, 194), (0.4, 0.8, 194), (0.7, 0.8, 47), (0.55, 0.8, 783), (0.6, 0.9, 259)],
)
def test_questions_needed_table(win_rate: float, power: float, needed: int) -> None:
    assert questions_needed(win_rate, power=power) == needed


def test_questions_needed_gives_the_sign_test_its_power() -> None:
    """With the n it names, the exact sign test at 0.05 finds a 0.6 win rate about 80% of the
    time (the normal approximation is close, not exact)."""
    n, p = questions_needed(0.6), 0.6
    power = sum(
        math.comb(n, x) * p**x * (1 - p) ** (n - x)
        for x in range(n + 1)
        if (sign_test(x, n - x) or 1.0) < 0.05
    )
    assert 0.75 < power < 0.85


def test_questions_needed_rejects_no_difference() -> None:
    with pytest.raises(ConfigurationError, match=r"differ from 0\.5"):
        questions_needed(0.5)


# -- several judges ----------------------------------------------------------------------------
JUDGE_1 = many("win", 5) + many("loss", 3) + many("tie", 2) + ["unparsed", "win"]
JUDGE_2 = many("win", 4) + many("loss", 3) + ["win", "tie", "loss", "win", "unparsed"]


def test_judge_agreement_and_kappa_over_questions_both_read() -> None:
    # both read the first ten: agree on 7; shares W5 L3 T2 and W5 L4 T1
    assert judge_agreement(JUDGE_1, JUDGE_2) == pytest.approx(0.7)
    chance = (5 * 5 + 3 * 4 + 2 * 1) / 100
    assert cohen_kappa(JUDGE_1, JUDGE_2) == pytest.approx((0.7 - chance) / (1 - chance))


def test_agreement_edge_cases() -> None:
    assert judge_agreement(["unparsed"], ["win"]) is None
    assert cohen_kappa(["unparsed"], ["win"]) is None
    assert cohen_kappa(["win"] * 4, ["win"] * 4) is None  # chance agreement is certain
    assert judge_agreement(["win"] * 4, ["win"] * 4) == 1.0
    assert cohen_kappa(["win", "loss"], ["loss", "win"]) == pytest.approx(-1.0)
    with pytest.raises(ConfigurationError, match="same questions"):
        judge_agreement(["win"], ["win", "loss"])
