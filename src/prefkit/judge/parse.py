"""Reading a generative judge's verdict from its free text.

The judge is asked for ``<analysis>...</analysis><preference>A|B|tie</preference>``. Small
models (and large ones, sometimes) answer around that: tags in another case, "Response A"
or "response b" inside the tag, "Tie"/"both"/"equal", text before and after, or no tags at
all. :func:`parse_verdict` reads all of these and says ``unknown`` when the text names no
verdict, or names two different ones where one is expected::

    parse_verdict("<analysis>...</analysis><preference>Response B</preference>")  # "B"
    parse_verdict("... Final verdict: tie")                                        # "tie"
    parse_verdict("I like both.")                                                  # "unknown"

Verdicts are always one of :data:`VERDICTS`; :func:`verdict_index` maps them to the class
index of the pair table (0 = A, 1 = B, 2 = tie; ``unknown`` -> -1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

A, B, TIE, UNKNOWN = "A", "B", "tie", "unknown"
VERDICTS = (A, B, TIE, UNKNOWN)
CLASS_OF = {A: 0, B: 1, TIE: 2, UNKNOWN: -1}
SWAPPED = {A: B, B: A, TIE: TIE, UNKNOWN: UNKNOWN}

_FLAGS = re.IGNORECASE | re.DOTALL
_PREFERENCE_TAG = re.compile(r"<\s*preference\s*>(.*?)<\s*/\s*preference\s*>", _FLAGS)
_OPEN_PREFERENCE = re.compile(r"<\s*preference\s*>(.*)$", _FLAGS)  # cut off before the closing tag
_ANALYSIS_TAG = re.compile(r"<\s*analysis\s*>(.*?)<\s*/\s*analysis\s*>", _FLAGS)

# What a verdict may say, as whole words: "Response A", "assistant b", "option A", "[[B]]",
# a bare capital "A"/"B" (a bare lower-case "a" is an article, except alone in the tag),
# "tie", "both", "equal(ly good)", "neither". Checked on short texts only.
_NAMED_SIDE = re.compile(r"\b(?:response|answer|assistant|option|output|model)\s*\[{0,2}([ab])\]{0,2}(?![a-z0-9])", re.IGNORECASE)
_BARE_SIDE = re.compile(r"(?<![A-Za-z0-9'])\[{0,2}([AB])\]{0,2}(?![A-Za-z0-9'])")
_TIE_WORDS = re.compile(r"\b(?:tie|tied|both|equal|equally|draw|neither|same)\b", re.IGNORECASE)
# A closing verdict line without tags: "Final verdict: B", "Preference: tie", "Winner - Response A",
# "The better response is A", "Answer: [[B]]".
_VERDICT_LINE = re.compile(
    r"(?:verdict|preference|preferred|winner|decision|answer|choice|better(?:\s+response)?(?:\s+is)?|prefer)\s*[:=\-]?\s*(.{1,40})$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedJudgement:
    verdict: str  # one of VERDICTS
    well_formed: bool  # both tags present, closed, in order, with a clean verdict inside
    analysis: str | None = None


def _verdict_of(text: str, lone_letter: bool = False) -> str:
    """The single verdict a short text names, else unknown (none named, or A and B both).
    ``lone_letter``: a text that is just "a" or "b" in any case names that side."""
    if lone_letter and re.fullmatch(r"\s*[ab]\s*", text, re.IGNORECASE):
        return text.strip().upper()
    sides = {m.group(1).upper() for m in _NAMED_SIDE.finditer(text)} | set(_BARE_SIDE.findall(text))
    tie = bool(_TIE_WORDS.search(text))
    if tie and not sides:
        return TIE
    if len(sides) == 1 and not tie:
        return sides.pop()
    return UNKNOWN


def _clean_tag_value(text: str) -> bool:
    """The tag holds nothing but the verdict (the format reward wants exactly this)."""
    return re.fullmatch(r"\s*(?:A|B|tie)\s*", text, re.IGNORECASE) is not None


def parse_judgement(text: str | None) -> ParsedJudgement:
    """Verdict, whether the output followed the format, and the analysis text."""
    text = text or ""
    analysis_match = _ANALYSIS_TAG.search(text)
    analysis = analysis_match.group(1).strip() if analysis_match else None
    tags = _PREFERENCE_TAG.findall(text)
    if tags:
        # the last tag wins: a model that restates its answer means the final one
        value = tags[-1]
        verdict = _verdict_of(value, lone_letter=True) if len(value) <= 80 else UNKNOWN
        in_order = analysis_match is not None and analysis_match.end() <= text.lower().rfind("<preference")
        return ParsedJudgement(verdict, well_formed=in_order and _clean_tag_value(value), analysis=analysis)
    opened = _OPEN_PREFERENCE.search(text)
    if opened and len(opened.group(1)) <= 80:  # the completion ran out of tokens after the verdict
        return ParsedJudgement(_verdict_of(opened.group(1), lone_letter=True), well_formed=False, analysis=analysis)
    return ParsedJudgement(_verdict_from_lines(text), well_formed=False, analysis=analysis)


def _verdict_from_lines(text: str) -> str:
    """No tags: the last line that states a verdict ("Final verdict: B"), or a last line
    that is nothing but one ("Response A", "Tie")."""
    lines = [line.strip(" \t*#>`.\"'") for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines[-5:]):
        said = _VERDICT_LINE.search(line)
        if said:
            verdict = _verdict_of(said.group(1))
            if verdict != UNKNOWN:
                return verdict
    if lines and len(lines[-1]) <= 20:
        return _verdict_of(lines[-1])
    return UNKNOWN


def parse_verdict(text: str | None) -> str:
    """``A``, ``B``, ``tie`` or ``unknown`` (see the module docstring)."""
    return parse_judgement(text).verdict


def verdict_index(verdict: str) -> int:
    """Class index of a verdict: 0 = A, 1 = B, 2 = tie, -1 = unknown."""
    return CLASS_OF[verdict]


def completion_text(completion) -> str:
    """The text of a completion as TRL passes it: a string, or (conversational data) a list
    of messages whose last one is the model's."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        last = completion[-1]
        return str(last.get("content", "")) if isinstance(last, dict) else str(last)
    return ""
