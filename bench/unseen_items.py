"""Scoring texts never compared: a Siamese text scorer (task item_scorer) trained on the
comparisons among 80% of the documents predicts the comparisons among the other 20%.

A Bradley-Terry fit gives a score only to documents it saw compared, so it cannot predict
these comparisons at all; the reference is the constant (the training comparisons' outcome
rates). Run through bench/unseen_items.sh; the last line is
    heldout_logloss_text_scorer=<v> heldout_logloss_constant=<v>
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def split_documents(table, share: float, seed: int):
    """(comparisons among the training documents, comparisons among the held-out ones, held-out doc ids)."""
    docs = np.unique(np.concatenate([table["item_a"].astype(str), table["item_b"].astype(str)]))
    rng = np.random.default_rng(seed)
    held = set(rng.choice(docs, size=int(round(share * len(docs))), replace=False))
    in_a, in_b = table["item_a"].astype(str).isin(held), table["item_b"].astype(str).isin(held)
    return table[~in_a & ~in_b].reset_index(drop=True), table[in_a & in_b].reset_index(drop=True), held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comparisons")
    parser.add_argument("--docs", required=True)
    parser.add_argument("--out", default="runs/bench_unseen_items")
    parser.add_argument("--model", default="checkpoints/pretrained/all-MiniLM-L6-v2")
    parser.add_argument("--held-out-share", type=float, default=0.2)
    parser.add_argument("--max-train-pairs", type=int, default=3000, help="comparisons the scorer trains on (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args, overrides = parser.parse_known_args()  # the rest: dotted config overrides (train.epochs=2, ...)
    unknown = [o for o in overrides if "=" not in o or o.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    torch.set_num_threads(args.threads)

    from prefkit.config import load_config
    from prefkit.data.formats import read_input
    from prefkit.infer.predict import Predictor
    from prefkit.metrics import class_prior, log_loss
    from prefkit.schema import label_matrix
    from prefkit.train.engine import train_folds

    table = read_input(args.comparisons, "comparisons", docs_path=args.docs).table
    train, held, held_docs = split_documents(table, args.held_out_share, args.seed)
    n_docs = len(set(table["item_a"].astype(str)) | set(table["item_b"].astype(str)))
    print(f"{len(table)} comparisons of {n_docs} documents; "
          f"{len(held_docs)} documents held out: {len(train)} comparisons among the others, {len(held)} among them")  # fmt: skip
    if len(held) == 0:
        raise SystemExit("no comparison among the held-out documents: raise --held-out-share")
    rng = np.random.default_rng(args.seed + 1)
    if args.max_train_pairs and len(train) > args.max_train_pairs:
        train = train.iloc[np.sort(rng.choice(len(train), args.max_train_pairs, replace=False))].reset_index(drop=True)
    folds = np.where(rng.random(len(train)) < 0.1, 0, -1)  # 10% validate (early stopping), the rest always trains

    cfg = load_config(None, [
        "task=item_scorer", "name=text_scorer", f"output_dir={args.out}", f"model.name_or_path={args.model}",
        "scorer.with_prompt=false", "scorer.ties=half", "render.max_length=128", "train.epochs=1", "train.lr=5e-5",
        "train.head_lr=1e-3", "train.batch_size=16", "train.eval_batch_size=64", "train.evals_per_epoch=2",
        f"seed={args.seed}", *overrides,
    ])  # fmt: skip
    t0 = time.perf_counter()
    train_folds(cfg, train, folds)
    train_seconds = time.perf_counter() - t0

    # the held-out documents' comparisons through the checkpoint: s(doc_a) - s(doc_b) of texts never seen
    predictor = Predictor(cfg.run_dir / "fold_0" / "checkpoint", device="cpu")
    t0 = time.perf_counter()
    preds = predictor.predict(held, progress=True)[:, :3]
    predict_seconds = time.perf_counter() - t0
    labels, weights = label_matrix(held), held["weight"].to_numpy(dtype=float)
    rates = class_prior(label_matrix(train), train["weight"])
    scorer = log_loss(labels, preds, weights)
    constant = log_loss(labels, np.tile(rates, (len(held), 1)), weights)
    print(f"text scorer: trained on {len(train)} comparisons in {train_seconds:.0f}s; {len(held)} held-out comparisons "
          f"predicted in {predict_seconds:.0f}s; accuracy {np.mean(preds[:, :2].argmax(1) == labels[:, :2].argmax(1)):.3f}")  # fmt: skip
    print("the Bradley-Terry fit (prefkit scores fit) has no score for a document it never saw compared: it cannot predict these")
    print(f"heldout_logloss_text_scorer={scorer:.4f} heldout_logloss_constant={constant:.4f}")


if __name__ == "__main__":
    main()
