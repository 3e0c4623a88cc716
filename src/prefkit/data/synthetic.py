"""Synthetic arena data with a known ground truth, in the Kaggle layout.

Every response has a latent quality (its model's skill plus noise). The response text is
generated so that observable features carry part of that quality: better responses tend
to be longer and more structured (markdown lists, headers, code blocks, bold), with noise
and a per-model verbosity that is unrelated to quality, so a feature model can learn
something but not everything.

Outcomes follow Bradley-Terry-Davidson with a length bias and a position bias::

    s_A = quality_A + length_bias * log(words_A / words_B) + position_bias
    s_B = quality_B
    P(A) = e^{s_A} / (e^{s_A} + e^{s_B} + nu * sqrt(e^{s_A} e^{s_B}))
    P(tie) = nu * sqrt(e^{s_A} e^{s_B}) / (same denominator)

The true probabilities are kept, so the Bayes-optimal test log loss (expected: the mean
entropy of the true probabilities; realised: their log loss on the sampled labels) can be
compared with what a model reaches. Train and test are split by prompt.

``generate_arena_frames`` returns the tables; ``write_synthetic_arena`` writes
``train.csv``, ``test.csv``, ``sample_submission.csv``, ``solution.csv``, ``truth.csv``
(true probabilities per row) and ``truth.json`` (the summary).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from prefkit.metrics import log_loss, prior_log_loss
from prefkit.schema import normalise_text

TRAIN_COLUMNS = ("id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie")
TEST_COLUMNS = ("id", "prompt", "response_a", "response_b")
TARGET_COLUMNS = ("winner_model_a", "winner_model_b", "winner_tie")

# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------

_NOUNS = (
    "water cycle, photosynthesis, inflation, the stock market, black holes, climate change, "
    "machine learning, the immune system, volcanoes, the printing press, democracy, gravity, "
    "coffee, sleep, memory, electric cars, solar panels, the internet, bees, the moon, "
    "chess, jazz, bread, tea, rainforests, glaciers, vaccines, bicycles, compound interest, "
    "recycling, meditation, the roman empire, ancient egypt, quantum computing, encryption, "
    "databases, sourdough, marathons, gardening, public speaking, time management, "
    "negotiation, the french revolution, earthquakes, coral reefs, dinosaurs, trains, "
    "cloud computing, the human heart, antibiotics, wind turbines, origami, podcasts, "
    "remote work, budgeting, birdwatching, the olympics, renaissance art, plate tectonics"
).split(", ")
_TASKS = (
    "reverses a string, sorts a list of numbers, counts the words in a file, removes duplicates "
    "from a list, checks whether a number is prime, merges two dictionaries, finds the largest "
    "element in an array, parses a date string, computes a moving average, validates an email "
    "address, flattens a nested list, reads a csv file, computes the factorial of n, "
    "converts celsius to fahrenheit, finds the longest common prefix"
).split(", ")
_LANGS = ("Python", "JavaScript", "Rust", "Go", "SQL", "Java", "C++", "bash")
_GENRES = ("poem", "short story", "haiku", "limerick", "letter", "song", "speech", "dialogue")
_AUDIENCES = ("a beginner", "a ten-year-old", "a busy manager", "a student", "an expert", "my grandmother")
_FILLER = (
    "the a an and or but so because while when which that this these those it its they their "
    "is are was were be been can could should would will may might often usually also however "
    "therefore first second then finally important key main simple common different several "
    "many most some each other more less very quite rather about around through between "
    "during after before over under within without example case idea point part step way "
    "process system result reason effect method approach factor detail feature benefit risk "
    "problem solution question answer people time year work world life place number group "
    "use make take give find show help keep start turn change move build create improve "
    "reduce increase explain consider remember understand describe compare choose provide "
    "good better best clear useful practical small large long short high low new old early "
    "late local global natural human social personal technical basic general specific"
).split()
_CONTENT = (
    "energy light heat water air soil plants cells data model signal network market price "
    "cost value growth demand supply policy rule law history culture language music art "
    "design structure pattern balance pressure temperature speed distance force surface "
    "layer level range source target input output memory storage code function variable "
    "loop list table record file server user client request response error test version"
).split()
_FOLLOW_UPS = (
    "Can you make it shorter?",
    "Now give me a concrete example.",
    "Explain that again for {aud}.",
    "What about {noun}?",
    "Can you rewrite it in a more formal tone?",
    "Thanks. Can you add a summary at the end?",
    "Is there anything I should avoid?",
    "How does that compare with {noun}?",
)
_FILLER_ARR = np.asarray(_FILLER, dtype=object)
_CONTENT_ARR = np.asarray(_CONTENT, dtype=object)
_MODEL_STEMS = (
    "aurora", "basalt", "cedar", "delta", "ember", "fjord", "granite", "harbor", "iris", "juniper",
    "kestrel", "lumen", "meridian", "nimbus", "onyx", "pioneer", "quartz", "raven", "sierra",
    "tundra", "umber", "vesper", "willow", "zephyr",
)
_SIZES = ("1b", "3b", "7b", "8b", "13b", "34b", "70b")
_CODE_VERBS = ("load", "parse", "compute", "update", "check", "merge", "split", "count", "build", "clean")

# Words per response before quality, verbosity and noise, by prompt kind.
_BASE_WORDS = {"explain": 140.0, "list": 110.0, "code": 120.0, "short": 45.0, "creative": 150.0}
_KIND_SHARES = {"explain": 0.3, "list": 0.2, "code": 0.2, "short": 0.15, "creative": 0.15}


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------------------------------
# Parameters and results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticParams:
    """Everything that shapes a synthetic arena (all defaults give a CPU-demo-sized set)."""

    n_train: int = 4000
    n_test: int = 1000
    n_prompts: int | None = None  # None: one prompt per ~4 pairs
    seed: int = 0
    n_models: int = 16
    skill_sd: float = 1.0  # spread of model skill
    quality_noise: float = 0.8  # response quality = skill + N(0, quality_noise)
    nu: float = 0.9  # Davidson tie parameter (0: no ties)
    length_bias: float = 0.35  # judge's preference per unit log(words_A / words_B)
    position_bias: float = 0.1  # added to side A's strength
    length_quality: float = 0.3  # log-words per unit of quality
    length_noise: float = 0.45  # log-words noise
    verbosity_sd: float = 0.3  # per-model log-words offset, unrelated to quality
    structure_quality: float = 0.9  # logit of list/header/bold/code use per unit quality
    multi_turn_rate: float = 0.15

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.n_test < 0:
            raise ValueError("n_train must be >= 1 and n_test >= 0")
        if self.n_models < 2:
            raise ValueError("n_models must be >= 2")
        if self.nu < 0:
            raise ValueError("nu must be >= 0")
        if self.n_prompts is not None and self.n_prompts < (2 if self.n_test else 1):
            raise ValueError("n_prompts too small for a train/test split by prompt")

    @property
    def prompts(self) -> int:
        if self.n_prompts is not None:
            return self.n_prompts
        return max(2, (self.n_train + self.n_test) // 4)


@dataclass
class SyntheticInfo:
    """The ground-truth summary of a synthetic arena (also written as ``truth.json``)."""

    n_train: int
    n_test: int
    n_prompts_train: int
    n_prompts_test: int
    seed: int
    params: dict
    model_skill: dict[str, float]
    tie_rate_train: float
    tie_rate_test: float
    expected_tie_rate: float  # mean true P(tie) over all rows
    bayes_log_loss: float  # expected log loss of the true probabilities on test (mean entropy)
    bayes_log_loss_realised: float  # log loss of the true probabilities on the sampled test labels
    bayes_log_loss_train: float  # realised, on train
    prior_log_loss: float  # train class prior, scored on test
    uniform_log_loss: float = math.log(3.0)
    out_dir: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SyntheticArena:
    """Kaggle-layout tables (JSON-encoded turn lists, as the CSVs hold them) plus the truth."""

    train: pd.DataFrame
    test: pd.DataFrame
    sample_submission: pd.DataFrame
    solution: pd.DataFrame
    truth: pd.DataFrame  # id, split, p_a, p_b, p_tie (true), label, quality_*, words_*
    info: SyntheticInfo


# ---------------------------------------------------------------------------------------
# Text generation
# ---------------------------------------------------------------------------------------


class _TextGen:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._buf: list[str] = []
        self._pos = 0
        self._topic: list[str] = []

    def start(self, n_words: int, topic: list[str]) -> None:
        """Draw a response's words in one go; sentences then take from this buffer."""
        self._topic = topic
        self._buf = self.words(n_words + 48, topic)
        self._pos = 0

    def take(self, n: int) -> list[str]:
        if self._pos + n > len(self._buf):
            self._buf = self._buf[self._pos :] + self.words(max(n, 128), self._topic)
            self._pos = 0
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        return out

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def prompt(self, kind: str) -> str:
        p = self.pick
        a, b = p(_NOUNS), p(_NOUNS)
        if kind == "explain":
            tmpl = p(
                (
                    "Explain how {a} affects {b}.",
                    "Why is {a} important for {b}?",
                    "What is the connection between {a} and {b}? Explain it to {aud}.",
                    "Describe how {a} works, for {aud}.",
                )
            )
        elif kind == "list":
            tmpl = p(
                (
                    "Give me {n} tips for getting started with {a}.",
                    "List {n} common mistakes people make with {a}.",
                    "What are {n} facts about {a} that most people don't know?",
                    "Suggest {n} ways to combine {a} and {b} in a school project.",
                )
            )
        elif kind == "code":
            tmpl = p(
                (
                    "Write a {lang} function that {task}.",
                    "How do I write code in {lang} that {task}?",
                    "Show me {lang} code that {task}, with a short explanation.",
                )
            )
        elif kind == "short":
            tmpl = p(("What is {a}?", "Is {a} related to {b}?", "In one sentence, what is {a}?", "Define {a} briefly."))
        else:
            tmpl = p(("Write a {genre} about {a} and {b}.", "Write a {genre} about {a} for {aud}.", "Compose a {genre} inspired by {a}."))
        return tmpl.format(
            a=a, b=b, aud=p(_AUDIENCES), n=int(self.rng.integers(3, 11)), lang=p(_LANGS), task=p(_TASKS), genre=p(_GENRES)
        )

    def follow_up(self) -> str:
        return self.pick(_FOLLOW_UPS).format(aud=self.pick(_AUDIENCES), noun=self.pick(_NOUNS))

    def words(self, n: int, topic: list[str]) -> list[str]:
        """``n`` words: ~12% from the prompt's topic, ~23% content words, the rest filler."""
        u = self.rng.random(n)
        r = self.rng.random(n)
        out = _FILLER_ARR[(r * len(_FILLER_ARR)).astype(np.int64)]
        content = u < 0.35
        out[content] = _CONTENT_ARR[(r[content] * len(_CONTENT_ARR)).astype(np.int64)]
        if topic:
            on_topic = u < 0.12
            out[on_topic] = np.asarray(topic, dtype=object)[(r[on_topic] * len(topic)).astype(np.int64)]
        return out.tolist()

    @staticmethod
    def _as_sentence(words: list[str]) -> str:
        text = " ".join(words)
        return text[0].upper() + text[1:] + "."

    def sentence(self, n_words: int, topic: list[str]) -> str:
        return self._as_sentence(self.take(max(3, n_words)))

    def paragraph(self, n_words: int, topic: list[str], bold: bool) -> str:
        n_words = max(3, n_words)
        pool = self.take(n_words)
        lengths = self.rng.integers(7, 19, size=n_words // 7 + 1)
        sentences = []
        start = 0
        for k in lengths:
            if start >= n_words:
                break
            chunk = pool[start : start + int(k)]
            start += int(k)
            if len(chunk) < 3 and sentences:  # too short for a sentence: extend the last one
                sentences[-1] = sentences[-1][:-1] + " " + " ".join(chunk) + "."
            else:
                sentences.append(self._as_sentence(chunk))
        if bold and sentences:
            i = int(self.rng.integers(len(sentences)))
            w = sentences[i].split(" ")
            j = int(self.rng.integers(len(w)))
            w[j] = f"**{w[j].rstrip('.')}**" + ("." if w[j].endswith(".") else "")
            sentences[i] = " ".join(w)
        return " ".join(sentences)

    def list_block(self, n_items: int, topic: list[str], numbered: bool, bold: bool) -> str:
        lines = []
        for i in range(n_items):
            item = self.sentence(int(self.rng.integers(4, 13)), topic)
            if bold:
                head, _, rest = item.partition(" ")
                item = f"**{head}** {rest}"
            lines.append(f"{i + 1}. {item}" if numbered else f"- {item}")
        return "\n".join(lines)

    def code_block(self, n_lines: int, lang: str) -> str:
        fence = lang.lower().replace("c++", "cpp") if lang else ""
        lines = []
        name = f"{self.pick(_CODE_VERBS)}_{self.pick(_CONTENT)}"
        lines.append(f"def {name}(items):")
        for _ in range(max(1, n_lines - 2)):
            var = self.pick(_CONTENT)
            op = self.pick(("=", "+=", "-="))
            lines.append(f"    {var} {op} {self.pick(_CODE_VERBS)}({self.pick(_CONTENT)}, items)")
        lines.append(f"    return {self.pick(_CONTENT)}")
        return f"```{fence}\n" + "\n".join(lines) + "\n```"

    def response(self, n_words: int, topic: list[str], kind: str, lang: str, flags: dict[str, bool]) -> str:
        """A markdown-ish answer of about ``n_words`` words with the requested structure."""
        rng = self.rng
        blocks: list[str] = []
        used = 0
        self.start(n_words, topic)
        intro = self.sentence(int(rng.integers(6, 16)), topic)
        blocks.append(intro)
        used += len(intro.split())
        if flags["code"] and used < n_words:
            n_lines = min(30, max(3, n_words // 12))
            code = self.code_block(n_lines, lang)
            blocks.append(code)
            used += len(code.split())
        if flags["list"] and used < n_words:
            n_items = min(12, max(2, (n_words - used) // 14))
            block = self.list_block(n_items, topic, numbered=bool(rng.random() < 0.6), bold=flags["bold"])
            blocks.append(block)
            used += len(block.split())
        body = n_words - used
        n_paras = min(8, body // 60 + 1) if body > 0 else 0
        for i in range(n_paras):
            blocks.append(self.paragraph(max(3, body // n_paras), topic, bold=flags["bold"] and i == 0))
        if flags["headers"] and len(blocks) >= 2:
            titled = [blocks[0]]
            for i, block in enumerate(blocks[1:]):
                if i % 2 == 0:
                    titled.append(f"## {self.pick(_CONTENT).title()} {self.pick(_CONTENT)}")
                titled.append(block)
            blocks = titled
        return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------
# Truth
# ---------------------------------------------------------------------------------------


def btd_probabilities(strength_a: np.ndarray, strength_b: np.ndarray, nu: float) -> np.ndarray:
    """Bradley-Terry-Davidson (P(A), P(B), P(tie)) for arrays of strengths (stable form)."""
    d = np.asarray(strength_a, dtype=float) - np.asarray(strength_b, dtype=float)
    # divide numerator and denominator by sqrt(e^{sA} e^{sB}) = e^{(sA+sB)/2}
    ea, eb = np.exp(np.clip(d / 2, -350, 350)), np.exp(np.clip(-d / 2, -350, 350))
    denom = ea + eb + nu
    return np.stack([ea / denom, eb / denom, nu / denom], axis=1)


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-15, 1.0)
    return -(p * np.log(p)).sum(axis=1)


# ---------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------


def _model_names(n: int, rng: np.random.Generator) -> list[str]:
    names = []
    for i in range(n):
        stem = _MODEL_STEMS[i % len(_MODEL_STEMS)]
        suffix = f"-v{i // len(_MODEL_STEMS) + 1}" if i >= len(_MODEL_STEMS) else ""
        names.append(f"{stem}{suffix}-{_SIZES[int(rng.integers(len(_SIZES)))]}")
    return names


def _topic_words(prompt: str) -> list[str]:
    return [w.strip("?.,!").lower() for w in prompt.split() if len(w.strip("?.,!")) > 3]


def generate_arena_frames(
    n_train: int = 4000,
    n_test: int = 1000,
    n_prompts: int | None = None,
    seed: int = 0,
    **params,
) -> SyntheticArena:
    """Generate a synthetic arena in memory (see the module docstring).

    Extra keyword arguments are fields of :class:`SyntheticParams` (``nu``,
    ``length_bias``, ``position_bias``, ...). Deterministic under ``seed``.
    """
    P = SyntheticParams(n_train=n_train, n_test=n_test, n_prompts=n_prompts, seed=seed, **params)
    rng = np.random.default_rng(seed)
    text = _TextGen(rng)
    n_prompts_total = P.prompts
    n_pairs = P.n_train + P.n_test

    # Models: skill and a verbosity unrelated to skill.
    models = _model_names(P.n_models, rng)
    skill = rng.normal(0.0, P.skill_sd, P.n_models)
    verbosity = rng.normal(0.0, P.verbosity_sd, P.n_models)

    # Prompts: unique after normalisation, so groups never leak between train and test.
    kinds = list(_KIND_SHARES)
    kind_p = np.array([_KIND_SHARES[k] for k in kinds])
    prompts: list[dict] = []
    seen: set[str] = set()
    tries = 0
    while len(prompts) < n_prompts_total:
        tries += 1
        kind = kinds[int(rng.choice(len(kinds), p=kind_p))]
        first = text.prompt(kind)
        turns = [first]
        if rng.random() < P.multi_turn_rate:
            for _ in range(int(rng.integers(1, 3))):
                turns.append(text.follow_up())
        key = "\x1e".join(normalise_text(t) for t in turns)
        if key in seen:
            if tries > 50 * n_prompts_total:
                raise ValueError(f"cannot make {n_prompts_total} distinct prompts; ask for fewer")
            continue
        seen.add(key)
        lang = next((lg for lg in _LANGS if f" {lg} " in f" {first} "), "Python")
        prompts.append(
            {"turns": turns, "kind": kind, "lang": lang, "topic": _topic_words(first), "base": rng.lognormal(0.0, 0.3)}
        )

    # Split prompts in proportion to the pair counts; every prompt used at least once when possible.
    n_test_prompts = 0 if P.n_test == 0 else int(np.clip(round(n_prompts_total * P.n_test / n_pairs), 1, n_prompts_total - 1))
    order = rng.permutation(n_prompts_total)
    test_prompts, train_prompts = order[:n_test_prompts], order[n_test_prompts:]

    def assign(pool: np.ndarray, n: int) -> np.ndarray:
        if n == 0:
            return np.zeros(0, dtype=int)
        first = rng.permutation(pool)[: min(n, len(pool))]
        rest = rng.choice(pool, size=n - len(first)) if n > len(first) else np.zeros(0, dtype=int)
        return rng.permutation(np.concatenate([first, rest]).astype(int))

    pair_prompt = np.concatenate([assign(train_prompts, P.n_train), assign(test_prompts, P.n_test)])
    split = np.array(["train"] * P.n_train + ["test"] * P.n_test)
    ma = rng.integers(0, P.n_models, n_pairs)
    mb = (ma + rng.integers(1, P.n_models, n_pairs)) % P.n_models  # never the same model

    # One response per (prompt, model), shared by every battle that uses it.
    cache: dict[tuple[int, int], tuple[list[str], float, int]] = {}

    def response(pi: int, mi: int) -> tuple[list[str], float, int]:
        key = (pi, mi)
        if key in cache:
            return cache[key]
        pr = prompts[pi]
        q = float(skill[mi] + rng.normal(0.0, P.quality_noise))
        log_words = (
            math.log(_BASE_WORDS[pr["kind"]] * pr["base"]) + verbosity[mi] + P.length_quality * q + rng.normal(0.0, P.length_noise)
        )
        total = min(1500, max(3, round(math.exp(log_words))))
        n_turns = len(pr["turns"])
        shares = rng.dirichlet(np.full(n_turns, 2.0)) if n_turns > 1 else np.ones(1)
        sq = P.structure_quality * q
        is_code = pr["kind"] == "code"
        flags = {
            "list": rng.random() < _sigmoid((0.8 if pr["kind"] == "list" else -0.6) + sq),
            "headers": rng.random() < _sigmoid(-1.6 + sq + (0.8 if total > 200 else 0.0)),
            "bold": rng.random() < _sigmoid(-1.0 + sq),
            "code": rng.random() < _sigmoid((1.0 if is_code else -4.0) + sq),
        }
        turns = []
        for t in range(n_turns):
            turn_flags = flags if t == 0 else {k: v and rng.random() < 0.5 for k, v in flags.items()}
            turns.append(text.response(max(3, int(total * shares[t])), pr["topic"], pr["kind"], pr["lang"], turn_flags))
        words = sum(len(t.split()) for t in turns)
        cache[key] = (turns, q, words)
        return cache[key]

    rows_a = [response(int(p), int(m)) for p, m in zip(pair_prompt, ma)]
    rows_b = [response(int(p), int(m)) for p, m in zip(pair_prompt, mb)]
    qa = np.array([r[1] for r in rows_a])
    qb = np.array([r[1] for r in rows_b])
    wa = np.array([r[2] for r in rows_a], dtype=float)
    wb = np.array([r[2] for r in rows_b], dtype=float)
    s_a = qa + P.length_bias * np.log(wa / wb) + P.position_bias
    probs = btd_probabilities(s_a, qb, P.nu)
    u = rng.random(n_pairs)
    labels = (u > probs[:, 0]).astype(int) + (u > probs[:, 0] + probs[:, 1]).astype(int)

    ids = rng.choice(9 * 10**8, size=n_pairs, replace=False) + 10**8

    def enc(turns: list[str]) -> str:
        return json.dumps(turns, ensure_ascii=False)

    onehot = np.eye(3, dtype=int)[labels]
    full = pd.DataFrame(
        {
            "id": ids.astype(np.int64),
            "model_a": [models[i] for i in ma],
            "model_b": [models[i] for i in mb],
            "prompt": [enc(prompts[p]["turns"]) for p in pair_prompt],
            "response_a": [enc(r[0]) for r in rows_a],
            "response_b": [enc(r[0]) for r in rows_b],
            "winner_model_a": onehot[:, 0],
            "winner_model_b": onehot[:, 1],
            "winner_tie": onehot[:, 2],
        }
    )
    is_train = split == "train"
    train = full[is_train].reset_index(drop=True)
    test_full = full[~is_train].reset_index(drop=True)
    test = test_full[list(TEST_COLUMNS)].copy()
    solution = test_full[["id", *TARGET_COLUMNS]].copy()
    sample = pd.DataFrame({"id": test["id"], **{c: 1.0 / 3.0 for c in TARGET_COLUMNS}})
    truth = pd.DataFrame(
        {
            "id": ids.astype(np.int64),
            "split": split,
            "p_a": probs[:, 0],
            "p_b": probs[:, 1],
            "p_tie": probs[:, 2],
            "label": labels,
            "quality_a": qa,
            "quality_b": qb,
            "words_a": wa.astype(int),
            "words_b": wb.astype(int),
        }
    )

    # Reference log losses.
    tr_lab, te_lab = labels[is_train], labels[~is_train]
    if len(te_lab):
        bayes = float(_entropy(probs[~is_train]).mean())
        bayes_real = log_loss(te_lab, probs[~is_train])
        prior_ll = prior_log_loss(tr_lab, te_lab)
        tie_test = float(np.mean(te_lab == 2))
    else:
        bayes = bayes_real = prior_ll = tie_test = float("nan")
    info = SyntheticInfo(
        n_train=P.n_train,
        n_test=P.n_test,
        n_prompts_train=len(train_prompts),
        n_prompts_test=len(test_prompts),
        seed=seed,
        params=dataclasses.asdict(P),
        model_skill={m: round(float(s), 6) for m, s in zip(models, skill)},
        tie_rate_train=float(np.mean(tr_lab == 2)),
        tie_rate_test=tie_test,
        expected_tie_rate=float(probs[:, 2].mean()),
        bayes_log_loss=bayes,
        bayes_log_loss_realised=bayes_real,
        bayes_log_loss_train=log_loss(tr_lab, probs[is_train]),
        prior_log_loss=prior_ll,
    )
    return SyntheticArena(train=train, test=test, sample_submission=sample, solution=solution, truth=truth, info=info)


def write_synthetic_arena(
    out_dir: str | Path,
    n_train: int = 4000,
    n_test: int = 1000,
    n_prompts: int | None = None,
    seed: int = 0,
    force: bool = False,
    **params,
) -> SyntheticInfo:
    """Write a synthetic arena in the Kaggle layout to ``out_dir`` and return its truth.

    Files: train.csv, test.csv, sample_submission.csv (1/3 each, as Kaggle's),
    solution.csv (one-hot test labels), truth.csv (true probabilities of every row),
    truth.json (:class:`SyntheticInfo`). An existing folder is replaced (in one step) only
    when it is a synthetic arena itself, or with ``force``: a folder of real data is refused.
    """
    from prefkit.rundir import RunFolder

    arena = generate_arena_frames(n_train=n_train, n_test=n_test, n_prompts=n_prompts, seed=seed, **params)
    out = Path(out_dir)
    names = {"train": "train.csv", "test": "test.csv", "sample_submission": "sample_submission.csv",
             "solution": "solution.csv", "truth": "truth.csv"}  # fmt: skip
    with RunFolder(out, kind="synth", force=force, what="data folder").open() as folder:
        staged = folder.dir
        arena.train.to_csv(staged / names["train"], index=False)
        arena.test.to_csv(staged / names["test"], index=False)
        arena.sample_submission.to_csv(staged / names["sample_submission"], index=False)
        arena.solution.to_csv(staged / names["solution"], index=False)
        arena.truth.to_csv(staged / names["truth"], index=False, float_format="%.10g")
        info = arena.info
        info.out_dir = str(out)
        info.files = {k: str(out / v) for k, v in names.items()} | {"truth_json": str(out / "truth.json")}
        (staged / "truth.json").write_text(json.dumps(info.to_dict(), indent=2, allow_nan=True) + "\n")
    return info
