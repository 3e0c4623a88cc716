"""Stacking of base models' predictions with nested cross-validation, then calibration.

Inputs are run folders holding ``oof.csv`` (and ``test.csv``) in the format of
:mod:`prefkit.predictions`: the feature model's, a transformer's, any model's. They are
aligned by id with the training labels; the stacker sees each model's log-probabilities.

Honest OOF: the base models' OOF files carry the fold of every row, and all of them must
agree on it. The stacker's prediction for the rows of fold ``k`` comes from a stacker
fitted on the OOF rows of the other folds only, and its own settings (the logistic
regression's ``C``, or the number of LightGBM rounds) are chosen by an inner
cross-validation (``stack.inner_folds``, grouped by prompt) inside those rows: fold ``k``
takes no part in anything that predicts it. One temperature is then fitted on the
stacker's OOF predictions (:mod:`prefkit.calibration`). Test predictions come from the
stacker fitted on every OOF row, applied to the base models' test predictions and
calibrated with that temperature.

The stack's folder ``<output_dir>/<stack.name>`` gets ``oof.csv`` (calibrated), ``test.csv``,
``metrics.json``, ``reliability.png``, ``config.yaml``, ``stack.log`` and ``stacker.json`` (the fitted
stacker and temperature, :class:`SavedStack`, which a kernel applies to new test predictions); the submission is
written where ``stack.submission`` says (default ``submissions/<stack.name>/submission.csv``).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax

from prefkit.calibration import apply_temperature, fit_temperature, to_logits
from prefkit.config import RunConfig, StackConfig, build_config, save_config
from prefkit.errors import InputError
from prefkit.predictions import (
    OOF_FILE,
    TEST_FILE,
    atomic_write_csv,
    make_predictions,
    prob_matrix,
    read_predictions,
    write_predictions,
)
from prefkit.submission import default_submission_path, sample_submission_for

log = logging.getLogger("prefkit.stack")

C_GRID = (0.001, 0.01, 0.1, 1.0)
LGBM_PARAMS = {
    "objective": "multiclass",
    "num_class": 3,
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_data_in_leaf": 100,
    "lambda_l2": 1.0,
    "verbosity": -1,
    "deterministic": True,
    "force_col_wise": True,
}
LGBM_MAX_ROUNDS = 2000
STACKER_FILE = "stacker.json"  # the fitted stacker and temperature, to apply to new test predictions


@dataclass
class BaseRun:
    name: str
    dir: Path
    oof: pd.DataFrame
    test: pd.DataFrame | None


@dataclass
class StackResult:
    run_dir: Path
    oof: pd.DataFrame
    test: pd.DataFrame | None
    metrics: dict
    submission: Path | None = None


def read_runs(run_dirs) -> list[BaseRun]:
    """Each folder's ``oof.csv`` (required) and ``test.csv`` (if there); the model name is
    the one in the files, made unique with the folder name where two runs share it."""
    runs = []
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            raise InputError("run folder not found", file=d)
        oof = read_predictions(d / OOF_FILE)
        test = read_predictions(d / TEST_FILE) if (d / TEST_FILE).exists() else None
        name = str(oof["model"].iloc[0]) if len(oof) else d.name
        runs.append(BaseRun(name, d, oof, test))
    names = [r.name for r in runs]
    for r in runs:
        if names.count(r.name) > 1:
            r.name = f"{r.name}@{r.dir}"
    if len({r.dir.resolve() for r in runs}) < len(runs):
        raise InputError("the same run folder is given twice", file=runs[0].dir)
    return runs


def data_config_of(cfg: RunConfig, runs: list[BaseRun]) -> RunConfig:
    """``cfg``, with the data section of the first run's ``config.yaml`` when ``cfg`` names
    no training data (so ``prefkit stack RUN_DIR`` needs no config of its own)."""
    if cfg.data.dir or cfg.data.train:
        return cfg
    import yaml

    saved = runs[0].dir / "config.yaml"
    if not saved.exists():
        raise InputError("no training data: set data.dir or data.train (the run folder has no config.yaml)", file=runs[0].dir)
    tree = yaml.safe_load(saved.read_text()) or {}
    data = build_config({"data": tree.get("data", {})}, source=str(saved)).data
    return cfg.model_copy(update={"data": data})


def align_runs(runs: list[BaseRun], pairs: pd.DataFrame):
    """Rows every run predicted out of fold, in ``pairs`` order: ``(row index into pairs,
    folds, [probs of each run])``. Runs must agree on each row's fold."""
    pair_ids = pairs["id"].astype(str)
    known = set(pair_ids)
    common = set(known)
    for r in runs:
        ids = r.oof["id"].astype(str)
        unknown = ids[~ids.isin(known)]
        if len(unknown):
            raise InputError(f"OOF id {unknown.iloc[0]!r} is not in the training data ({len(unknown)} such ids)", file=r.dir / OOF_FILE, column="id")
        common &= set(ids)
    rows = np.flatnonzero(pair_ids.isin(common).to_numpy())
    if len(rows) == 0:
        raise InputError("the runs have no OOF row in common", file=runs[0].dir / OOF_FILE)
    ids = pair_ids.iloc[rows].to_numpy()
    probs, folds = [], None
    for r in runs:
        indexed = r.oof.set_index(r.oof["id"].astype(str)).loc[ids]
        f = indexed["fold"].to_numpy(dtype=int)
        if folds is None:
            folds, first = f, r
        elif not np.array_equal(f, folds):
            bad = int(np.flatnonzero(f != folds)[0])
            raise InputError(
                f"id {ids[bad]!r} is in fold {f[bad]} here but in fold {folds[bad]} in {first.dir / OOF_FILE}: "
                "stacked runs must share one fold map",
                file=r.dir / OOF_FILE,
                column="fold",
            )
        probs.append(run_matrix(indexed))
    if len(rows) < len(pairs):
        log.warning("stacking %d of %d training pairs: the others lack an OOF prediction in some run", len(rows), len(pairs))
    return rows, folds, probs


