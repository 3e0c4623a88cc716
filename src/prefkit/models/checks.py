"""Checks of a model folder before any library loads it, so that a missing, truncated or
damaged file ends in one line naming the file and what is wrong, not in a traceback from
deep inside safetensors, torch or transformers.

    check_checkpoint("runs/minilm/fold_0/checkpoint")   # raises InputError, or returns the path

Cheap: it reads JSON files and the safetensors headers (and the zip directory of a torch
``.bin``), never the weights themselves.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from prefkit.errors import InputError

JSON_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "adapter_config.json",
              "generation_config.json", "prefkit.json")  # fmt: skip
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the header
GGUF_MAGIC = b"GGUF"


def read_json(path: Path) -> object:
    """A JSON file's content; anything unreadable is one line naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError("not a text JSON file (binary or not UTF-8)", file=path) from None
    except ValueError as err:
        raise InputError(f"not valid JSON ({err})", file=path) from None
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror or err})", file=path) from None


def check_safetensors(path: str | Path) -> None:
    """The header is readable JSON and every tensor it lists lies inside the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise InputError(f"truncated: {size} bytes, not even a safetensors header", file=path)
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER or n > size - 8:
                raise InputError(f"not a safetensors file, or truncated (header of {n} bytes in a file of {size})", file=path)
            raw = fh.read(n)
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror or err})", file=path) from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InputError("damaged safetensors header (not JSON)", file=path) from None
    if not isinstance(header, dict):
        raise InputError("damaged safetensors header (not a JSON object)", file=path)
    data = size - 8 - n
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict) and "data_offsets" in t]
    need = max(ends, default=0)
    if need > data:
        raise InputError(f"truncated: its header lists {need} bytes of tensors, the file holds {data}", file=path)


def check_torch_bin(path: str | Path) -> None:
    """A torch ``.bin`` saved as a zip archive has a readable directory (a truncated one has not)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            if fh.read(2) not in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):  # legacy pickle format
                raise InputError("not a torch checkpoint (neither a zip archive nor a pickle), or truncated", file=path)
        return
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError(f"damaged torch checkpoint ({err})", file=path) from None


