"""Reading a gold-answer reply: the chosen option or the final answer, never a guess.

Pure functions; a reply they cannot read gives ``None``, which the caller counts as unreadable
(never as right, never silently as wrong). Markdown emphasis and code marks (asterisks,
underscores, backticks) are ignored everywhere.

**Multiple choice** (:func:`extract_choice`; options lettered A, B, C... in the given order).
The letter is read from, in any combination:

1. a reply that is only a letter: ``B``, ``(B)``, ``B)``, ``B.``, ``B:`` (any case);
2. a stated answer: ``Answer: B``, ``The answer is B``, ``The correct answer is (B) Paris``,
   ``Final answer: B``, ``The best option is B``, ``I choose B`` (case-insensitive lead; the letter
   upper case, or lower case in brackets such as ``(b)``). A list after the lead (``B or C``,
   ``A and B``) names every letter in it; text after the letter is not read (``(B) Paris`` is
   B). A stated answer that names no option (``The answer is unclear``) makes the reply
   unreadable;
3. a reply that starts with a letter marker (``B) Paris is...``, ``(B) ...``, ``B. ...``) when no
   other line starts with a different option's marker (a reply walking through the options is
   not an answer);
4. an option's text as the stated answer: the text after a lead of rule 2 (to the end of its
   sentence), or the whole reply when no rule 2 or 3 applies, compared after lower-casing and
   dropping punctuation and extra spaces. The stated text names an option when it is that
   option's text or holds it as whole words (``The answer is Paris,
   the capital``); an option whose text lies inside another named option's text (``Paris`` in
   ``Paris, Texas``) does not count separately.

The reply's answer is the one letter all these readings give. No reading, or readings naming
different letters (``Answer: A ... the answer is C``, ``B or C``), give None.

**Short exact answers** (:func:`extract_exact`): the final answer is read from, in this order
(the first rule that finds something decides; when it finds several answers, they must agree
on right or wrong, else the reply is unreadable: ``The answer is 40. Wait... the answer is 42``
gives None for 42):

1. ``\\boxed{...}``;
2. a ``#### 42`` line (GSM8K's form);
3. a stated answer: ``The answer is ...``, ``Answer: ...``, ``Final answer: ...``, up to the
   end of its line or sentence;
4. a bold span (``**42**``) on the reply's last line;
5. the whole reply when it is one short line (at most four words, a leading "it is" or "it's"
   dropped).

It is compared with the gold answer: as numbers when the gold answer is one (``3`` equals
``3.0``; thousands separators, a currency sign, a trailing ``%`` and simple fractions ``1/2``
are read; the stated answer must hold exactly one number, or end in ``= number``), otherwise as
text normalised as SQuAD does (lower case, punctuation and the articles a/an/the dropped, spaces
collapsed), where the stated answer up to its first clause break (``,``, ``;``, ``(``,
``because``, ``since``, ``which``, ``as``) also counts (``The answer is Paris, the capital``).
True or False when a final answer was read, None when not.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from fractions import Fraction

__all__ = ["extract_choice", "extract_exact", "normalise_text"]


def _plain(text: str) -> str:
    """Without Markdown emphasis and code marks, which models wrap around anything."""
    return re.sub(r"[*_`]", "", text)


def normalise_text(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(" " if ch in string.punctuation else ch for ch in text)
    text = re.sub(r"\b(?:a|an|the)\b", " ", text)
    return " ".join(text.split())


def _loose(text: str) -> str:
    """Lower case, punctuation dropped, spaces collapsed (articles kept: option texts)."""
    text = "".join(" " if ch in string.punctuation else ch for ch in text.lower())
    return " ".join(text.split())


# -- multiple choice ---------------------------------------------------------------------------
# The words that say "what follows is my answer"; the answer itself comes after them.
_LEAD = re.compile(
    r"(?:\b(?:final|correct|right|best)\s+(?:answer|option|choice)"
    r"(?:\s+(?:is|would\s+be|should\s+be|will\s+be))?"
    r"|\banswer\s*(?:is|would\s+be|should\s+be|will\s+be|[:=])"
    r"|\bI\s+(?:would\s+|'d\s+|will\s+)?(?:choose|pick|select|go\s+with))"
    r"\s*(?:[:\-](?!\d))?\s*(?:(?:option|choice|letter)\s+)?",
    re.IGNORECASE,
)
_ONE_LETTER = r"(?:\(([A-Za-z])\)|([A-Z])\)?|([a-z])\))(?![\w'])"
_LETTERS = re.compile(rf"{_ONE_LETTER}(?:\s*(?:,|/|&|\bor\b|\band\b)\s*{_ONE_LETTER})*")
_LETTER_IN = re.compile(_ONE_LETTER)
_LONE = re.compile(r"^\s*\(?([A-Za-z])\)?\s*[.):]?\s*$")
_MARKER = re.compile(r"^\s*(?:\(([A-Z])\)|([A-Z])[.):])(?:\s|$)", re.MULTILINE)


def _rest_of_line(text: str, start: int) -> str:
    end = text.find("\n", start)
    return text[start : end if end >= 0 else len(text)]


def _named_options(stated: str, options: Sequence[str]) -> set[int]:
    """Indexes of the options whose text the stated answer is or holds as whole words."""
    said = f" {_loose(stated)} "
    found = {
        i for i, option in enumerate(options) if _loose(option) and f" {_loose(option)} " in said
    }
    # "Paris, Texas" named: "Paris" inside it is not a second option
    return {
        i
        for i in found
        if not any(
            j != i
            and f" {_loose(options[i])} " in f" {_loose(options[j])} "
            and _loose(options[i]) != _loose(options[j])
            for j in found
        )
    }


def extract_choice(reply: str | None, choices: Sequence[str]) -> str | None:
    """The letter (``"A"``, ``"B"``...) a reply chooses among ``choices``; None if unreadable.

    The rules are in this module's docstring.

    >>> extract_choice("The answer is (B) Paris.", ["London", "Paris", "Rome"])
    'B'
    >>> extract_choice("B or C, hard to say.", ["London", "Paris", "Rome"]) is None
    True
    """
    if not reply or not reply.strip() or not choices:
        return None
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(choices)]
    text = _plain(reply).strip()
    named: set[str] = set()

    lone = _LONE.match(text)
    if lone:
        letter = lone[1].upper()
        return letter if letter in letters else None

    stated_any = False
    for lead in _LEAD.finditer(text):
        stated_any = True
        listed = _LETTERS.match(text, lead.end())
        if listed:
            for one in _LETTER_IN.finditer(listed[0]):
                named.add(next(g for g in one.groups() if g).upper())
            continue
        stated = re.split(r"[.!?](?=\s|$)", _rest_of_line(text, lead.end()))[0]
        options = _named_options(stated, choices)
        # an answer stated that names no option makes the reply unreadable
        named.update({letters[i] for i in options} if options else {"?"})

    markers = {m[1] or m[2] for m in _MARKER.finditer(text)}
    start = _MARKER.match(text)
    if start and len(markers) == 1:
        named.add(start[1] or start[2])

    if not stated_any and not start:
        whole = {i for i, option in enumerate(choices) if _loose(option) == _loose(text)}
        named.update(letters[i] for i in whole)

    if len(named) != 1:
        return None
    letter = named.pop()
    return letter if letter in letters else None


# -- short exact answers -----------------------------------------------------------------------
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_HASHES = re.compile(r"^\s*####\s*(.+?)\s*$", re.MULTILINE)
_STATED = re.compile(
    r"(?:\bfinal\s+answer|\b(?:correct\s+)?answer)\s*(?:is|would\s+be|should\s+be|[:=])\s*(?:[:\-](?!\d))?\s*",
    re.IGNORECASE,
)
_BOLD = re.compile(r"\*\*([^*\n]+)\*\*")
_NUMBER = re.compile(
    r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?(?![\w])"
    r"|(?<![\w.])[-+\u2212]?\.\d+(?![\w])"
)
_CLAUSE = re.compile(r"\s*(?:[,;(]|\s\b(?:because|since|which|as)\b)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|[!?\n]")


def _number(text: str) -> Fraction | None:
    """The value of one number as written ("1,000", "-3.5", "1/2", "$42", "15%")."""
    cleaned = text.strip().replace("\u2212", "-").replace(",", "").replace(" ", "")
    cleaned = cleaned.lstrip("$€£").rstrip("%")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def _stated_number(stated: str) -> Fraction | None:
    found = _NUMBER.findall(stated.replace("$", " ").replace("€", " ").replace("£", " "))
    if len(found) == 1:
        return _number(found[0])
    tail = re.search(r"=\s*[$€£]?\s*(" + _NUMBER.pattern + r")\s*%?\s*\W*$", stated)
    return _number(tail[1]) if tail else None


def _final_answers(text: str) -> list[str]:
    """The final answers a reply states, by the first rule that finds any (module docstring)."""
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed
    hashes = _HASHES.findall(text)
    if hashes:
        return hashes
    plain = _plain(text)
    stated = []
    for lead in _STATED.finditer(plain):
        rest = plain[lead.end() :]
        end = _SENTENCE_END.search(rest)
        answer = rest[: end.start() if end else len(rest)].strip()
        if answer:
            stated.append(answer)
    if stated:
        return stated
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return []
    bold = _BOLD.findall(lines[-1])
    if bold:
        return bold[-1:]
    if len(lines) == 1:
        bare = re.sub(r"^\s*(?:it\s+is|it's)\s+", "", plain.strip(), flags=re.IGNORECASE)
        if len(bare.split()) <= 4:
            return [bare]
    return []


def _matches(stated: str, answer: str) -> bool | None:
    gold = _number(answer)
    if gold is not None:
        value = _stated_number(stated)
        return None if value is None else value == gold
    gold_text = normalise_text(answer)
    first_clause = _CLAUSE.split(stated, maxsplit=1)[0]
    return gold_text in {normalise_text(stated), normalise_text(first_clause)}


def extract_exact(reply: str | None, answer: str) -> bool | None:
    """Whether a reply's final answer is ``answer``; None when no final answer can be read.

    The rules are in this module's docstring.

    >>> extract_exact("6 * 7 = 42, so the answer is 42.", "42")
    True
    >>> extract_exact("The answer is **1,000**", "1000.0")
    True
    >>> extract_exact("I am not sure.", "42") is None
    True
    """
    if not reply or not reply.strip():
        return None
    verdicts = {_matches(stated, answer) for stated in _final_answers(reply)}
    if len(verdicts) != 1 or None in verdicts:
        return None
    return verdicts.pop()