def run_fold_map(run: BaseRun, cfg: RunConfig, pairs: pd.DataFrame) -> pd.Series | None:
    """Fold per training id of the rows ``run`` was trained on: its ``folds.csv``, else the
    folds its saved config makes (on ``pairs`` when it names the same data); None when
    neither can be read."""
    folds_csv = run.dir / "folds.csv"
    if folds_csv.exists():
        try:
            table = pd.read_csv(folds_csv, dtype={"id": str})
            return pd.Series(table["fold"].to_numpy(dtype=int), index=table["id"].astype(str))
        except (ValueError, KeyError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
            raise InputError("not a readable fold map (columns id,fold)", file=folds_csv) from None
    saved = run.dir / "config.yaml"
    if not saved.exists():
        return None
    import yaml

    from prefkit.data.folds import folds_for

    try:
        run_cfg = build_config(yaml.safe_load(saved.read_text()) or {}, source=str(saved))
        run_pairs = pairs
        if run_cfg.data != cfg.data:
            from prefkit.data.run_data import load_run_data

            run_pairs, _ = load_run_data(run_cfg)
        folds = folds_for(run_cfg, run_pairs)
    except (InputError, OSError, ValueError, yaml.YAMLError):
        return None
    return pd.Series(np.asarray(folds, dtype=int), index=run_pairs["id"].astype(str).to_numpy())


def check_complete_folds(runs: list[BaseRun], pairs: pd.DataFrame, cfg: RunConfig, say) -> None:
    """Say how many rows each run covers; refuse a run whose OOF stops part-way through the
    folds it claims (a killed run's file, a truncated copy): the rows present would be
    stacked as if they were all."""
    for r in runs:
        claimed = sorted(set(r.oof["fold"].astype(int).tolist()) - {-1})
        tests = f", {len(r.test)} test rows" if r.test is not None else ", no test predictions"
        line = f"  {r.name}: OOF for {len(r.oof)} of {len(pairs)} training pairs (folds {', '.join(map(str, claimed))}){tests}"
        fold_of = run_fold_map(r, cfg, pairs)
        if fold_of is None:
            say(line + " (not checked against its folds: no folds.csv, and its config's data cannot be read)")
            continue
        have = set(r.oof["id"].astype(str))
        for k in claimed:
            expected = fold_of.index[fold_of.to_numpy() == k]
            missing = [i for i in expected if i not in have]
            if missing:
                raise InputError(
                    f"OOF stops part-way through fold {k}: {len(expected) - len(missing)} of its {len(expected)} rows "
                    f"(first missing id {missing[0]!r}); the run was cut short or the file truncated: finish or rerun it",
                    file=r.dir / OOF_FILE,
                )
        say(line)


def stacking_folds(folds: np.ndarray, sub: pd.DataFrame, cfg: RunConfig) -> np.ndarray:
    """The base models' folds; when the common OOF rows lie in one fold only (a model trained
    on some folds), new prompt-grouped folds within those rows keep the stacker's OOF honest."""
    if len(set(folds.tolist())) >= 2:
        return folds
    from prefkit.data.folds import make_folds

    log.warning("the common OOF rows lie in one fold: stacking with %d prompt-grouped folds within them", cfg.stack.inner_folds)
    return make_folds(sub, cfg.stack.inner_folds, cfg.folds.seed)


def align_tests(runs: list[BaseRun]) -> tuple[np.ndarray, list[np.ndarray]] | None:
    """Test ids (first run's order) and every run's test probabilities; None without tests."""
    have = [r.test is not None for r in runs]
    if not any(have):
        return None
    if not all(have):
        missing = runs[have.index(False)]
        raise InputError("no test.csv here, but other stacked runs have one", file=missing.dir)
    ids = runs[0].test["id"].astype(str).to_numpy()
    probs = []
    for r in runs:
        test_ids = r.test["id"].astype(str)
        if len(test_ids) != len(ids) or set(test_ids) != set(ids):
            raise InputError(f"test ids differ from those of {runs[0].dir / TEST_FILE}", file=r.dir / TEST_FILE, column="id")
        probs.append(run_matrix(r.test.set_index(test_ids).loc[ids]))
    return ids, probs


SCORE_COLUMNS = ("score_a", "score_b")  # an item scorer's s(A), s(B) (task item_scorer)


def run_matrix(preds: pd.DataFrame) -> np.ndarray:
    """One run's predictions as the stacker reads them: ``p_a, p_b, p_tie``, and the two item
    scores after them when the run is an item scorer (its files carry ``score_a, score_b``)."""
    if all(c in preds.columns for c in SCORE_COLUMNS):
        return np.column_stack([prob_matrix(preds), preds[list(SCORE_COLUMNS)].to_numpy(dtype=float)])
    return prob_matrix(preds)


def model_inputs(matrix: np.ndarray) -> np.ndarray:
    """A pair model's log-probabilities; an item scorer's score difference s(A) - s(B), both
    scores and its tie signal log P(tie) (an absolute model: its three probabilities are a
    function of these)."""
    if matrix.shape[1] == 3:
        return to_logits(matrix, eps=1e-7)
    s_a, s_b = matrix[:, 3], matrix[:, 4]
    return np.column_stack([s_a - s_b, s_a, s_b, np.log(np.clip(matrix[:, 2], 1e-7, None))])


def stack_inputs(probs: list[np.ndarray]) -> np.ndarray:
    """The stacker's inputs, each run's :func:`model_inputs` side by side (``probs``: each
    run's :func:`run_matrix`)."""
    return np.hstack([model_inputs(p) for p in probs])


def _inner_splits(groups: np.ndarray, n_splits: int):
    from sklearn.model_selection import GroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise InputError(f"{n_groups} prompt groups cannot fill stack.inner_folds={n_splits} inner folds")
    return list(GroupKFold(n_splits=n_splits).split(np.zeros(len(groups)), groups=groups))


class Stacker:
    """A multinomial logistic regression (``C`` by inner CV) or a small LightGBM (rounds
    by inner CV) on the base models' log-probabilities."""

    def __init__(self, cfg: StackConfig, seed: int = 42, num_threads: int = 0):
        self.cfg = cfg
        self.seed = seed
        self.num_threads = num_threads
        self.model = None
        self.choice: dict = {}

    def fit(self, x: np.ndarray, labels: np.ndarray, weights: np.ndarray, groups: np.ndarray) -> "Stacker":
        from prefkit.features.feature_model import hard_rows

        rows, y, w = hard_rows(labels, weights)
        x, g = x[rows], groups[rows]
        splits = _inner_splits(g, self.cfg.inner_folds)
        if self.cfg.method == "logistic":
            self._fit_logistic(x, y, w, splits)
        else:
            self._fit_lgbm(x, y, w, splits)
        return self

    def _fit_logistic(self, x, y, w, splits) -> None:
        from sklearn.linear_model import LogisticRegression

        from prefkit.metrics import log_loss

        def fit(c, idx):
            model = LogisticRegression(C=c, max_iter=1000)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter on near-separable toy sets
                model.fit(x[idx], y[idx], sample_weight=w[idx])
            return model

        def probs(model, xs):  # classes absent from a training split get probability 0
            out = np.zeros((len(xs), 3))
            out[:, model.classes_] = model.predict_proba(xs)
            return out

        scores = {}
        for c in C_GRID:
            losses = [log_loss(y[va], probs(fit(c, tr), x[va]), w[va]) for tr, va in splits]
            scores[c] = float(np.mean(losses))
        best = min(scores, key=scores.get)
        self.model = fit(best, np.arange(len(y)))
        self._predict = lambda xs: probs(self.model, xs)
        self.choice = {"C": best, "inner_log_loss": scores[best]}

    def _fit_lgbm(self, x, y, w, splits) -> None:
        from prefkit.features.feature_model import import_lightgbm

        lgb = import_lightgbm()

        params = {**LGBM_PARAMS, "seed": self.seed, "num_threads": self.num_threads}
        data = lgb.Dataset(x, y, weight=w, free_raw_data=False)
        cv = lgb.cv(params, data, num_boost_round=LGBM_MAX_ROUNDS, folds=splits, stratified=False,
                    callbacks=[lgb.early_stopping(50, verbose=False)])  # fmt: skip
        key = next(k for k in cv if k.endswith("-mean"))
        rounds = int(np.argmin(cv[key])) + 1
        self.model = lgb.train(params, data, num_boost_round=rounds)
        self._predict = self.model.predict
        self.choice = {"rounds": rounds, "inner_log_loss": float(np.min(cv[key]))}

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._predict(x), dtype=float)

    def params(self) -> dict:
        """The fitted model as plain JSON values (no pickles: the file loads under other
        scikit-learn / LightGBM versions, as in a Kaggle kernel)."""
        if self.cfg.method == "logistic":
            m = self.model
            return {"coef": m.coef_.tolist(), "intercept": m.intercept_.tolist(), "classes": m.classes_.tolist()}
        return {"lightgbm_model": self.model.model_to_string()}


