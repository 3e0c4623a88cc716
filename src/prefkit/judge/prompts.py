"""Prompt templates for LLM judges of pairs.

Generative judge (``prefkit judge train`` / ``evaluate``): one user message presenting the
prompt and responses A and B and asking for a written comparison and a verdict in tags,
``<analysis>...</analysis><preference>A|B|tie</preference>`` (RM-Gallery's pairwise
output), which :mod:`prefkit.judge.parse` reads back. The chat template of the judge's
tokenizer is applied to the message (by TRL in training, by the evaluator in evaluation).

Annotating judge (``prefkit judge annotate``): a pair shown to a causal LM, ending where the
verdict's token comes.

:class:`JudgePrompt` is the template (``annotate.*`` of the run config) made concrete for a
pair table: the kind (``responses``: a prompt and responses A and B; ``texts``: text 1 and
text 2, document comparisons without a prompt), the option texts of the first and the
second shown side and, where offered, of a tie.

:class:`JudgeRenderer` turns pairs into token ids with the pair renderer
(:class:`~prefkit.text.render.PairRenderer`): the template's fixed text around the three
fields, the fields cut head-tail under ``render.max_length`` with the same budget split, so
a long pair is shortened, never dropped, and the swapped order keeps the same tokens with
the sides exchanged. With a chat template the template text is the user message (after an
optional system message and few-shot turns) and the sequence ends with the generation
prompt (plus ``annotate.answer_prefix``); without one it is plain text ending in
``Answer:``. The model's next token after the sequence is the verdict:
:attr:`JudgeRenderer.option_ids` are the first tokens of the option texts as they
continue the sequence (``"A"`` after a chat header's newline, ``" A"`` after ``Answer:``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from prefkit.config import AnnotateConfig, RenderConfig
from prefkit.errors import ConfigError
from prefkit.text.render import PairRenderer, field_text, split_at_sentinels

GENERATIVE_JUDGE_TEMPLATE = """You are an impartial judge comparing two responses to the same prompt.
Decide which response answers the prompt better: more helpful, accurate, complete and clear.
The order in which the responses are shown must not influence you, nor their length alone.

[Prompt]
{prompt}

[Response A]
{response_a}

[Response B]
{response_b}

