"""Frozen-encoder pair features: the cheap path that runs on a CPU.

Each text (the prompt, response A, response B; turns joined with a newline) is tokenised,
head-tail truncated at token level to ``max_length`` (special tokens included), run through
a frozen pretrained encoder, mean-pooled over real tokens (the attention mask excludes
padding) and L2-normalised: the intended use of sentence-embedding models such as
all-MiniLM-L6-v2. Texts are deduplicated, sorted by token length and batched with dynamic
padding, so little compute goes to padding.

Embeddings are cached on disk per (model fingerprint, max_length, head fraction, dtype) and
text hash, as parquet shards written while the run goes (an interrupted run resumes), so
re-runs, and the train texts seen again when test is embedded, cost nothing.

Pair features follow the swap convention of :mod:`prefkit.features.pair_features`
(``a_*``/``b_*`` exchange under an A/B swap, ``diff_*`` change sign, the rest stay):

==========================  ===================================================
column                      meaning
==========================  ===================================================
``a_emb_cos_prompt``        cos(prompt, A)
``b_emb_cos_prompt``        cos(prompt, B)
``diff_emb_cos_prompt``     cos(prompt, A) - cos(prompt, B)
``emb_cos_ab``              cos(A, B)
``diff_emb_<i>``            e(A) - e(B), every dimension (``svd_dim=0``)
``diff_emb_svd_<i>``        e(A) - e(B) projected on ``svd_dim`` directions
==========================  ===================================================

The projection is an uncentred SVD (principal directions of the second-moment matrix of
the differences) fitted on *training* pairs only; being linear and uncentred, it keeps the
swap antisymmetry exact (a swapped pair gets exactly the negated projection), and a fit on
D or on -D (the swap-augmented set) is the same fit.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from prefkit.atomic import atomic_path, atomic_write_text
from prefkit.errors import InputError
from prefkit.schema import turns_text
from prefkit.text.render import head_tail

_FINGERPRINT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
_fingerprint_memo: dict[tuple, str] = {}


# ---------------------------------------------------------------------------------------------
# Keys


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def model_fingerprint(model_dir: str | Path) -> str:
    """A hash of the model's config, tokenizer files and weights (memoised per size/mtime)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError("model folder not found (fetch it with `prefkit models fetch`)", file=model_dir)
    files = [model_dir / n for n in _FINGERPRINT_FILES if (model_dir / n).is_file()]
    files += sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp not in _fingerprint_memo:
        h = hashlib.sha256()
        for p in files:
            h.update(p.name.encode())
            with open(p, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        _fingerprint_memo[stamp] = h.hexdigest()
    return _fingerprint_memo[stamp]


# ---------------------------------------------------------------------------------------------
# Cache: parquet shards of (hash, embedding bytes) in one folder per key


class EmbeddingCache:
    def __init__(self, folder: str | Path, dim: int | None = None):
        self.folder = Path(folder)
        self.vectors: dict[str, np.ndarray] = {}
        self.dim = dim
        if self.folder.is_dir():
            for shard in sorted(self.folder.glob("shard-*.parquet")):
                try:
                    table = pd.read_parquet(shard)
                except Exception:  # a shard cut short by a crash: ignore, recompute its texts
                    continue
                for key, blob in zip(table["hash"], table["emb"]):
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if self.dim is None:
                        self.dim = len(vec)
                    if len(vec) == self.dim:
                        self.vectors[key] = vec

    def __contains__(self, key: str) -> bool:
        return key in self.vectors

    def __len__(self) -> int:
        return len(self.vectors)

    def add(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Keep and persist one shard (written to a temporary name, then renamed)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not len(keys):
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame({"hash": list(keys), "emb": [v.tobytes() for v in vectors]})
        name = f"shard-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
        with atomic_path(self.folder / name) as tmp:
            table.to_parquet(tmp, index=False)
        for key, vec in zip(keys, vectors):
            self.vectors[key] = vec
        self.dim = vectors.shape[1]


def cache_folder(cache_dir: str | Path, model_dir: str | Path, max_length: int, head_fraction: float, dtype: str) -> Path:
    fp = model_fingerprint(model_dir)[:16]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model_dir).resolve().name)
    return Path(cache_dir) / f"{name}-{fp}-L{max_length}-h{head_fraction:g}-{dtype}"