@dataclass
class SavedStack:
    """A fitted stack as ``stacker.json`` keeps it: the final stacker (fitted on every OOF
    row), its temperature and the names of its input models, in the stacker's input order."""

    method: str
    inputs: list[str]
    temperature: float
    params: dict

    def save(self, stack_dir: Path) -> Path:
        path = Path(stack_dir) / STACKER_FILE
        path.write_text(json.dumps({"method": self.method, "inputs": self.inputs, "temperature": self.temperature, "params": self.params}) + "\n")
        return path

    @classmethod
    def load(cls, stack_dir: str | Path) -> "SavedStack":
        path = Path(stack_dir) / STACKER_FILE
        if not path.is_file():
            raise InputError(f"no {STACKER_FILE}: the stack was written by an older prefkit; run prefkit stack again", file=stack_dir)
        try:
            tree = json.loads(path.read_text())
            return cls(tree["method"], list(tree["inputs"]), float(tree["temperature"]), dict(tree["params"]))
        except (ValueError, KeyError, TypeError):
            raise InputError("not a readable stacker file (method, inputs, temperature, params)", file=path) from None

    def predict(self, probs: list[np.ndarray]) -> np.ndarray:
        """Calibrated stacked probabilities of the input models' probabilities (in ``inputs`` order)."""
        x = stack_inputs(probs)
        if self.method == "logistic":
            logits = x @ np.asarray(self.params["coef"]).T + np.asarray(self.params["intercept"])
            raw = np.zeros((len(x), 3))
            raw[:, np.asarray(self.params["classes"], dtype=int)] = softmax(logits, axis=1)
        else:
            from prefkit.features.feature_model import import_lightgbm

            raw = import_lightgbm().Booster(model_str=self.params["lightgbm_model"]).predict(x)
        return apply_temperature(np.asarray(raw, dtype=float), self.temperature)