def check_weights_file(path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise InputError("weights file not found", file=path)
    if path.suffix == ".safetensors":
        check_safetensors(path)
    elif path.suffix == ".bin":
        check_torch_bin(path)
    elif path.suffix == ".gguf":
        with open(path, "rb") as fh:
            if fh.read(4) != GGUF_MAGIC:
                raise InputError("not a GGUF file (no GGUF magic number)", file=path)


def _check_index(index: Path) -> None:
    tree = read_json(index)
    weight_map = tree.get("weight_map") if isinstance(tree, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError("expected a JSON object with a non-empty weight_map", file=index)
    for shard in sorted(set(map(str, weight_map.values()))):
        shard_path = index.parent / shard
        if not shard_path.is_file():
            raise InputError(f"shard {shard} listed in {index.name} is missing", file=index.parent)
        check_weights_file(shard_path)


def check_checkpoint(path: str | Path, *, weights: bool = True) -> Path:
    """Raise :class:`InputError` (one line, naming the file) unless ``path`` is a model
    folder whose ``config.json`` and other JSON files parse and whose weights are whole
    (or a GGUF / safetensors file). ``weights=False`` checks a folder that holds only a
    config and a tokenizer."""
    path = Path(path)
    if not path.exists():
        raise InputError("not found (no such model folder or file)", file=path)
    if path.is_file():
        if path.suffix not in (".gguf", ".safetensors", ".bin"):
            raise InputError("expected a model folder (config.json and weights), a .gguf or a .safetensors file", file=path)
        check_weights_file(path)
        return path
    config = path / "config.json"
    adapter = path / "adapter_config.json"
    if not config.exists() and not adapter.exists():
        raise InputError("not a model folder: no config.json", file=path)
    for name in JSON_FILES:
        if (path / name).exists():
            tree = read_json(path / name)
            if name == "config.json" and not isinstance(tree, dict):
                raise InputError("expected a JSON object", file=path / name)
    if not weights:
        return path
    for name in INDEX_FILES:
        if (path / name).exists():
            _check_index(path / name)
            return path
    present = [path / n for n in WEIGHT_FILES if (path / n).exists()]
    if not present:
        if any(path.glob("*.gguf")):
            return path
        raise InputError(f"no weights ({' or '.join(WEIGHT_FILES[:3])})", file=path)
    for file in present:
        check_weights_file(file)
    return path


PREFKIT_FOLDERS = ("checkpoints", "runs", "data")  # the repository layout's folders: never a hub organisation


def looks_local(name_or_path: str | Path) -> bool:
    """Whether a model name is meant as a local path rather than a hub id (``org/name``):
    absolute, relative (``./``, ``~``), ending in ``.gguf``, deeper than ``org/name``, or
    starting with a folder that exists here or one of prefkit's own (``checkpoints/...``, ``runs/...``)."""
    text = str(name_or_path)
    parts = Path(text).parts
    return (
        Path(text).is_absolute()
        or text.startswith((".", "~"))
        or text.endswith(".gguf")
        or len(parts) > 2
        or (len(parts) >= 1 and (Path(parts[0]).is_dir() or parts[0] in PREFKIT_FOLDERS))
        or Path(text).exists()
    )


def resolve_model_path(name_or_path: str | Path, *, weights: bool = True) -> str:
    """``name_or_path`` ready for ``from_pretrained``: a local path is checked
    (:func:`check_checkpoint`; a missing one is "not found", not a hub "Repo id" message),
    a hub id is returned as it is."""
    text = str(name_or_path)
    if looks_local(text):
        path = Path(text).expanduser()
        if not path.exists():
            raise InputError("model not found (no such local folder or file)", file=path)
        return str(check_checkpoint(path, weights=weights))
    return text




def check_device(device: str | None) -> str:
    """``device`` if this machine has it ("auto" or None: cuda when there is one, else cpu);
    an absent CUDA device, or a GPU index beyond the ones present, is one line."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    text = str(device)
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {text!r} asked for, but no CUDA device is available (use --device cpu)")
        index = text.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise InputError(f"device {text!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif text == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InputError("device 'mps' asked for, but it is not available here")
    elif text != "cpu":
        raise InputError(f"unknown device {text!r}: use cpu, cuda, cuda:<index> or auto")
    return text


# ---------------------------------------------------------------------------------------
# transformers' load report, as one prefkit line
# ---------------------------------------------------------------------------------------

_ANSI = __import__("re").compile(r"\x1b\[[0-9;]*m")
_REPORT_STATUSES = ("MISSING", "UNEXPECTED", "MISMATCH", "CONVERSION")


def summarise_load_report(text: str) -> str:
    """transformers' ``LOAD REPORT`` table (ANSI colours, one row per key) as one line:
    ``new head initialised: score.weight`` for the expected case, else every status with its keys."""
    plain = _ANSI.sub("", text)
    found: dict[str, list[str]] = {}
    for line in plain.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) >= 2 and cells[1] in _REPORT_STATUSES:
            found.setdefault(cells[1], []).append(cells[0])
    source = plain.split("from:", 1)[1].splitlines()[0].strip() if "from:" in plain else "the checkpoint"
    if set(found) == {"MISSING"}:
        return f"new head initialised (not in {source}): {', '.join(found['MISSING'])}"
    parts = [f"{status.lower()} {', '.join(keys)}" for status, keys in found.items()]
    return f"loaded {source} with " + "; ".join(parts) if parts else f"loaded {source}"


class _LoadReportFilter:
    def __init__(self, say) -> None:
        self.say = say

    def filter(self, record) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        self.say(summarise_load_report(message))
        return False


@__import__("contextlib").contextmanager
def one_line_load_report(say=None):
    """Within the block, transformers' load report (logged as a warning with ANSI colours
    on every fresh head) becomes one line given to ``say`` (default: stderr)."""
    import logging
    import sys

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    logger = logging.getLogger("transformers.modeling_utils")
    filt = _LoadReportFilter(say)
    logger.addFilter(filt)
    try:
        yield
    finally:
        logger.removeFilter(filt)


__all__ = [
    "check_checkpoint",
    "check_device",
    "check_safetensors",
    "check_torch_bin",
    "check_weights_file",
    "looks_local",
    "one_line_load_report",
    "resolve_model_path",
    "summarise_load_report",
]
