"""The CPU pipeline: ``train-features``, ``stack``, ``score``, ``validate-submission``, ``demo``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer

from prefkit.cli_app import ConfigOpt, OverridesArg, app, resolve_config
from prefkit.errors import InputError

OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*=")  # a dotted override, not a folder
# The demo's settings over the defaults (configs/demo.yaml holds the same for step-by-step runs).
DEMO_SETTINGS = ["features.learning_rate=0.06", "features.early_stopping_rounds=50"]


ForceOpt = Annotated[
    bool, typer.Option("--force", help="Write into an existing folder that is not this command's own output (its other files are kept).")
]


@app.command("train-features")
def train_features_cmd(config: ConfigOpt = None, overrides: OverridesArg = None, force: ForceOpt = False) -> None:
    """Train the LightGBM feature model on every fold: OOF + test predictions.

    Writes runs/<name>/{oof.csv,test.csv,folds.csv,config.yaml,metrics.json,reliability.png,
    importance.csv,train.log,models/,run.json} as one unit: a failed or killed run leaves the previous one."""
    cfg = resolve_config(config, overrides)
    from prefkit.features.feature_model import train_feature_model

    result = train_feature_model(cfg, force=force)
    oof = result.metrics["oof"]
    typer.echo(f"OOF log loss {oof['log_loss']:.4f}, accuracy {oof['accuracy']:.4f} ({oof['n']} pairs) -> {result.run_dir}")
    if result.test is None:
        typer.echo(
            "no test set (data.test, or test.csv in data.dir): no test predictions written, "
            "so a stack of this run writes no submission",
            err=True,
        )


@app.command("stack")
def stack_cmd(
    args: Annotated[
        list[str],
        typer.Argument(
            help="Run folders with oof.csv (and test.csv) to stack, then dotted overrides (key=value).",
            metavar="RUN_DIR",
            show_default=False,
        ),
    ],
    config: ConfigOpt = None,
    force: ForceOpt = False,
) -> None:
    """Stack run folders (nested CV), calibrate (temperature) and write the submission.

    Writes <output_dir>/<stack.name>/{oof.csv,test.csv,metrics.json,reliability.png,config.yaml}
    and the submission (stack.submission, default submissions/<stack.name>/submission.csv).
    Training labels come from data.* or, when unset, from the first run's config.yaml."""
    overrides = [a for a in args if OVERRIDE.match(a)]
    run_dirs = [a for a in args if not OVERRIDE.match(a)]
    if not run_dirs:
        raise InputError("no run folder given: prefkit stack RUN_DIR [RUN_DIR...] [key=value...]")
    cfg = resolve_config(config, overrides)
    from prefkit.stacking import stack_runs

    result = stack_runs(cfg, run_dirs, force=force, echo=typer.echo)
    m = result.metrics
    for base in m["inputs"]:
        typer.echo(f"  {base['name']}: OOF log loss {base['log_loss']:.4f}")
    typer.echo(
        f"stack OOF log loss {m['oof']['log_loss']:.4f} (before temperature {m['oof_uncalibrated']['log_loss']:.4f}, "
        f"T={m['temperature']:.3f}) -> {result.run_dir}"
    )
    if result.submission:
        typer.echo(f"submission: {result.submission}")
    else:
        typer.echo(f"no submission written: {m.get('no_submission', 'no test predictions')}", err=True)


def _score_lines(scores: dict) -> list[str]:
    return [
        f"log loss        {scores['log_loss']:.5f}",
        f"accuracy        {scores['accuracy']:.4f}",
        f"accuracy A/B/tie {scores['acc_a']:.4f} / {scores['acc_b']:.4f} / {scores['acc_tie']:.4f}",
        f"rows            {scores['n']}",
        "log_loss={log_loss:.6f} accuracy={accuracy:.6f} acc_a={acc_a:.6f} acc_b={acc_b:.6f} acc_tie={acc_tie:.6f} n={n}".format(**scores),
    ]


@app.command("score")
def score_cmd(
    predictions: Annotated[str, typer.Argument(help="A prediction file (id,p_a,p_b,p_tie,...) or a submission.", show_default=False)],
    solution: Annotated[str, typer.Argument(help="The solution (or a labelled Kaggle CSV): id + winner columns.", show_default=False)],
    plot: Annotated[Optional[str], typer.Option("--plot", help="Write a reliability diagram PNG here.")] = None,
) -> None:
    """Log loss, accuracy and per-class accuracy of PREDICTIONS against SOLUTION."""
    from prefkit.submission import score_file

    scores, labels, probs = score_file(predictions, solution)
    for line in _score_lines(scores):
        typer.echo(line)
    if plot:
        from prefkit.plots import reliability_diagram

        reliability_diagram(labels, probs, plot, title=f"{Path(predictions).name} vs {Path(solution).name}")
        typer.echo(f"reliability diagram: {plot}")