def nested_oof(x, labels, weights, groups, folds, cfg: StackConfig, seed: int = 42, num_threads: int = 0):
    """Stacker OOF predictions: rows of fold ``k`` from a stacker fitted (inner CV included)
    on the other folds' rows only. Returns ``(probs, per-fold choices)``."""
    oof = np.full((len(x), 3), np.nan)
    per_fold = []
    for k in sorted(set(folds.tolist())):
        tr, va = folds != k, folds == k
        stacker = Stacker(cfg, seed + k, num_threads).fit(x[tr], labels[tr], weights[tr], groups[tr])
        oof[va] = stacker.predict_proba(x[va])
        per_fold.append({"fold": int(k), "n": int(va.sum()), **stacker.choice})
    return oof, per_fold


def stack_runs(cfg: RunConfig, run_dirs, pairs: pd.DataFrame | None = None, force: bool = False, echo=None) -> StackResult:
    """Stack the runs in ``run_dirs`` (see the module docstring). ``pairs`` (the training
    pairs, for labels and groups) default to ``cfg.data`` or, when that names no data, the
    data of the first run's saved config. The stack folder is written as one unit
    (:class:`prefkit.rundir.RunFolder`), the submission after it; ``echo`` gets the lines
    a user must see (rows each base model covers)."""
    from prefkit.rundir import RunFolder, check_output_path

    runs = read_runs(run_dirs)
    stack_dir = Path(cfg.output_dir) / cfg.stack.name
    for r in runs:
        if r.dir.resolve() == stack_dir.resolve() or stack_dir.resolve() in r.dir.resolve().parents:
            raise InputError(f"the stack would overwrite its own input run; choose another stack.name than {cfg.stack.name!r}", file=r.dir)
    cfg = data_config_of(cfg, runs)
    if pairs is None:
        from prefkit.data.run_data import load_run_data

        pairs, _ = load_run_data(cfg)
    pairs = pairs.reset_index(drop=True)
    say = echo or (lambda line: None)
    check_complete_folds(runs, pairs, cfg, say)
    submission_out, sample = None, None
    if any(r.test is not None for r in runs):
        sample = sample_submission_for(cfg)
        if sample is not None:
            inputs = [sample, *(r.dir / f for r in runs for f in (OOF_FILE, TEST_FILE))]
            submission_out = check_output_path(cfg.stack.submission or default_submission_path(cfg.stack.name),
                                               inputs, kind="submission", force=force, option="stack.submission")  # fmt: skip
    with RunFolder(stack_dir, kind="stack", force=force).open() as folder:
        result, table = _stack_into(folder.dir, cfg, runs, pairs, sample, submission_out, say)
    result.run_dir = stack_dir
    if table is not None:
        result.submission = atomic_write_csv(table, submission_out)
        result.metrics["submission"] = str(result.submission)
        log.info("submission: %s", result.submission)
    return result


