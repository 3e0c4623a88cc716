"""A pair (prompt, response A, response B) as one token sequence under a fixed budget.

Works with any Hugging Face tokenizer. The budget is ``render.max_length`` tokens in
all, special tokens and template markers included; it is never exceeded.

Budget split
    The fixed part of the template (special tokens, text markers) is taken off first;
    the rest is the *content budget*. The prompt is first offered ``prompt_share`` of
    it and the responses split the remainder evenly; room a short field does not use
    flows to the others (a short prompt leaves more for the responses, short responses
    leave more for the prompt, a short A leaves more for B). A and B always get the
    same allowance, so rendering the swapped pair gives the same kept tokens with the
    sides exchanged; this can leave one token of the budget unused.

Head-tail truncation
    A field longer than its allowance keeps ``head_fraction`` of the allowance from its
    start and the rest from its end (token level): openings and conclusions of long
    answers both survive. ``render.truncation_marker`` (default " ... ") marks the cut;
    its tokens count towards the field's allowance.

Multi-turn
    Each field is its turns joined, each turn led by a marker ``[turn k]`` when there
    is more than one turn (single-turn pairs, the common case, carry no marker).
    Truncation applies to the field *as a whole*: the head keeps the first turns, the
    tail the last ones, and middle turns go first.

Templates (``render.template``)
    ``plain``, encoder tokenizers (those with CLS and SEP tokens, e.g. BERT, DeBERTa,
    ModernBERT): ``[CLS] prompt [SEP] A [SEP] B [SEP]``.
    ``plain``, decoder tokenizers (no CLS/SEP: Llama, Gemma, Qwen, Mistral):
    ``<bos?><prompt>:\\n P \\n\\n<response_a>:\\n A \\n\\n<response_b>:\\n B <eos>``; the
    BOS only where the tokenizer adds one by itself, and the EOS last because the
    sequence classifier reads the final token.
    ``chat``: the tokenizer's chat template with one user message holding the three
    fields and a question, plus the generation prompt (its last token is read).
    ``render.style`` (``auto``/``encoder``/``decoder``) overrides the CLS/SEP test.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from prefkit.config import RenderConfig
from prefkit.errors import ConfigError

DECODER_MARKERS = ("<prompt>:\n", "\n\n<response_a>:\n", "\n\n<response_b>:\n")
CHAT_QUESTION = "Which response better answers the prompt: A, B, or is it a tie?"
_SENTINELS = ("@@PREFKIT_PROMPT@@", "@@PREFKIT_RESPONSE_A@@", "@@PREFKIT_RESPONSE_B@@")
# Texts far longer than any budget are cut in characters before tokenising (speed only):
# each side keeps this many characters per budget token, far more than a token ever spans.
_CHARS_PER_TOKEN_CAP = 24


def field_text(turns) -> str:
    """The turns of one field as a single text, with ``[turn k]`` markers when k > 1."""
    if turns is None:
        return ""
    if isinstance(turns, str):
        return turns
    turns = ["" if t is None else str(t) for t in turns]
    if len(turns) <= 1:
        return turns[0] if turns else ""
    return "\n\n".join(f"[turn {k}] {t}" for k, t in enumerate(turns, start=1))


def split_at_sentinels(text: str, sentinels, what: str) -> list[str]:
    """The pieces of ``text`` around ``sentinels`` (placeholders put into a chat message,
    each exactly once and in order, else a ConfigError about ``what``)."""
    pieces, rest = [], text
    for sentinel in sentinels:
        if rest.count(sentinel) != 1:
            raise ConfigError(f"{what}: the chat template altered the message text")
        before, rest = rest.split(sentinel)
        pieces.append(before)
    pieces.append(rest)
    return pieces


def head_tail(ids: list[int], keep: int, head_fraction: float, marker: list[int] | None = None) -> list[int]:
    """``keep`` tokens of ``ids``: ``round(keep * head_fraction)`` from the start, the rest
    from the end. ``marker`` (token ids, e.g. of " ... ") goes between head and tail and
    counts towards ``keep``; it is left out when ``keep`` is too small to hold it."""
    if len(ids) <= keep:
        return list(ids)
    if keep <= 0:
        return []
    marker = list(marker or [])
    if len(marker) * 4 > keep:
        marker = []
    room = keep - len(marker)
    head = min(room, int(round(room * head_fraction)))
    tail = room - head
    return list(ids[:head]) + marker + (list(ids[len(ids) - tail :]) if tail else [])


def allocate(lengths: tuple[int, int, int], budget: int, prompt_share: float) -> tuple[int, int, int]:
    """Tokens kept of (prompt, A, B) with lengths ``lengths`` under ``budget`` (see module doc).

    The result never exceeds a field's length nor, in sum, the budget; it uses the whole
    budget (at most one token short, for A/B symmetry) whenever the fields are longer.
    """
    lp, la, lb = (max(0, int(n)) for n in lengths)
    budget = max(0, int(budget))
    prompt_cap = int(budget * prompt_share)
    prompt_cap += (budget - prompt_cap) % 2  # an odd token goes to the prompt, not to one side
    pool = budget - min(lp, prompt_cap)  # what the responses may use
    if la + lb <= pool:
        ka, kb = la, lb
    else:
        half = pool // 2
        if la <= half:
            ka, kb = la, min(lb, pool - la)
        elif lb <= half:
            ka, kb = min(la, pool - lb), lb
        else:
            ka = kb = half
    kp = min(lp, budget - ka - kb)
    return kp, ka, kb


@dataclass
class FieldTokens:
    """Token ids of each field of each pair (before truncation)."""

    prompt: list[list[int]]
    response_a: list[list[int]]
    response_b: list[list[int]]

    def __len__(self) -> int:
        return len(self.prompt)


class PairRenderer:
    """Turns pairs into token id lists for one tokenizer and one :class:`RenderConfig`.

    ``render(prompt, a, b)`` for one pair; ``render_pairs(pairs)`` for a pair table,
    returning the ids of each pair and of its swapped version (A and B exchanged),
    tokenising each text once.
    """

    def __init__(self, tokenizer, cfg: RenderConfig | None = None):
        self.tokenizer = tokenizer
        self.cfg = cfg or RenderConfig()
        style = self.cfg.style
        if style == "auto":
            has_cls_sep = getattr(tokenizer, "cls_token_id", None) is not None and getattr(tokenizer, "sep_token_id", None) is not None
            style = "encoder" if has_cls_sep else "decoder"
        self.style = style
        if self.cfg.template == "chat":
            self.segments = self._chat_segments()
        elif style == "encoder":
            cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
            if cls_id is None or sep_id is None:
                raise ConfigError("render.style=encoder needs a tokenizer with CLS and SEP tokens")
            self.segments = ([cls_id], [sep_id], [sep_id], [sep_id])
        else:
            eos = tokenizer.eos_token_id
            if eos is None:
                raise ConfigError("render.template=plain for a decoder needs a tokenizer with an EOS token")
            markers = [self._encode(m) for m in DECODER_MARKERS]
            self.segments = (self._leading_specials() + markers[0], markers[1], markers[2], [eos])
        self.marker = self._encode(self.cfg.truncation_marker) if self.cfg.truncation_marker else []
        self.fixed_length = sum(len(s) for s in self.segments)
        self.content_budget = self.cfg.max_length - self.fixed_length
        if self.content_budget < 3:
            raise ConfigError(
                f"render.max_length={self.cfg.max_length} leaves no room for text "
                f"(the template alone takes {self.fixed_length} tokens)"
            )

    # -- template pieces ------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def _leading_specials(self) -> list[int]:
        """Special tokens the tokenizer itself puts before a text (e.g. Llama's BOS)."""
        with_special = list(self.tokenizer("x", add_special_tokens=True)["input_ids"])
        bare = self._encode("x")
        if bare and with_special[-len(bare) :] == bare:
            return with_special[: len(with_special) - len(bare)]
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return [bos] if bos is not None and with_special[:1] == [bos] else []

    def _chat_segments(self) -> tuple[list[int], ...]:
        template = getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise ConfigError("render.template=chat: this tokenizer has no chat template (use template=plain)")
        content = (
            f"{DECODER_MARKERS[0]}{_SENTINELS[0]}{DECODER_MARKERS[1]}{_SENTINELS[1]}"
            f"{DECODER_MARKERS[2]}{_SENTINELS[2]}\n\n{CHAT_QUESTION}"
        )
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        pieces = split_at_sentinels(text, _SENTINELS, "render.template=chat")
        # The template text spells special tokens (BOS, turn headers) literally; the
        # tokenizer maps them back to their ids. Nothing else is added.
        return tuple(self._encode(p) for p in pieces)

    # -- tokenising -----------------------------------------------------------------
    def _precut(self, text: str) -> str:
        cap = self.cfg.max_length * _CHARS_PER_TOKEN_CAP
        if len(text) <= 2 * cap:
            return text
        return text[:cap] + "\n" + text[-cap:]

    def tokenize_texts(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        texts = [self._precut(t) for t in texts]
        # verbose=False: fields longer than the model's limit are expected here, they are cut below
        out = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
        return [list(ids) for ids in out]

    def tokenize_fields(self, prompts, responses_a, responses_b) -> FieldTokens:
        n = len(prompts)
        texts = [field_text(t) for t in prompts] + [field_text(t) for t in responses_a] + [field_text(t) for t in responses_b]
        ids = self.tokenize_texts(texts)
        return FieldTokens(ids[:n], ids[n : 2 * n], ids[2 * n :])

    # -- assembling -----------------------------------------------------------------
    def assemble(self, prompt_ids: list[int], a_ids: list[int], b_ids: list[int]) -> list[int]:
        kp, ka, kb = allocate((len(prompt_ids), len(a_ids), len(b_ids)), self.content_budget, self.cfg.prompt_share)
        hf, mk = self.cfg.head_fraction, self.marker
        s0, s1, s2, s3 = self.segments
        out = s0 + head_tail(prompt_ids, kp, hf, mk) + s1 + head_tail(a_ids, ka, hf, mk) + s2 + head_tail(b_ids, kb, hf, mk) + s3
        assert len(out) <= self.cfg.max_length
        return out

    def render(self, prompt, response_a, response_b) -> list[int]:
        """Token ids of one pair; each field a list of turns (or one string)."""
        f = self.tokenize_fields([prompt], [response_a], [response_b])
        return self.assemble(f.prompt[0], f.response_a[0], f.response_b[0])

    def render_pairs(self, pairs: pd.DataFrame, swapped: bool = True) -> tuple[list[list[int]], list[list[int]] | None]:
        """Ids of every pair of a pair table, and of every swapped pair (or None)."""
        f = self.tokenize_fields(list(pairs["prompt"]), list(pairs["response_a"]), list(pairs["response_b"]))
        ids = [self.assemble(p, a, b) for p, a, b in zip(f.prompt, f.response_a, f.response_b)]
        ids_sw = [self.assemble(p, b, a) for p, a, b in zip(f.prompt, f.response_a, f.response_b)] if swapped else None
        return ids, ids_sw

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)