# ---------------------------------------------------------------------------------------------
# Encoder


@dataclass
class Encoder:
    tokenizer: object
    model: object
    device: str
    prefix: list[int]  # special tokens before the text ([CLS]), from the tokenizer's own template
    suffix: list[int]  # and after it ([SEP])
    pad_id: int
    max_positions: int | None


def _special_template(tokenizer) -> tuple[list[int], list[int]]:
    """Where the tokenizer puts its special tokens around one text, found by probing it."""
    for probe in ("a", "hello", "x y"):
        inner = tokenizer(probe, add_special_tokens=False)["input_ids"]
        outer = tokenizer(probe, add_special_tokens=True)["input_ids"]
        if not inner:
            continue
        for i in range(len(outer) - len(inner) + 1):
            if outer[i : i + len(inner)] == inner:
                return list(outer[:i]), list(outer[i + len(inner) :])
    return [], []


def resolve_device(device: str) -> str:
    from prefkit.models.checks import check_device

    return check_device(device)


def _load_encoder(model_dir: str | Path, device: str = "cpu", dtype: str = "float32") -> Encoder:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from prefkit.models.checks import check_checkpoint

    model_dir = check_checkpoint(model_dir)  # a missing or damaged file: one line naming it
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModel.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load an encoder from this folder ({' '.join(str(err).split())[:200]})", file=model_dir) from None
    model.eval().to(device)
    prefix, suffix = _special_template(tokenizer)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    max_positions = getattr(model.config, "max_position_embeddings", None)
    return Encoder(tokenizer, model, device, prefix, suffix, int(pad_id), max_positions)


