"""How sure a comparison is: bootstrap intervals, the sign test, length control, agreement.

Pure and standard-library only (no numpy, no scipy): every function takes plain sequences and
returns plain numbers, so the report, ``compare`` and the notebook views share one tested core.
``None`` always means "not defined on these data" (no scored pair, no decided pair...), never 0.

The figures and their exact formulas:

- **Paired bootstrap** (:func:`paired_bootstrap`): the questions are resampled with replacement
  (both systems' answers to a question stay together, hence *paired*), the statistic is
  recomputed on each of ``resamples`` samples (at least 1,000), and the interval is the
  ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of those values (linear interpolation
  between order statistics). The estimate is the statistic on the data themselves.
  ``random.Random(seed)`` draws the samples, so a seed gives the same interval every time.
- **Sign test** (:func:`sign_test`): ties are dropped; with ``n = wins + losses`` and
  ``k = min(wins, losses)`` the exact two-sided p-value is
  ``min(1, 2 * sum(C(n, i) for i in 0..k) / 2**n)``.
- **Length-controlled win rate** (:func:`length_controlled_win_rate`): a logistic model of the
  judged preference for A, ``P(A preferred) = sigmoid(b0 + b1 * x)`` with
  ``x = tanh((len_a - len_b) / sd)``, ``sd`` the standard deviation of ``len_a - len_b`` over the
  questions, fitted by penalised Newton (IRLS) iterations, read at equal length:
  ``sigmoid(b0)``.
- **Questions needed** (:func:`questions_needed`): decided questions for a two-sided sign test
  at ``alpha`` to detect a win rate ``p`` with the given power, by the normal approximation
  ``n = ((z(1 - alpha/2) * 0.5 + z(power) * sqrt(p * (1 - p))) / (p - 0.5)) ** 2``, rounded up.
- **Agreement** (:func:`judge_agreement`, :func:`cohen_kappa`): over the questions both judges
  read, the share with the same outcome ``p_o``, and ``kappa = (p_o - p_e) / (1 - p_e)`` with
  ``p_e = sum over outcomes c of share_1(c) * share_2(c)``.
"""

from __future__ import annotations

import math
import random
import statistics
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .._method.errors import ConfigurationError, ExpertPromptingWarning
from .verdicts import Outcome

__all__ = [
    "MIN_RESAMPLES",
    "Interval",
    "adjusted_win_rate",
    "cohen_kappa",
    "judge_agreement",
    "lc_interval",
    "length_controlled_win_rate",
    "length_summary",
    "paired_bootstrap",
    "questions_needed",
    "score_ratio",
    "sign_test",
]

Row = TypeVar("Row")

MIN_RESAMPLES = 1000
# The L2 penalty of the length model: large enough that separated data (A wins everything)
# still converge, small enough to leave a fit on a few dozen questions as good as unpenalised.
LC_PENALTY = 0.01
_READ: tuple[Outcome, ...] = ("win", "tie", "loss")


class Interval(BaseModel):
    """A figure and its bootstrap interval: ``estimate`` on the data, ``[low, high]`` around it."""

    model_config = ConfigDict(frozen=True)

    estimate: float = Field(description="The statistic on the questions themselves.")
    low: float = Field(description="Lower end of the interval.")
    high: float = Field(description="Upper end of the interval.")
    level: float = Field(default=0.95, description="Coverage the interval aims at.")
    resamples: int = Field(description="Bootstrap samples the interval was read from.")
    skipped: int = Field(
        default=0,
        description="Samples on which the statistic was undefined (e.g. no scored pair drawn); "
        "when they outnumber `resamples` the interval is shaky.",
    )

    def excludes(self, value: float) -> bool:
        """The figure is distinguishable from ``value``: ``value`` lies outside the interval."""
        return value < self.low or value > self.high

    @property
    def shaky(self) -> bool:
        """Most samples were skipped: too few questions for this figure to mean much."""
        return self.skipped > self.resamples

    def __str__(self) -> str:
        return f"{self.estimate:.2f} [{self.low:.2f}, {self.high:.2f}]"