def _stack_into(stack_dir: Path, cfg: RunConfig, runs: list[BaseRun], pairs: pd.DataFrame, sample, submission_out, say):
    """Fit, calibrate and write the stack into ``stack_dir``; the submission table (built
    and checked, not yet written) when there are test predictions and a sample."""
    from prefkit.features.feature_model import run_logging, training_labels
    from prefkit.metrics import summary
    from prefkit.plots import reliability_diagram
    from prefkit.submission import build_submission, check_submission, read_sample_submission

    handler = run_logging(stack_dir, "stack.log")
    table = None
    try:
        rows, folds, probs = align_runs(runs, pairs)
        say(f"stacking {len(rows)} of {len(pairs)} training pairs (the rows every run predicted out of fold)")
        tests = align_tests(runs)
        sub = pairs.iloc[rows]
        folds = stacking_folds(folds, sub, cfg)
        labels = training_labels(sub)
        weights = sub["weight"].to_numpy(dtype=float)
        groups = sub["group"].astype(str).to_numpy()
        x = stack_inputs(probs)
        sc = cfg.stack
        threads = cfg.features.num_threads
        log.info("stacking %s on %d OOF rows (%s, inner folds %d)", [r.name for r in runs], len(rows), sc.method, sc.inner_folds)

        raw_oof, per_fold = nested_oof(x, labels, weights, groups, folds, sc, cfg.seed, threads)
        temperature = fit_temperature(to_logits(raw_oof), labels, weights) if sc.calibration == "temperature" else 1.0
        oof = apply_temperature(raw_oof, temperature)
        final = Stacker(sc, cfg.seed, threads).fit(x, labels, weights, groups)
        SavedStack(sc.method, [r.name for r in runs], float(temperature), final.params()).save(stack_dir)
        base_scores = {r.name: summary(labels, p[:, :3], weights) for r, p in zip(runs, probs)}
        for name, s in base_scores.items():
            log.info("base %s: OOF log loss %.4f", name, s["log_loss"])
        metrics = {
            "model": sc.name,
            "kind": "stack",
            "method": sc.method,
            "inputs": [{"name": r.name, "dir": str(r.dir), **base_scores[r.name]} for r in runs],
            "oof_uncalibrated": summary(labels, raw_oof, weights),
            "oof": summary(labels, oof, weights),
            "temperature": temperature,
            "folds": per_fold,
            "final": final.choice,
            "n_train_pairs": len(pairs),
        }
        log.info("stack OOF log loss %.4f (before temperature %.4f, T=%.3f)",
                 metrics["oof"]["log_loss"], metrics["oof_uncalibrated"]["log_loss"], temperature)  # fmt: skip

        save_config(cfg, stack_dir)
        oof_preds = make_predictions(sub["id"], oof, sc.name, folds)
        write_predictions(oof_preds, stack_dir / OOF_FILE)
        reliability_diagram(labels, oof, stack_dir / "reliability.png", title=f"{sc.name} OOF (calibrated, T={temperature:.3f})")

        test_preds = None
        if tests is None:
            metrics["no_submission"] = "the stacked runs have no test predictions (test.csv): they were trained without a test set"
        else:
            test_ids, test_probs = tests
            test = apply_temperature(final.predict_proba(stack_inputs(test_probs)), temperature)
            test_preds = make_predictions(test_ids, test, sc.name, -1)
            write_predictions(test_preds, stack_dir / TEST_FILE)
            metrics["n_test"] = len(test_ids)
            if sample is None:
                metrics["no_submission"] = "no sample_submission.csv (set data.sample_submission, or data.dir to a folder holding one)"
            else:
                sample_table = read_sample_submission(sample)
                table = build_submission(test_preds, sample_table, cfg.stack.clip, source=f"{sample} vs the stacked test predictions")
                check_submission(table, sample_table, source=str(submission_out))
        if "no_submission" in metrics:
            log.warning("no submission written: %s", metrics["no_submission"])
        metrics["submission"] = None
        (stack_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    finally:
        logging.getLogger("prefkit").removeHandler(handler)
        handler.close()
    return StackResult(stack_dir, oof_preds, test_preds, metrics, None), table
