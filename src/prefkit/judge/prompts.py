"""Prompt templates for LLM judges of pairs.

Generative judge (``prefkit judge train`` / ``evaluate``): one user message presenting the
prompt and responses A and B and asking for a written comparison and a verdict in tags,
``<analysis>...</analysis><preference>A|B|tie</preference>`` (RM-Gallery's pairwise
output), which :mod:`prefkit.judge.parse` reads back. The chat template of the judge's
tokenizer is applied to the message (by TRL in training, by the evaluator in evaluation).
"""

from __future__ import annotations

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
