"""Adversarial checks: every command fed broken, partial or dangerous input, killed or run twice.

Each case runs ``prefkit`` in a subprocess inside its own temporary folder (a small synthetic
arena, a finished feature-model run and a tiny checkpoint copied in) and is *handled* when

* it fails with exit code != 0, exactly one line on stderr and no Python traceback (an
  "internal error" line, a bug caught by the CLI's last resort, does not count), or
* it succeeds (where success is right) without changing any file it was given,

and, for the run-folder cases, when the folder afterwards holds one complete run (the old
one or the new one), never a mix. Cases marked ``lead`` exercise ``predict`` and
``train-transformer``.

    python bench/adversarial.py [--markdown] [--only SUBSTRING] [--keep DIR]

Prints one row per case, then ``cases=<n> handled=<n>`` on the last line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


# ---------------------------------------------------------------------------------------
# Workspace: one temporary folder per case, with inputs copied in on first use
# ---------------------------------------------------------------------------------------


class Base:
    """Inputs built once: data, a finished feature run, a tiny checkpoint, a fold map."""

    def __init__(self, root: Path) -> None:
        from prefkit.config import load_config
        from prefkit.data.synthetic import write_synthetic_arena
        from prefkit.features.feature_model import train_feature_model
        from prefkit.testing.tiny import write_tiny_checkpoint

        self.root = root
        write_synthetic_arena(root / "data", n_train=240, n_test=40, seed=7)
        self.config_text = (
            "name: feat\noutput_dir: runs\ndata:\n  dir: data\nfolds:\n  n_folds: 3\n"
            "features:\n  num_threads: 1\n  learning_rate: 0.15\n  early_stopping_rounds: 10\n"
            "stack:\n  inner_folds: 3\n  submission: submissions/stack.csv\n"
        )
        (root / "tiny.yaml").write_text(self.config_text)
        cwd = os.getcwd()
        os.chdir(root)
        try:
            train_feature_model(load_config("tiny.yaml"))
        finally:
            os.chdir(cwd)
        write_tiny_checkpoint(root / "ckpt", "bert")
        self.prefkit_checkpoint(root / "ckpt", root / "pk_ckpt")

    @staticmethod
    def prefkit_checkpoint(base: Path, out: Path) -> None:
        """A checkpoint as train-transformer saves it (for predict), from the tiny encoder."""
        from prefkit.config import load_config
        from prefkit.models.transformer import build_model, load_tokenizer, save_checkpoint

        cfg = load_config(None, [f"model.name_or_path={base}", "render.max_length=64", "name=tiny"])
        tokenizer = load_tokenizer(cfg.model)
        save_checkpoint(build_model(cfg.model, tokenizer=tokenizer), tokenizer, out, cfg)


@dataclass
class Workspace:
    base: Base
    root: Path
    touched: list[Path] = field(default_factory=list)  # outputs a successful case may change

    def copy(self, name: str) -> Path:
        dst = self.root / name
        if not dst.exists():
            src = self.base.root / name
            if src.is_dir():
                shutil.copytree(src, dst)
            else:
                shutil.copy2(src, dst)
        return dst

    @property
    def data(self) -> Path:
        return self.copy("data")

    @property
    def train(self) -> Path:
        return self.data / "train.csv"

    @property
    def run(self) -> Path:
        self.copy("runs")
        return self.root / "runs" / "feat"

    @property
    def config(self) -> Path:
        self.data
        return self.copy("tiny.yaml")

    @property
    def ckpt(self) -> Path:
        return self.copy("ckpt")

    @property
    def pk(self) -> Path:
        return self.copy("pk_ckpt")

    def weights(self, folder: Path) -> Path:
        return next(p for p in sorted(folder.rglob("*.safetensors")))

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        return path

    def fold_map(self) -> Path:
        from prefkit.data.folds import make_folds, save_fold_map
        from prefkit.data.kaggle import read_kaggle_csv

        pairs = read_kaggle_csv(self.train)
        return save_fold_map(pairs["id"], make_folds(pairs, 3, 0), self.root / "folds.csv")


def hashes(root: Path, skip: list[Path]) -> dict[str, str]:
    skipped = [s.resolve() for s in skip]
    out = {}
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        rp = p.resolve()
        if any(rp == s or s in rp.parents for s in skipped):
            continue
        out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ---------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------


@dataclass
class Case:
    command: str
    name: str
    make: Callable[[Workspace], list]  # argv after "prefkit" (or a custom runner's result)
    expect: str = "error"  # error | ok | custom
    lead: bool = False


CASES: list[Case] = []


def case(command: str, name: str, expect: str = "error", lead: bool = False):
    def register(fn):
        CASES.append(Case(command, name, fn, expect, lead))
        return fn

    return register


def _truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


# -- read ------------------------------------------------------------------------------
case("read", "file that does not exist")(lambda w: ["read", "kaggle", w.root / "nope.csv"])
case("read", "binary file as CSV")(lambda w: ["read", "kaggle", w.file("x.csv", os.urandom(3000))])
case("read", "empty file")(lambda w: ["read", "kaggle", w.file("empty.csv", "")])
case("read", "unknown format")(lambda w: ["read", "nosuchformat", w.train])
case("read", "--out is the input file")(lambda w: ["read", "kaggle", w.train, "--out", w.train])
case("read", "--out inside the input folder, even with --force")(lambda w: ["read", "kaggle", w.data, "--out", w.data / "solution.csv", "--force"])
case("read", "--out over a file prefkit did not write")(lambda w: ["read", "kaggle", w.train, "--out", w.file("notes.parquet", "mine")])
case("read", "--out is a folder")(lambda w: ["read", "kaggle", w.train, "--out", w.data])
case("read", "--on-bad-row with a bad value")(lambda w: ["read", "kaggle", w.train, "--on-bad-row", "maybe"])

# -- folds -----------------------------------------------------------------------------
case("folds make", "--out is the input file")(lambda w: ["folds", "make", w.train, "--out", w.train])
case("folds make", "--out over a user's CSV")(lambda w: ["folds", "make", w.train, "--out", w.file("mine.csv", "a,b\n1,2\n")])
case("folds make", "--n-folds 1")(lambda w: ["folds", "make", w.train, "--out", w.root / "f.csv", "--n-folds", "1"])
case("folds make", "--out with another extension")(lambda w: ["folds", "make", w.train, "--out", w.root / "f.txt"])


@case("folds make", "fewer rows than folds")
def _few_rows(w):
    from prefkit.data.synthetic import write_synthetic_arena

    write_synthetic_arena(w.root / "small", n_train=6, n_test=1, n_prompts=6, seed=0)
    return ["folds", "make", w.root / "small" / "train.csv", "--out", w.root / "f.csv", "--n-folds", "5"]


def _edited_fold_map(w, edit) -> list:
    """``folds import`` of a good fold map after ``edit(table)`` (columns id, fold as text)."""
    import pandas as pd

    fm = pd.read_csv(w.fold_map(), dtype=str)
    fm = edit(fm)
    fm.to_csv(w.root / "folds.csv", index=False)
    return ["folds", "import", w.root / "folds.csv", "--train", w.train]


def _set(table, row: int, value: str):
    table.loc[row, "fold"] = value
    return table


case("folds import", "map that splits a prompt group across folds")(
    lambda w: _edited_fold_map(w, lambda t: _set(t, 0, str((int(t.loc[0, "fold"]) + 1) % 3)))
)
case("folds import", "a fold labelled x amid A-C")(
    lambda w: _edited_fold_map(w, lambda t: _set(t.assign(fold=t["fold"].map({"0": "A", "1": "B", "2": "C"})), 3, "x"))
)
case("folds import", "a fold of one row amid folds of 80")(lambda w: _edited_fold_map(w, lambda t: _set(t, 5, "7")))
case("folds import", "map missing ids of the data")(lambda w: _edited_fold_map(w, lambda t: t.iloc[10:]))
case("folds import", "binary fold map")(lambda w: ["folds", "import", w.file("folds.csv", os.urandom(2000)), "--train", w.train])
case("folds import", "--out is the map itself")(lambda w: ["folds", "import", w.fold_map(), "--train", w.train, "--out", w.root / "folds.csv"])

# -- synth -----------------------------------------------------------------------------


@case("synth", "into a folder holding someone's train.csv")
def _synth_real(w):
    w.file("kaggle/train.csv", "id,prompt\n1,precious\n")
    return ["synth", w.root / "kaggle", "--n-train", "40", "--n-test", "8"]


case("synth", "--n-train 0")(lambda w: ["synth", w.root / "s", "--n-train", "0"])
case("synth", "into a path that is a file")(lambda w: ["synth", w.file("afile", "x"), "--n-train", "40", "--n-test", "8"])


@case("synth", "again into its own output (replaced whole)", expect="ok")
def _synth_again(w):
    w.touched.append(w.data)
    return ["synth", w.data, "--n-train", "40", "--n-test", "8", "--seed", "3"]


# -- config ----------------------------------------------------------------------------
case("config", "-c file that does not exist")(lambda w: ["config", "-c", w.root / "nope.yaml"])
case("config", "-c file that is not YAML")(lambda w: ["config", "-c", w.file("bad.yaml", "a: [1, 2\n  b: {")])
case("config", "override without '='")(lambda w: ["config", "train.lr"])
case("config", "override of the wrong type (blamed, not the file)")(lambda w: ["config", "-c", w.config, "features.learning_rate=abc"])
case("config", "unknown key")(lambda w: ["config", "features.nope=1"])

# -- train-features --------------------------------------------------------------------
case("train-features", "data.dir that does not exist")(lambda w: ["train-features", "-c", w.config, "data.dir=nowhere"])


@case("train-features", "run folder is the data folder")
def _into_data(w):
    return ["train-features", "-c", w.config, "output_dir=.", "name=data"]


@case("train-features", "second run while the folder is locked")
def _locked(w):
    from prefkit.rundir import RunLock

    w.lock = RunLock(w.run).acquire()  # released by the runner
    return ["train-features", "-c", w.config]


@case("train-features", "without a test set (said, no test.csv)", expect="ok")
def _no_test(w):
    (w.data / "test.csv").unlink()
    w.touched.append(w.root / "runs")
    return ["train-features", "-c", w.config]


@case("train-features", "kill -9 at a random moment, then inspect", expect="custom")
def _kill_features(w):
    return kill_case(w, ["train-features", "-c", w.config, "features.learning_rate=0.3"], w.run)


# -- stack -----------------------------------------------------------------------------


@case("stack", "binary test.csv in a run")
def _stack_binary(w):
    (w.run / "test.csv").write_bytes(os.urandom(4096))
    return ["stack", w.run, "-c", w.config]


@case("stack", "oof.csv with text where probabilities go")
def _stack_garbage(w):
    text = (w.run / "oof.csv").read_text().splitlines()
    text[3] = text[3].split(",")[0] + ",abc,0.3,0.3,feat,0"
    (w.run / "oof.csv").write_text("\n".join(text) + "\n")
    return ["stack", w.run, "-c", w.config]


@case("stack", "oof.csv that stops part-way through its folds")
def _stack_partial(w):
    lines = (w.run / "oof.csv").read_text().splitlines(keepends=True)
    (w.run / "oof.csv").write_text("".join(lines[: len(lines) * 3 // 5]))
    return ["stack", w.run, "-c", w.config]


@case("stack", "oof.csv cut in the middle of a line")
def _stack_cut(w):
    _truncate(w.run / "oof.csv", 0.6)
    return ["stack", w.run, "-c", w.config]


case("stack", "run folder that does not exist")(lambda w: ["stack", w.root / "runs" / "nope", "-c", w.config])
case("stack", "no run folder at all")(lambda w: ["stack", "stack.name=x"])


@case("stack", "stack.submission is the sample submission")
def _stack_over_sample(w):
    return ["stack", w.run, "-c", w.config, f"stack.submission={w.data / 'sample_submission.csv'}"]


@case("stack", "sample submission with unknown ids")
def _stack_bad_sample(w):
    bad = w.file("sample.csv", "id,winner_model_a,winner_model_b,winner_tie\nzzz,0.3,0.3,0.4\n")
    return ["stack", w.run, "-c", w.config, f"data.sample_submission={bad}"]


@case("stack", "two whole folds of three (covered rows said)", expect="ok")
def _stack_two_folds(w):
    import pandas as pd

    oof = pd.read_csv(w.run / "oof.csv", dtype={"id": str})
    oof[oof["fold"] != 2].to_csv(w.run / "oof.csv", index=False)
    w.touched += [w.root / "runs" / "stack", w.root / "submissions"]
    return ["stack", w.run, "-c", w.config]


@case("stack", "kill -9 at a random moment, then inspect", expect="custom")
def _kill_stack(w):
    first = run_prefkit(w, ["stack", w.run, "-c", w.config])
    if first.returncode != 0:
        return False, "first stack failed: " + first.stderr.strip()[-150:]
    return kill_case(w, ["stack", w.run, "-c", w.config, "stack.method=lgbm"], w.root / "runs" / "stack")


# -- score / validate-submission -------------------------------------------------------


def _submission(w, mutate) -> Path:
    import pandas as pd

    sol = pd.read_csv(w.data / "solution.csv", dtype={"id": str})
    sub = pd.DataFrame({"id": sol["id"], "winner_model_a": 0.5, "winner_model_b": 0.3, "winner_tie": 0.2})
    sub = mutate(sub)
    sub.to_csv(w.root / "sub.csv", index=False)
    return w.root / "sub.csv"


case("score", "rows summing to 1.4")(lambda w: ["score", _submission(w, lambda s: s.assign(winner_tie=0.6)), w.data / "solution.csv"])
case("score", "binary prediction file")(lambda w: ["score", w.file("p.csv", os.urandom(3000)), w.data / "solution.csv"])
case("score", "ids missing from the predictions")(lambda w: ["score", _submission(w, lambda s: s.iloc[5:]), w.data / "solution.csv"])
case("score", "--plot into a folder that is a file")(lambda w: ["score", _submission(w, lambda s: s), w.data / "solution.csv", "--plot", w.file("f", "x") / "r.png"])
case("validate-submission", "rows out of order")(lambda w: ["validate-submission", _submission(w, lambda s: s.iloc[::-1]), w.data / "sample_submission.csv"])
case("validate-submission", "negative probability")(lambda w: ["validate-submission", _submission(w, lambda s: s.assign(winner_tie=-0.2)), w.data / "sample_submission.csv"])

# -- embed -----------------------------------------------------------------------------
case("embed", "model path that does not exist")(lambda w: ["embed", w.train, "--model", w.root / "no-model", "--out", w.root / "e.parquet"])
case("embed", "truncated model.safetensors")(lambda w: [_truncate(w.ckpt / "model.safetensors") and "embed", w.train, "--model", w.ckpt, "--out", w.root / "e.parquet"])
case("embed", "config.json that is not JSON")(lambda w: [w.ckpt and w.file("ckpt/config.json", "{oops") and "embed", w.train, "--model", w.ckpt, "--out", w.root / "e.parquet"])
case("embed", "--out is the input file")(lambda w: ["embed", w.train, "--model", w.ckpt, "--out", w.train])
case("embed", "--batch-size 0")(lambda w: ["embed", w.train, "--model", w.ckpt, "--batch-size", "0"])
case("embed", "--device cuda without a GPU")(lambda w: ["embed", w.train, "--model", w.ckpt, "--device", "cuda", "--out", w.root / "e.parquet", "--svd-dim", "0"])

# -- models ----------------------------------------------------------------------------
case("models fetch", "unknown model name")(lambda w: ["models", "fetch", "no-such-model", "--dest", w.root / "pre"])

# -- predict / train-transformer (the transformer commands) ----------------------------
case("predict", "checkpoint folder that does not exist", lead=True)(lambda w: ["predict", w.root / "nope", w.train, "--out", w.root / "p.csv"])
case("predict", "truncated weights file", lead=True)(lambda w: [_truncate(w.weights(w.pk)) and "predict", w.pk, w.train, "--out", w.root / "p.csv"])
case("predict", "config.json that is not JSON", lead=True)(lambda w: [w.pk and w.file("pk_ckpt/config.json", "{oops") and "predict", w.pk, w.train, "--out", w.root / "p.csv"])
case("predict", "--out is the input file", lead=True)(lambda w: ["predict", w.pk, w.train, "--out", w.train])
case("predict", "--batch-size 0", lead=True)(lambda w: ["predict", w.pk, w.train, "--out", w.root / "p.csv", "--batch-size", "0"])
case("predict", "--device cuda without a GPU", lead=True)(lambda w: ["predict", w.pk, w.train, "--out", w.root / "p.csv", "--device", "cuda"])
case("predict", "a good checkpoint (the control case)", expect="ok", lead=True)(lambda w: ["predict", w.pk, w.train, "--out", w.root / "out" / "p.csv"])
case("train-transformer", "model path that does not exist", lead=True)(lambda w: ["train-transformer", "-c", w.config, "name=tr", "model.name_or_path=checkpoints/nope"])
case("train-transformer", "truncated model weights", lead=True)(lambda w: [_truncate(w.ckpt / "model.safetensors") and "train-transformer", "-c", w.config, "name=tr", f"model.name_or_path={w.ckpt}"])


@case("train-transformer", "second run while the folder is locked", lead=True)
def _locked_transformer(w):
    from prefkit.rundir import RunLock

    w.lock = RunLock(w.root / "runs" / "tr").acquire()
    return ["train-transformer", "-c", w.config, "name=tr", f"model.name_or_path={w.ckpt}", "train.epochs=1"]


# ---------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------


def run_prefkit(w: Workspace, argv: list, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFKIT_ERROR_LOG": str(w.root / ".last_error.log"), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "prefkit", *map(str, argv)], cwd=w.root, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def folder_state(folder: Path) -> tuple[str, dict]:
    from prefkit.rundir import read_marker

    marker = read_marker(folder) or {}
    return marker.get("status", "none"), hashes(folder, [])


KILL_RANDOM = random.Random()


def kill_case(w: Workspace, argv: list, folder: Path) -> tuple[bool, str]:
    """Run ``argv`` over the finished run in ``folder`` once whole (the "new" run, and how
    long it takes), put the old run back, run it again and SIGKILL it at a random moment:
    the folder must then hold the old run or the new one, complete, never a mix."""
    saved = w.root / ".before"
    shutil.copytree(folder, saved)
    _, before = folder_state(folder)
    t0 = time.time()
    reference = run_prefkit(w, argv)
    took = time.time() - t0
    if reference.returncode != 0:
        return False, f"reference run failed: {reference.stderr.strip()[-120:]}"
    _, new = folder_state(folder)
    shutil.rmtree(folder)
    shutil.copytree(saved, folder)
    delay = KILL_RANDOM.uniform(0.2, max(0.3, took))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    child = subprocess.Popen([sys.executable, "-m", "prefkit", *map(str, argv)], cwd=w.root, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait()
    status, after = folder_state(folder)

    def core(h):  # logs, plots and run.json carry times: compare the rest
        return {k: v for k, v in h.items() if k not in ("train.log", "stack.log", "run.json") and not k.endswith(".png")}

    when = f"killed at {delay:.1f}s of a {took:.1f}s run"
    if status == "complete" and core(after) == core(before):
        return True, f"{when}: the previous run, whole"
    new_config = after.get("config.yaml") == new.get("config.yaml")
    if status == "complete" and new_config and set(core(after)) == set(core(new)):
        return True, f"{when}: the new run, whole"
    return False, f"{when}: status {status!r}, a mix of the two runs"


@dataclass
class Outcome:
    case: Case
    handled: bool
    code: int | str
    behaviour: str


def run_case(c: Case, base: Base, scratch: Path) -> Outcome:
    root = Path(tempfile.mkdtemp(prefix="case-", dir=scratch))
    w = Workspace(base, root)
    w.lock = None
    try:
        made = c.make(w)
        if c.expect == "custom":
            handled, behaviour = made
            return Outcome(c, handled, "-", behaviour)
        before = hashes(root, w.touched)
        result = run_prefkit(w, made)
        after = hashes(root, w.touched)
    except subprocess.TimeoutExpired:
        return Outcome(c, False, "timeout", "did not finish")
    finally:
        if getattr(w, "lock", None) is not None:
            w.lock.release()
    lines = result.stderr.strip().splitlines()
    changed = [k for k in before if after.get(k) != before[k]]
    shown = lines[0] if lines else (result.stdout.strip().splitlines() or [""])[-1]
    shown = shown.replace(str(root) + "/", "").replace(str(root), ".")
    if len(shown) > 150:
        shown = shown[:147] + "..."
    if result.returncode != 0:
        one = len(lines) == 1 and "Traceback" not in result.stderr and not lines[0].startswith("internal error")
        why = "" if one or len(lines) == 1 else f" [{len(lines)} stderr lines{', traceback' if 'Traceback' in result.stderr else ''}]"
        return Outcome(c, one and not changed, result.returncode, shown + why + (f" [changed {changed[0]}]" if changed else ""))
    if c.expect == "error":
        return Outcome(c, False, 0, "accepted" + (f", and changed its input {changed[0]}" if changed else "") + ": " + shown)
    if changed:
        return Outcome(c, False, 0, f"ok but changed its input {changed[0]}")
    return Outcome(c, True, 0, "ok, inputs untouched" + (f"; said: {shown}" if lines else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown (for README)")
    parser.add_argument("--only", help="run only cases whose command or name contains this")
    parser.add_argument("--keep", help="keep the case folders here (default: a temporary folder, removed)")
    parser.add_argument("--seed", type=int, help="seed of the kill moments (default: random)")
    args = parser.parse_args(argv)
    if args.seed is not None:
        KILL_RANDOM.seed(args.seed)

    scratch = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="prefkit-adversarial-"))
    scratch.mkdir(parents=True, exist_ok=True)
    cases = [c for c in CASES if not args.only or args.only in c.command or args.only in c.name]
    try:
        base_root = scratch / "base"
        base_root.mkdir(exist_ok=True)
        base = Base(base_root)
        outcomes = []
        for c in cases:
            outcome = run_case(c, base, scratch)
            outcomes.append(outcome)
            if not args.markdown:
                mark = "yes" if outcome.handled else "NO"
                lead = " (lead)" if c.lead else ""
                print(f"{mark:<4} {c.command + lead:<28} {c.name:<52} exit {outcome.code!s:<4} {outcome.behaviour}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.markdown:
        print("| command | case | exit | behaviour | handled |")
        print("|---|---|---|---|---|")
        for o in outcomes:
            cmd = o.case.command + (" †" if o.case.lead else "")
            behaviour = o.behaviour.replace("|", "\\|")
            print(f"| `{cmd}` | {o.case.name} | {o.code} | {behaviour} | {'yes' if o.handled else '**no**'} |")
    handled = sum(o.handled for o in outcomes)
    lead_open = sum(1 for o in outcomes if o.case.lead and not o.handled)
    print(f"cases={len(outcomes)} handled={handled} unhandled_transformer_commands={lead_open}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