@app.command("validate-submission")
def validate_submission_cmd(
    submission: Annotated[str, typer.Argument(help="Submission CSV to check.", show_default=False)],
    sample_submission: Annotated[str, typer.Argument(help="The competition's sample_submission.csv.", show_default=False)],
) -> None:
    """Check SUBMISSION against SAMPLE_SUBMISSION: columns, ids and order, probabilities."""
    from prefkit.submission import validate_submission

    table = validate_submission(submission, sample_submission)
    typer.echo(f"ok: {submission} is a valid submission ({len(table)} rows)")


@app.command("demo")
def demo_cmd(
    out: Annotated[str, typer.Option("--out", help="Folder for the demo's data and runs (the submission: submissions/demo/).")] = "runs/demo",
    n_train: Annotated[int, typer.Option("--n-train", min=50, help="Synthetic training pairs.")] = 4000,
    n_test: Annotated[int, typer.Option("--n-test", min=10, help="Synthetic test pairs.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic data and the models.")] = 0,
    config: ConfigOpt = None,
    overrides: OverridesArg = None,
) -> None:
    """Synthetic arena -> feature model -> stack -> submission -> score against the truth.

    Prints the class-prior, pipeline and Bayes-optimal test log loss (the synthetic data
    knows the true probabilities). CPU only; a few minutes at the default size."""
    from prefkit.data.synthetic import write_synthetic_arena
    from prefkit.features.feature_model import train_feature_model
    from prefkit.stacking import stack_runs
    from prefkit.submission import default_submission_path, score_file, validate_submission

    root = Path(out)
    data_dir = root / "data"
    info = write_synthetic_arena(data_dir, n_train=n_train, n_test=n_test, seed=seed)
    typer.echo(f"synthetic arena: {info.n_train} train / {info.n_test} test pairs in {data_dir}")
    settings = [
        *([] if config else DEMO_SETTINGS),
        "name=features",
        f"output_dir={root}",
        f"data.dir={data_dir}",
        f"seed={seed}",
        f"stack.submission={default_submission_path('demo')}",  # beside every other submission
        *(overrides or []),
    ]
    cfg = resolve_config(config, settings)
    features = train_feature_model(cfg)
    typer.echo(f"feature model: OOF log loss {features.oof_log_loss:.4f}")
    stacked = stack_runs(cfg, [features.run_dir])
    typer.echo(f"stack: OOF log loss {stacked.metrics['oof']['log_loss']:.4f} (T={stacked.metrics['temperature']:.3f})")
    if stacked.submission is None:  # pragma: no cover - the synthetic folder always has a sample submission
        raise InputError("no submission written", file=data_dir)
    validate_submission(stacked.submission, data_dir / "sample_submission.csv")
    scores, _, _ = score_file(stacked.submission, data_dir / "solution.csv")
    rows = [
        ("class prior", info.prior_log_loss),
        ("pipeline (test)", scores["log_loss"]),
        ("Bayes-optimal", info.bayes_log_loss),
    ]
    typer.echo(f"\nsubmission: {stacked.submission} (valid)")
    typer.echo(f"{'test log loss':<18}{'value':>8}")
    for name, value in rows:
        typer.echo(f"{name:<18}{value:>8.4f}")
    typer.echo(f"{'gap to Bayes':<18}{scores['log_loss'] - info.bayes_log_loss:>8.4f}")
    typer.echo(f"(pipeline accuracy {scores['accuracy']:.4f}; Bayes log loss on the sampled labels {info.bayes_log_loss_realised:.4f})")
    _demo_leaderboard(data_dir / "train.csv", info.model_skill, root / "leaderboard.csv")


def _demo_leaderboard(train_csv: Path, model_skill: dict[str, float], out: Path) -> None:
    """The synthetic models' leaderboard fitted from the demo's own battles, beside their true skill."""
    from prefkit.scores.leaderboard import arena_leaderboard, leaderboard_lines

    table, rho, fitted = arena_leaderboard(train_csv, model_skill)
    table.to_csv(out, index=False)
    typer.echo(f"\nleaderboard from the {fitted.n_comparisons:.0f} training battles (model_a/model_b) -> {out}")
    for line in leaderboard_lines(table, rho, fitted):
        typer.echo(line)