def tokenize(encoder: Encoder, texts: Sequence[str], max_length: int, head_fraction: float = 0.5, chunk: int = 4096) -> list[list[int]]:
    """Token ids with special tokens, each at most ``max_length`` long (head-tail truncated)."""
    budget = max_length - len(encoder.prefix) - len(encoder.suffix)
    if budget < 1:
        raise InputError(f"max_length {max_length} leaves no room for text next to the special tokens")
    out: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        batch = list(texts[start : start + chunk])
        ids = encoder.tokenizer(batch, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
        out.extend(encoder.prefix + head_tail(x, budget, head_fraction) + encoder.suffix for x in ids)
    return out


def _encode_batches(encoder: Encoder, token_ids: list[list[int]], batch_size: int, progress: bool, on_batch=None) -> np.ndarray:
    """Mean-pooled, L2-normalised embeddings, in the order of ``token_ids``."""
    import torch
    import torch.nn.functional as F

    from prefkit.progress import progress_bar

    n = len(token_ids)
    order = sorted(range(n), key=lambda i: -len(token_ids[i]))  # longest first: memory peaks early
    result: np.ndarray | None = None
    bar = progress_bar(total=n, desc="embedding", unit="text", disable=not progress)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            width = max(len(token_ids[i]) for i in idx)
            ids = torch.full((len(idx), width), encoder.pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                seq = token_ids[i]
                ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
                mask[row, : len(seq)] = 1
            ids, mask = ids.to(encoder.device), mask.to(encoder.device)
            hidden = encoder.model(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
            pooled = F.normalize(pooled.float(), p=2, dim=-1).cpu().numpy()
            if result is None:
                result = np.zeros((n, pooled.shape[1]), dtype=np.float32)
            result[idx] = pooled
            if on_batch is not None:
                on_batch(idx, pooled)
            bar.update(len(idx))
    bar.close()
    return result if result is not None else np.zeros((0, 0), dtype=np.float32)


def embed_texts(
    texts: Sequence[str],
    model_dir: str | Path,
    max_length: int = 256,
    batch_size: int = 64,
    device: str = "cpu",
    *,
    cache_dir: str | Path | None = None,
    head_fraction: float = 0.5,
    dtype: str = "float32",
    progress: bool = True,
    flush_every: int = 4096,
    stats: dict | None = None,
) -> np.ndarray:
    """``(len(texts), dim)`` float32, rows L2-normalised. Duplicates are embedded once;
    with ``cache_dir`` only texts not cached before are embedded (and then cached)."""
    if max_length < 2:
        raise InputError(f"max_length must be at least 2 (got {max_length})")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1 (got {batch_size})")
    texts = [t if isinstance(t, str) else "" for t in texts]
    keys = [text_hash(t) for t in texts]
    unique: dict[str, str] = {}
    for key, text in zip(keys, texts):
        unique.setdefault(key, text)
    cache = EmbeddingCache(cache_folder(cache_dir, model_dir, max_length, head_fraction, dtype)) if cache_dir is not None else None
    todo = [k for k in unique if cache is None or k not in cache]
    vectors: dict[str, np.ndarray] = {} if cache is None else cache.vectors
    t0 = time.perf_counter()
    n_tokens = 0
    if todo:
        device = resolve_device(device)
        encoder = _load_encoder(model_dir, device, dtype)
        if encoder.max_positions is not None and max_length > encoder.max_positions:
            raise InputError(f"max_length {max_length} exceeds the model's {encoder.max_positions} positions", file=model_dir)
        token_ids = tokenize(encoder, [unique[k] for k in todo], max_length, head_fraction)
        n_tokens = sum(map(len, token_ids))
        pending_keys: list[str] = []
        pending_vecs: list[np.ndarray] = []

        def on_batch(idx, pooled):
            if cache is None:
                return
            pending_keys.extend(todo[i] for i in idx)
            pending_vecs.append(pooled)
            if len(pending_keys) >= flush_every:
                cache.add(pending_keys, np.concatenate(pending_vecs))
                pending_keys.clear()
                pending_vecs.clear()

        computed = _encode_batches(encoder, token_ids, batch_size, progress, on_batch)
        if cache is not None and pending_keys:
            cache.add(pending_keys, np.concatenate(pending_vecs))
        if cache is None:
            vectors = dict(zip(todo, computed))
    if stats is not None:
        stats.update(
            texts=len(texts), unique=len(unique), computed=len(todo), cached=len(unique) - len(todo),
            tokens=n_tokens, seconds=time.perf_counter() - t0,
        )  # fmt: skip
    if not keys:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([vectors[k] for k in keys]).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# Pair features


def pair_texts(pairs: pd.DataFrame) -> tuple[list[str], list[str], list[str]]:
    return (
        [turns_text(t) for t in pairs["prompt"]],
        [turns_text(t) for t in pairs["response_a"]],
        [turns_text(t) for t in pairs["response_b"]],
    )


def pair_embeddings(pairs: pd.DataFrame, model_dir: str | Path, **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings of prompt, A and B (one ``embed_texts`` call, so shared texts run once)."""
    p, a, b = pair_texts(pairs)
    n = len(p)
    emb = embed_texts(p + a + b, model_dir, **kwargs)
    return emb[:n], emb[n : 2 * n], emb[2 * n :]


@dataclass
class DiffProjection:
    """Uncentred SVD of the A-B embedding differences: ``project(D) = D @ components.T``."""

    components: np.ndarray  # (k, dim)
    explained: np.ndarray  # share of the second moment each direction carries

    def project(self, diff: np.ndarray) -> np.ndarray:
        return (np.asarray(diff, dtype=np.float64) @ self.components.T).astype(np.float32)

    def save(self, path: str | Path) -> None:
        np.savez(path, components=self.components, explained=self.explained)

    @classmethod
    def load(cls, path: str | Path) -> "DiffProjection":
        with np.load(path) as z:
            return cls(z["components"], z["explained"])


def fit_diff_projection(diff: np.ndarray, k: int) -> DiffProjection:
    """Top-``k`` eigenvectors of ``D^T D`` (sign fixed: largest coordinate positive)."""
    diff = np.asarray(diff, dtype=np.float64)
    if diff.ndim != 2 or len(diff) == 0:
        raise InputError("no pairs to fit the projection on")
    k = min(k, diff.shape[1])
    values, vectors = np.linalg.eigh(diff.T @ diff)
    top = np.argsort(values)[::-1][:k]
    comps = vectors[:, top].T
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    total = max(float(values.clip(min=0).sum()), 1e-12)
    return DiffProjection(comps, values[top].clip(min=0) / total)


def features_from_embeddings(ids: Iterable, ep: np.ndarray, ea: np.ndarray, eb: np.ndarray, projection: DiffProjection | None = None) -> pd.DataFrame:
    """The feature table (``id`` column + float32 columns) from normalised embeddings."""
    cos_pa = np.einsum("ij,ij->i", ep, ea)
    cos_pb = np.einsum("ij,ij->i", ep, eb)
    cols: dict[str, np.ndarray] = {
        "a_emb_cos_prompt": cos_pa,
        "b_emb_cos_prompt": cos_pb,
        "diff_emb_cos_prompt": cos_pa - cos_pb,
        "emb_cos_ab": np.einsum("ij,ij->i", ea, eb),
    }
    diff = ea - eb
    if projection is None:
        cols.update({f"diff_emb_{i}": diff[:, i] for i in range(diff.shape[1])})
    else:
        proj = projection.project(diff)
        cols.update({f"diff_emb_svd_{i}": proj[:, i] for i in range(proj.shape[1])})
    out = pd.DataFrame(cols).astype(np.float32)
    out.insert(0, "id", [str(i) for i in ids])
    return out


def pair_embedding_features(
    pairs: pd.DataFrame,
    model_dir: str | Path,
    max_length: int = 256,
    batch_size: int = 64,
    device: str = "cpu",
    *,
    svd_dim: int = 0,
    fit_pairs: pd.DataFrame | None = None,
    projection: DiffProjection | None = None,
    cache_dir: str | Path | None = None,
    head_fraction: float = 0.5,
    dtype: str = "float32",
    progress: bool = True,
    stats: dict | None = None,
) -> pd.DataFrame:
    """Embedding features of ``pairs``: ``id`` + float32 columns (see the module docstring).

    With ``svd_dim > 0`` the A-B difference is projected on ``svd_dim`` directions fitted on
    ``fit_pairs`` (the training pairs; default ``pairs`` itself, which must then be the
    training set), or on a given ``projection``. The projection used is in ``df.attrs``.
    """
    kw = dict(max_length=max_length, batch_size=batch_size, device=device, cache_dir=cache_dir,
              head_fraction=head_fraction, dtype=dtype, progress=progress)  # fmt: skip
    if svd_dim > 0 and projection is None and fit_pairs is not None and fit_pairs is not pairs:
        # one pass over both sets: the texts they share (and the model load) are paid once
        both = pd.concat([pairs[["prompt", "response_a", "response_b"]], fit_pairs[["prompt", "response_a", "response_b"]]])
        ep, ea, eb = pair_embeddings(both, model_dir, stats=stats, **kw)
        n = len(pairs)
        projection = fit_diff_projection(ea[n:] - eb[n:], svd_dim)
        ep, ea, eb = ep[:n], ea[:n], eb[:n]
    else:
        ep, ea, eb = pair_embeddings(pairs, model_dir, stats=stats, **kw)
        if svd_dim > 0 and projection is None:
            projection = fit_diff_projection(ea - eb, svd_dim)
    out = features_from_embeddings(pairs["id"], ep, ea, eb, projection)
    out.attrs["projection"] = projection
    return out


def write_features(features: pd.DataFrame, path: str | Path, meta: dict | None = None) -> Path:
    """Parquet (``id`` + numeric columns), written atomically; ``meta`` goes to ``<path>.json``."""
    path = Path(path)
    features = features.copy()
    features.attrs = {}  # pandas would try to store attrs (the projection object) as JSON
    with atomic_path(path) as tmp:
        features.to_parquet(tmp, index=False)
    if meta is not None:
        atomic_write_text(path.with_name(path.name + ".json"), json.dumps(meta, indent=2, default=str) + "\n")
    return path
