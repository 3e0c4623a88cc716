"""The wheels a kernel installs offline: prefkit's own and every dependency the Kaggle image lacks.

The dependencies are prefkit's requirements and theirs, followed down from the installed
distributions here and stopping at the packages of ``kaggle_image.txt`` (the image has them,
with their own dependencies). Each is pinned to the version installed here and fetched from
PyPI (``pip download --no-deps``); where PyPI cannot be reached, the installed files are
packed into a wheel instead (RECORD hashes recomputed), so a bundle builds offline too.
``wheels/requirements.txt`` pins them all for ``pip install --no-index --find-links``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from prefkit.errors import InputError

IMAGE_FILE = Path(__file__).with_name("kaggle_image.txt")
INSTALL_ONLY = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}  # dist-info files an installer writes


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def image_packages(path: Path = IMAGE_FILE) -> set[str]:
    """The packages the Kaggle image ships (``kaggle_image.txt``, one a line, ``#`` comments)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {canonical(line) for line in lines if line}


def _requirements(dist: metadata.Distribution):
    from packaging.requirements import Requirement

    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            yield canonical(req.name)


def needed_distributions(root: str = "prefkit", extra=(), image: set[str] | None = None) -> list[metadata.Distribution]:
    """Installed distributions ``root`` needs that the image lacks (plus ``extra``, bundled
    even if the image has them), dependencies first looked up here."""
    image = image_packages() if image is None else image
    forced = {canonical(e) for e in extra}
    queue, seen, found = [*_requirements(metadata.distribution(root)), *sorted(forced)], set(), []
    while queue:
        name = queue.pop(0)
        if name in seen or (name in image and name not in forced):
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            if name in forced:
                raise InputError(f"--bundle {name}: not installed here, so there is no version to pin") from None
            raise InputError(f"{name} (a dependency of {root}) is not installed here: pip install it first") from None
        found.append(dist)
        queue.extend(_requirements(dist))
    return found


def project_root(project_dir=None) -> Path:
    """The source tree prefkit's wheel is built from: ``project_dir``, else the folder of an
    editable install, else the current folder when it holds prefkit's pyproject.toml."""
    candidates = [Path(project_dir)] if project_dir else []
    direct = metadata.distribution("prefkit").read_text("direct_url.json")
    if direct:
        url = json.loads(direct).get("url", "")
        if url.startswith("file://"):
            candidates.append(Path(url[len("file://"):]))
    candidates.append(Path.cwd())
    for c in candidates:
        if (c / "pyproject.toml").is_file() and re.search(r'(?m)^name\s*=\s*"prefkit"', (c / "pyproject.toml").read_text()):
            return c
    raise InputError("prefkit's source tree (pyproject.toml) not found: pass --project DIR", file=candidates[0] if project_dir else None)


def _pip(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"], capture_output=True, text=True, check=False)


def _build_tools_here() -> bool:
    """Whether the build backend prefkit's pyproject.toml asks for is installed here (then the
    wheel builds without fetching it)."""
    try:
        import setuptools
        import wheel  # noqa: F401
        from packaging.version import Version
    except ImportError:
        return False
    return Version(setuptools.__version__) >= Version("77")


def build_prefkit_wheel(dest: Path, project_dir=None) -> Path:
    """``pip wheel --no-deps`` of prefkit's source tree, built from a copy (no ``build/``
    left in the tree, no stale files from an earlier build in the wheel)."""
    import shutil
    import tempfile

    root = project_root(project_dir)
    before = set(dest.glob("prefkit-*.whl"))
    with tempfile.TemporaryDirectory(prefix="prefkit-wheel-") as tmp:
        src = Path(tmp) / "prefkit"
        shutil.copytree(root / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py", "MANIFEST.in"):
            if (root / name).is_file():
                shutil.copy2(root / name, src / name)
        isolation = ["--no-build-isolation"] if _build_tools_here() else []
        done = _pip(["wheel", "--no-deps", *isolation, "-w", str(dest), str(src)])
    built = set(dest.glob("prefkit-*.whl")) - before
    if done.returncode != 0 or not built:
        last = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise InputError(f"pip wheel of prefkit failed: {last}", file=root)
    return built.pop()


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def wheel_from_installed(dist: metadata.Distribution, dest: Path) -> Path:
    """A wheel of an installed distribution's files (its RECORD), tagged as its WHEEL file says."""
    tags = [line.split(":", 1)[1].strip().split("-") for line in (dist.read_text("WHEEL") or "").splitlines() if line.startswith("Tag:")]
    tag = "-".join(".".join(sorted({t[i] for t in tags})) for i in range(3)) if tags else "py3-none-any"  # py2.py3-none-any
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    path = dest / f"{name}-{dist.version}-{tag}.whl"
    info_dir = next((str(f).split("/")[0] for f in dist.files or [] if str(f).split("/")[0].endswith(".dist-info")), None)
    if not dist.files or info_dir is None:
        raise InputError(f"{dist.metadata['Name']} {dist.version}: no RECORD of its installed files, cannot pack a wheel")
    records = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in dist.files:
            parts = f.parts
            if parts[0] == ".." or "__pycache__" in parts or (parts[0] == info_dir and parts[-1] in INSTALL_ONLY):
                continue
            data = Path(dist.locate_file(f)).read_bytes()
            zf.writestr(str(f), data)
            records.append(f"{f},{_record_hash(data)},{len(data)}")
        records.append(f"{info_dir}/RECORD,,")
        zf.writestr(f"{info_dir}/RECORD", "\n".join(records) + "\n")
    return path


def fetch_wheel(dist: metadata.Distribution, dest: Path, python_version: str | None = None) -> tuple[Path, str]:
    """A wheel of ``dist`` pinned to its version: from PyPI, else packed from the installed files."""
    pin = f"{dist.metadata['Name']}=={dist.version}"
    target = ["--python-version", python_version, "--platform", "manylinux2014_x86_64", "--platform", "any"] if python_version else []
    before = set(dest.iterdir())
    done = _pip(["download", "--no-deps", "--only-binary=:all:", *target, "-d", str(dest), pin])
    got = [p for p in set(dest.iterdir()) - before if p.suffix == ".whl"]
    if done.returncode == 0 and got:
        return got[0], "PyPI"
    if python_version and python_version != f"{sys.version_info.major}.{sys.version_info.minor}":
        last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise InputError(f"pip download {pin} for Python {python_version} failed: {last}")
    return wheel_from_installed(dist, dest), "installed files"


def bundle_wheels(dest: Path, extra=(), python_version: str | None = None, project_dir=None, echo=print) -> list[str]:
    """prefkit's wheel and the wheels of what the image lacks into ``dest``, and
    ``dest/requirements.txt`` pinning them; returns the wheel file names."""
    dest.mkdir(parents=True, exist_ok=True)
    wheels = [build_prefkit_wheel(dest, project_dir)]
    pins = [f"prefkit=={metadata.version('prefkit')}"]
    for dist in needed_distributions(extra=extra):
        wheel, source = fetch_wheel(dist, dest, python_version)
        echo(f"  wheel {wheel.name} ({source})")
        wheels.append(wheel)
        pins.append(f"{dist.metadata['Name']}=={dist.version}")
    (dest / "requirements.txt").write_text("\n".join(pins) + "\n")
    return [w.name for w in wheels]