def _percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolating linearly (numpy's default)."""
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def paired_bootstrap(
    rows: Sequence[Row],
    statistic: Callable[[Sequence[Row]], float | None],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval | None:
    """A percentile interval for ``statistic`` by resampling the questions (``rows``).

    Each row is one question with everything measured on it (both outcomes, both lengths...),
    so a sample keeps the pairing. ``statistic`` returns None where it is undefined: on the
    data, the result is None; on a sample, the sample is skipped (and counted in
    ``Interval.skipped``; an :class:`ExpertPromptingWarning` says so when most are).
    """
    if resamples < MIN_RESAMPLES:
        raise ConfigurationError(
            f"resamples={resamples} is too few for a stable interval: use at least {MIN_RESAMPLES}."
        )
    if not 0 < level < 1:
        raise ConfigurationError(f"level={level} must lie between 0 and 1 (e.g. 0.95).")
    if not rows:
        return None
    estimate = statistic(rows)
    if estimate is None:
        return None
    rng = random.Random(seed)
    n = len(rows)
    values: list[float] = []
    for _ in range(resamples):
        value = statistic([rows[i] for i in rng.choices(range(n), k=n)])
        if value is not None:
            values.append(value)
    skipped = resamples - len(values)
    if skipped > len(values):
        warnings.warn(
            f"the statistic was undefined on {skipped} of {resamples} bootstrap samples: "
            "the interval rests on few questions; judge more of them.",
            ExpertPromptingWarning,
            stacklevel=2,
        )
    if not values:
        return None
    values.sort()
    tail = (1 - level) / 2
    return Interval(
        estimate=estimate,
        low=_percentile(values, tail),
        high=_percentile(values, 1 - tail),
        level=level,
        resamples=len(values),
        skipped=skipped,
    )


# -- statistics to bootstrap ---------------------------------------------------------------------
def adjusted_win_rate(outcomes: Sequence[Outcome]) -> float | None:
    """``(wins + ties / 2) / (wins + ties + losses)``; None with no scored pair."""
    count = Counter(outcomes)
    scored = count["win"] + count["tie"] + count["loss"]
    return (count["win"] + count["tie"] / 2) / scored if scored else None


def score_ratio(scores: Sequence[tuple[float | None, float | None]]) -> float | None:
    """``sum(score_a) / sum(score_b)`` over the pairs with both scores; None when B's sum is 0."""
    read = [(a, b) for a, b in scores if a is not None and b is not None]
    total_b = sum(b for _, b in read)
    return sum(a for a, _ in read) / total_b if total_b else None


# -- the sign test -------------------------------------------------------------------------------
_EXACT_UP_TO = 5000  # beyond this many decided pairs, sum in log space (same result, faster)


def sign_test(wins: int, losses: int) -> float | None:
    """Exact two-sided binomial p-value of ``wins`` against ``losses`` (ties left out).

    The chance, if A and B were equally good, of a split at least this uneven:
    ``min(1, 2 * P(X <= min(wins, losses)))`` with ``X ~ Binomial(wins + losses, 1/2)``.
    None when no pair was decided.

    >>> sign_test(8, 2)
    0.109375
    """
    if wins < 0 or losses < 0:
        raise ConfigurationError("wins and losses must be counts (0 or more).")
    n = wins + losses
    if n == 0:
        return None
    k = min(wins, losses)
    if n <= _EXACT_UP_TO:
        # integers all the way: exact, then one correctly rounded division
        tail = sum(math.comb(n, i) for i in range(k + 1))
        return min(1.0, 2 * tail / (1 << n))
    # log C(n, i) - n log 2 summed from the largest term (i = k) down: no overflow, ~1e-12 relative
    log_term = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)
    total = 0.0
    ratio = 1.0
    for i in range(k, -1, -1):
        total += ratio
        ratio *= i / (n - i + 1)  # C(n, i-1) / C(n, i)
        if ratio < 1e-17 * total:
            break
    return min(1.0, 2 * math.exp(log_term + math.log(total)))


def questions_needed(win_rate: float, *, power: float = 0.8, alpha: float = 0.05) -> int:
    """Decided questions a two-sided sign test needs to tell ``win_rate`` from 0.5.

    Normal approximation of the binomial: with ``p = win_rate`` (wins among decided pairs),
    ``n = ((z(1 - alpha/2) * 0.5 + z(power) * sqrt(p * (1 - p))) / (p - 0.5)) ** 2``, rounded
    up, ``z`` the standard normal quantile. Ties are not decided pairs: with a tie share ``t``,
    judge about ``n / (1 - t)`` questions.

    >>> questions_needed(0.6), questions_needed(0.7)
    (194, 47)
    """
    if not 0 <= win_rate <= 1 or win_rate == 0.5:
        raise ConfigurationError(
            f"win_rate={win_rate} must lie between 0 and 1 and differ from 0.5."
        )
    if not 0 < power < 1 or not 0 < alpha < 1:
        raise ConfigurationError("power and alpha must lie between 0 and 1 (e.g. 0.8 and 0.05).")
    normal = statistics.NormalDist()
    spread = normal.inv_cdf(1 - alpha / 2) * 0.5 + normal.inv_cdf(power) * math.sqrt(
        win_rate * (1 - win_rate)
    )
    # round away float noise before ceil: 193.99999999 questions means 194, not 195
    return math.ceil(round((spread / (win_rate - 0.5)) ** 2, 6))


# -- length ------------------------------------------------------------------------------------
def length_summary(lengths: Sequence[float]) -> tuple[float, float] | None:
    """(mean, median) of answer lengths; None with no answer."""
    if not lengths:
        return None
    return statistics.fmean(lengths), float(statistics.median(lengths))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1 / (1 + math.exp(-z))
    e = math.exp(z)
    return e / (1 + e)


def _fit_logistic(xs: Sequence[float], ys: Sequence[float], penalty: float) -> tuple[float, float]:
    """(b0, b1) maximising ``sum(y log p + (1-y) log(1-p)) - penalty/2 (b0^2 + b1^2)``.

    ``p = sigmoid(b0 + b1 x)``, ``y`` in [0, 1] (soft labels). Newton steps on a strictly
    concave objective (the penalty makes it so); a long step is halved until it improves it.
    """

    def objective(b0: float, b1: float) -> float:
        total = -penalty / 2 * (b0 * b0 + b1 * b1)
        for x, y in zip(xs, ys, strict=True):
            z = b0 + b1 * x
            # log sigmoid(z) and log(1 - sigmoid(z)) without overflow
            log_p = -math.log1p(math.exp(-z)) if z > -30 else z
            log_q = -math.log1p(math.exp(z)) if z < 30 else -z
            total += y * log_p + (1 - y) * log_q
        return total

    b0 = b1 = 0.0
    for _ in range(100):
        g0 = -penalty * b0
        g1 = -penalty * b1
        # minus the Hessian: X'WX + penalty * I
        h00, h01, h11 = penalty, 0.0, penalty
        for x, y in zip(xs, ys, strict=True):
            p = _sigmoid(b0 + b1 * x)
            w = p * (1 - p)
            g0 += y - p
            g1 += (y - p) * x
            h00 += w
            h01 += w * x
            h11 += w * x * x
        det = h00 * h11 - h01 * h01
        step0 = (h11 * g0 - h01 * g1) / det
        step1 = (h00 * g1 - h01 * g0) / det
        if g0 * step0 + g1 * step1 < 1e-12:  # the Newton decrement: at the optimum
            break
        scale = 1.0
        if max(abs(step0), abs(step1)) > 1:
            # a long step (far from the optimum, e.g. separated data) must improve the objective;
            # short steps near the optimum are taken as they are (Newton converges there)
            current = objective(b0, b1)
            while scale > 1e-10 and objective(b0 + scale * step0, b1 + scale * step1) < current:
                scale /= 2
        b0 += scale * step0
        b1 += scale * step1
    return b0, b1


def length_controlled_win_rate(
    outcomes: Sequence[Outcome],
    length_a: Sequence[float],
    length_b: Sequence[float],
    *,
    penalty: float = LC_PENALTY,
) -> float | None:
    """A's win rate with the judge's taste for length taken out, as AlpacaEval 2 does.

    The model, over the questions with a read verdict (win, tie or loss; unparsed ones left
    out), for question ``i``:

    - label ``y_i`` = 1 for a win of A, 0 for a loss, 0.5 for a tie (a soft label);
    - length term ``x_i = tanh(d_i / sd)``, ``d_i = length_a[i] - length_b[i]`` and ``sd`` the
      (population) standard deviation of the ``d_i`` (``x_i = 0`` for all when ``sd`` is 0),
      the same standardised, bounded length difference as AlpacaEval 2's GLM;
    - ``P(A preferred) = sigmoid(b0 + b1 * x_i)``, fitted by maximising the soft-label
      log-likelihood minus ``penalty / 2 * (b0**2 + b1**2)`` with Newton (IRLS) steps. The small
      L2 penalty makes data that a line separates (A longer and winning everywhere) converge.

    The result is the model read at equal length, ``sigmoid(b0)``: the win rate A would get if
    its answers were as long as B's. None with no read verdict.
    """
    if not len(outcomes) == len(length_a) == len(length_b):
        raise ConfigurationError(
            "outcomes, length_a and length_b must have one entry per question each."
        )
    kept = [(o, a, b) for o, a, b in zip(outcomes, length_a, length_b, strict=True) if o in _READ]
    if not kept:
        return None
    diffs = [a - b for _, a, b in kept]
    sd = statistics.pstdev(diffs)
    xs = [math.tanh(d / sd) for d in diffs] if sd > 0 else [0.0] * len(diffs)
    ys = [1.0 if o == "win" else 0.0 if o == "loss" else 0.5 for o, _, _ in kept]
    b0, _ = _fit_logistic(xs, ys, penalty)
    return _sigmoid(b0)


def lc_interval(
    outcomes: Sequence[Outcome],
    length_a: Sequence[float],
    length_b: Sequence[float],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval | None:
    """:func:`length_controlled_win_rate` with its paired-bootstrap interval over questions."""
    if not len(outcomes) == len(length_a) == len(length_b):
        raise ConfigurationError(
            "outcomes, length_a and length_b must have one entry per question each."
        )
    rows = list(zip(outcomes, length_a, length_b, strict=True))

    def statistic(sample: Sequence[tuple[Outcome, float, float]]) -> float | None:
        return length_controlled_win_rate(
            [o for o, _, _ in sample], [a for _, a, _ in sample], [b for _, _, b in sample]
        )

    return paired_bootstrap(rows, statistic, resamples=resamples, seed=seed, level=level)


# -- several judges ----------------------------------------------------------------------------
def _both_read(
    outcomes_1: Sequence[Outcome], outcomes_2: Sequence[Outcome]
) -> list[tuple[Outcome, Outcome]]:
    if len(outcomes_1) != len(outcomes_2):
        raise ConfigurationError("the two judges' outcomes must cover the same questions.")
    return [
        (a, b) for a, b in zip(outcomes_1, outcomes_2, strict=True) if a in _READ and b in _READ
    ]


def judge_agreement(outcomes_1: Sequence[Outcome], outcomes_2: Sequence[Outcome]) -> float | None:
    """Share of the questions both judges read (same order) on which their outcomes agree."""
    both = _both_read(outcomes_1, outcomes_2)
    return sum(a == b for a, b in both) / len(both) if both else None


def cohen_kappa(outcomes_1: Sequence[Outcome], outcomes_2: Sequence[Outcome]) -> float | None:
    """Cohen's kappa of two judges' win/tie/loss over the questions both read.

    ``(p_o - p_e) / (1 - p_e)``: agreement beyond what two judges with these outcome shares
    would reach by chance. None with no question read by both, or when chance agreement is
    certain (both judges gave one and the same outcome everywhere: kappa is undefined).
    """
    both = _both_read(outcomes_1, outcomes_2)
    if not both:
        return None
    n = len(both)
    observed = sum(a == b for a, b in both) / n
    first = Counter(a for a, _ in both)
    second = Counter(b for _, b in both)
    chance = sum(first[c] * second[c] for c in _READ) / (n * n)
    if chance >= 1:
        return None
    return (observed - chance) / (1 - chance)