First compare the two responses briefly inside <analysis></analysis>. Then give your verdict inside
<preference></preference>: {choices}.
Answer exactly in this form: <analysis>...</analysis><preference>{form}</preference>"""


def generative_judge_message(prompt: str, response_a: str, response_b: str, allow_tie: bool = True) -> str:
    """The user message asking a generative judge for ``<analysis>`` and ``<preference>``."""
    choices = "A, B or tie (equally good)" if allow_tie else "A or B"
    form = "A|B|tie" if allow_tie else "A|B"
    return GENERATIVE_JUDGE_TEMPLATE.format(
        prompt=prompt, response_a=response_a, response_b=response_b, choices=choices, form=form
    )


RESPONSES_SYSTEM = "You are an impartial judge of the quality of answers written by AI assistants."
RESPONSES_TEMPLATE = (
    "Compare two responses to the same prompt and decide which one is better: more helpful, correct, "
    "relevant and clear. The order of the responses does not matter.\n\n"
    "[Prompt]\n{prompt}\n\n"
    "[Response {first_label}]\n{response_a}\n\n"
    "[Response {second_label}]\n{response_b}\n\n"
    "Which response is better? Answer with {options} only."
)
TEXTS_SYSTEM = "You are a careful annotator comparing texts."
TEXTS_TEMPLATE = (
    "Read the two texts below and decide which one is better. The order of the texts does not matter.\n\n"
    "Text {first_label}:\n{response_a}\n\n"
    "Text {second_label}:\n{response_b}\n\n"
    "Which text is better? Answer with {options} only."
)
TEMPLATES = {"responses": (RESPONSES_SYSTEM, RESPONSES_TEMPLATE, ("A", "B")), "texts": (TEXTS_SYSTEM, TEXTS_TEMPLATE, ("1", "2"))}
PLAIN_ANSWER_CUE = "\n\nAnswer:"  # ends the plain-text prompt of a tokenizer without a chat template
FIELDS = ("prompt", "response_a", "response_b")
PLACEHOLDERS = (*FIELDS, "first_label", "second_label", "options")
_SENTINELS = tuple(f"@@PREFKIT_JUDGE_{f.upper()}@@" for f in FIELDS)


def _check_template(text: str) -> None:
    """A custom template names both sides, in order, once each, and only known placeholders."""
    import string

    names = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    unknown = sorted(set(names) - set(PLACEHOLDERS))
    if unknown:
        raise ConfigError(f"annotate.template: unknown placeholder {{{unknown[0]}}}; known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    fields = [n for n in names if n in FIELDS]
    if fields.count("response_a") != 1 or fields.count("response_b") != 1 or fields.count("prompt") > 1:
        raise ConfigError("annotate.template needs {response_a} and {response_b} once each ({prompt} at most once)")
    if fields != sorted(fields, key=FIELDS.index):
        raise ConfigError("annotate.template: the fields must come in the order {prompt}, {response_a}, {response_b}")


def pairs_have_ties(pairs: pd.DataFrame) -> bool:
    """Whether a labelled pair table holds ties (an unlabelled one: True, nothing says otherwise)."""
    if "p_tie" not in pairs.columns or pairs["p_tie"].isna().all():
        return True
    return bool((pairs["p_tie"].fillna(0) > 0).any())


def pairs_have_prompts(pairs: pd.DataFrame) -> bool:
    return any(field_text(p).strip() for p in pairs["prompt"])


@dataclass(frozen=True)
class JudgePrompt:
    """The template of one annotation run, resolved for its pairs (see the module notes)."""

    kind: str  # responses, texts or custom
    system: str
    template: str
    labels: tuple[str, str]
    tie_label: str | None  # None: no tie option
    answer_prefix: str = ""
    chat_template: bool = True
    examples: tuple = ()

    @classmethod
    def from_config(cls, cfg: AnnotateConfig, pairs: pd.DataFrame | None = None) -> JudgePrompt:
        """``cfg`` for ``pairs`` (``template: auto`` and ``tie: auto`` look at them)."""
        kind = cfg.template
        if kind == "auto":
            kind = "responses" if pairs is None or pairs_have_prompts(pairs) else "texts"
        if kind in TEMPLATES:
            system, template, labels = TEMPLATES[kind]
        else:
            _check_template(kind)
            system, template, labels, kind = "", kind, ("A", "B"), "custom"
        if cfg.labels is not None:
            labels = (cfg.labels[0].strip(), cfg.labels[1].strip())
        offer_tie = cfg.tie == "on" or (cfg.tie == "auto" and (pairs is None or pairs_have_ties(pairs)))
        tie_label = cfg.tie_label.strip() if offer_tie else None
        if offer_tie and (not tie_label or tie_label in labels):
            raise ConfigError(f"annotate.tie_label {cfg.tie_label!r} must be non-empty and differ from the labels {list(labels)}")
        return cls(
            kind=kind,
            system=system if cfg.system is None else cfg.system,
            template=template,
            labels=labels,
            tie_label=tie_label,
            answer_prefix=cfg.answer_prefix,
            chat_template=cfg.chat_template == "auto",
            examples=tuple(cfg.examples),
        )

    @property
    def options(self) -> tuple[str, ...]:
        """The option texts: first side, second side(, tie)."""
        return (*self.labels, self.tie_label) if self.tie_label else self.labels

    @property
    def uses_prompt(self) -> bool:
        return "{prompt}" in self.template

    def options_text(self) -> str:
        quoted = [f'"{o}"' for o in self.options]
        return " or ".join(quoted) if len(quoted) == 2 else f"{quoted[0]}, {quoted[1]} or {quoted[2]}"

    def user_text(self, prompt: str, first: str, second: str) -> str:
        return self.template.format(
            prompt=prompt, response_a=first, response_b=second,
            first_label=self.labels[0], second_label=self.labels[1], options=self.options_text(),
        )  # fmt: skip

    def example_answer(self, answer: str) -> str:
        return {"first": self.labels[0], "second": self.labels[1]}.get(answer, self.tie_label or "")

    def full_text(self, tokenizer, prompt: str, first: str, second: str) -> str:
        """The whole judge input for one pair, as text (the chat template applied where it is used)."""
        if self.chat_template and getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": self.system}] if self.system else []
            for ex in self.examples:
                messages.append({"role": "user", "content": self.user_text(ex.prompt, ex.response_a, ex.response_b)})
                messages.append({"role": "assistant", "content": self.example_answer(ex.answer)})
            messages.append({"role": "user", "content": self.user_text(prompt, first, second)})
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return text + self.answer_prefix
        parts = [self.system] if self.system else []
        for ex in self.examples:
            parts.append(self.user_text(ex.prompt, ex.response_a, ex.response_b) + PLAIN_ANSWER_CUE + " " + self.example_answer(ex.answer))
        parts.append(self.user_text(prompt, first, second) + PLAIN_ANSWER_CUE + self.answer_prefix)
        return "\n\n".join(parts)


def option_continuation(before: str, option: str) -> str:
    """The option as the text right after ``before``: a word after a space or a line break,
    so ``" A"`` after ``Answer:`` and ``"A"`` after a chat header's newline."""
    return option if not before or before[-1].isspace() else " " + option


