"""``prefkit judge train`` and ``prefkit judge evaluate``: a generative judge trained with
GRPO (TRL) and its sampled-verdict evaluation. TRL and torch load only when a command runs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from prefkit.cli_app import ConfigOpt, OverridesArg, resolve_config
from prefkit.commands.judge import judge_app

ForceOpt = Annotated[bool, typer.Option("--force", help="Write into an existing folder that is not this command's own output.")]


@judge_app.command("train")
def judge_train_cmd(config: ConfigOpt = None, overrides: OverridesArg = None, force: ForceOpt = False) -> None:
    """Train a generative judge with GRPO (TRL) on labelled pairs of any format prefkit reads.

    The judge writes <analysis>...</analysis><preference>A|B|tie</preference>. Rewards by name with weights (grpo.rewards: correct, strength, format, consistency); every pair asked in both orders (grpo.both_orders). Settings: model.* (a causal LM with a chat template; model.lora.* for adapters), data.* (data.train, data.format), train.* (lr, max_steps, batch_size = completions per step, grad_accum, device), grpo.* (num_generations, beta, max_prompt_length, max_completion_length, use_vllm). Start from configs/judge/grpo.yaml.

    Writes <output_dir>/<name>/: adapter/, judge.json, log_history.json, config.yaml, run.json. Needs TRL (pip install trl, or the judge extra of prefkit).
    """
    cfg = resolve_config(config, overrides)
    from prefkit.judge.grpo import train_judge

    result = train_judge(cfg, force=force, echo=lambda text: typer.echo(text, err=True))
    rewards = "" if result.reward_first is None else f", mean reward {result.reward_first:.3f} (first log) -> {result.reward_last:.3f} (last)"
    typer.echo(f"judge trained: {result.steps} GRPO steps in {result.seconds:.0f} s{rewards} -> {result.run_dir}")


@judge_app.command("evaluate")
def judge_evaluate_cmd(
    data: Annotated[str, typer.Argument(help="Labelled pairs to judge (a file or a Kaggle-layout folder).", show_default=False)],
    out: Annotated[str, typer.Option("--out", help="Folder for metrics.json, predictions.csv, completions.jsonl.")],
    run: Annotated[
        Optional[str], typer.Option("--run", help="A `prefkit judge train` run folder; without it, model.name_or_path is judged as it is.")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="The data's pair format (see prefkit read --help).")] = "kaggle",
    max_pairs: Annotated[Optional[int], typer.Option("--max-pairs", min=1, help="Judge a seeded random subset of this many pairs.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the subset and of sampling.")] = 0,
    config: ConfigOpt = None,
    overrides: OverridesArg = None,
    force: ForceOpt = False,
) -> None:
    """Judge labelled pairs by sampled verdicts in both orders: accuracy (overall, by label, by preference strength), position-flip rate, unparseable share, 3-way log loss.

    grpo.eval_samples completions per pair and order at grpo.eval_temperature; the verdict frequencies of both orders plus grpo.eval_smoothing give P(A), P(B), P(tie).
    """
    cfg = resolve_config(config, overrides)
    from prefkit.data.formats import read_pairs
    from prefkit.judge.grpo import evaluate_judge, load_judge_model, load_trained_judge, write_evaluation
    from prefkit.rundir import check_folder_owner

    check_folder_owner(out, "judge_eval", force=force, what="--out folder")
    pairs = read_pairs(data, format)
    if max_pairs and len(pairs) > max_pairs:
        pairs = pairs.sample(n=max_pairs, random_state=seed).reset_index(drop=True)
    if run:
        model, tokenizer, cfg = load_trained_judge(run, cfg)
    else:
        model, tokenizer = load_judge_model(cfg)
    result = evaluate_judge(model, tokenizer, pairs, cfg, seed=seed)
    write_evaluation(result, out, force=force)
    m = result.metrics
    typer.echo(
        f"accuracy={m['accuracy']:.4f} majority_accuracy={m['majority_accuracy']:.4f} flip_rate={m['flip_rate']:.4f} "
        f"unparseable={m['unparseable']:.4f} log_loss={m['log_loss']:.4f} pairs={m['pairs']} -> {out}"
    )