class JudgeRenderer(PairRenderer):
    """Judge inputs of pairs as token ids (see the module notes); ``option_ids`` are the
    first-side, second-side (and tie) option tokens."""

    def __init__(self, tokenizer, render_cfg: RenderConfig, prompt: JudgePrompt):
        self.prompt = prompt
        # template=chat routes the fixed pieces through _chat_segments below, whatever the tokenizer
        super().__init__(tokenizer, render_cfg.model_copy(update={"template": "chat"}))
        self.option_ids = self._option_ids()

    def _chat_segments(self) -> tuple[list[int], ...]:
        """The fixed text around the three fields, tokenised piece by piece."""
        if self.prompt.uses_prompt:
            text = self.prompt.full_text(self.tokenizer, *_SENTINELS)
        else:  # no prompt field in the template: an empty one right before the first side
            text = self.prompt.full_text(self.tokenizer, "", _SENTINELS[0] + _SENTINELS[1], _SENTINELS[2])
        pieces = split_at_sentinels(text, _SENTINELS, "annotate (annotate.chat_template=off avoids it)")
        self.final_text = pieces[-1]
        segments = [self._encode(p) for p in pieces]
        if not self.uses_chat_template:  # plain text: the BOS the tokenizer would add by itself
            segments[0] = self._leading_specials() + segments[0]
        return tuple(segments)

    @property
    def uses_chat_template(self) -> bool:
        return self.prompt.chat_template and bool(getattr(self.tokenizer, "chat_template", None))

    def _option_ids(self) -> list[int]:
        """First token of each option where it continues the sequence's last piece."""
        before = self._encode(self.final_text)
        ids = []
        for option in self.prompt.options:
            after = self._encode(self.final_text + option_continuation(self.final_text, option))
            if after[: len(before)] != before or len(after) == len(before):
                raise ConfigError(
                    f"annotate: the option {option!r} merges with the end of the prompt in this tokenizer "
                    "(change annotate.answer_prefix or the labels)"
                )
            ids.append(after[len(before)])
        if len(set(ids)) != len(ids):
            names = [self.tokenizer.convert_ids_to_tokens(i) for i in ids]
            raise ConfigError(f"annotate: the options {list(self.prompt.options)} share a first token ({names}); choose other labels")
        return ids

    def tokenize_fields(self, prompts, responses_a, responses_b):
        if not self.prompt.uses_prompt:
            prompts = [""] * len(prompts)
        return super().tokenize_fields(prompts, responses_a, responses_b)
