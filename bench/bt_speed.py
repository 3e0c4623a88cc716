"""Bradley-Terry speed: prefkit against choix (``ilsr_pairwise``) and evalica
(``bradley_terry``) on one synthetic data set (default 1M comparisons over 10k items, random
pairs, outcomes drawn from known BT scores, no ties, fixed seed).

Every method fits plain BT by maximum likelihood with its default settings and no prior
(choix ``alpha=0``, evalica's defaults; prefkit ``fit(..., l2=0)``, which with no ties in
the data is plain BT for every tie model). Each solution is scored with the same function,
the mean BT log-likelihood over the comparisons. Times: the solver call on data already in
the method's input form (prefkit: building its ``Comparisons`` arrays is included); prefkit's
figure is the median of 3 runs, each peer runs once (they take minutes).

Needs ``pip install -r requirements-bench.txt`` (choix, evalica: benchmark-only).
Last line: ``speedup_vs_choix=<v> speedup_vs_evalica=<v> loglik_gap=<v>`` (prefkit's mean
log-likelihood minus the best peer's; >= 0 means prefkit's fit is at least as good).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.special import log_expit


def mean_loglik(scores: np.ndarray, winner: np.ndarray, loser: np.ndarray) -> float:
    return float(log_expit(scores[winner] - scores[loser]).mean())


def timed(fn):
    """(result, wall seconds); the process's CPU seconds are printed beside it, as the wall
    time of a shared machine depends on its load."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    wall = time.perf_counter() - start
    print(f"  ({wall:.3f} s wall, {time.process_time() - cpu:.3f} s CPU)")
    return out, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-items", type=int, default=10_000)
    parser.add_argument("--n-comparisons", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-choix", action="store_true", help="choix takes about two minutes at the default size")
    args = parser.parse_args()

    from prefkit.scores.bt import fit
    from prefkit.scores.data import Comparisons, random_pairs, simulate_comparisons

    rng = np.random.default_rng(args.seed)
    truth = rng.normal(size=args.n_items)
    i, j = random_pairs(args.n_items, args.n_comparisons, rng)
    sim = simulate_comparisons(truth, i, j, rng=rng)
    first_won = sim.y[:, 0] == 1
    winner, loser = np.where(first_won, i, j), np.where(first_won, j, i)
    print(f"data: {args.n_comparisons} comparisons over {args.n_items} items (seed {args.seed}); "
          f"truth mean loglik {mean_loglik(truth, winner, loser):.6f}")

    def run_prefkit():
        comp = Comparisons(sim.items, i, j, sim.y)
        return fit(comp, ties="davidson", l2=0.0, se=False)

    runs = [timed(run_prefkit) for _ in range(3)]
    result = runs[0][0]
    t_prefkit = float(np.median([t for _, t in runs]))
    ll_prefkit = mean_loglik(result.scores, winner, loser)
    print(f"prefkit: {t_prefkit:.3f} s (median of 3: {', '.join(f'{t:.3f}' for _, t in runs)}), "
          f"{result.n_iter} Newton steps, mean loglik {ll_prefkit:.8f}")

    peers = {}
    import evalica

    xs, ys = winner.tolist(), loser.tolist()
    outcome = [evalica.Winner.X] * len(xs)
    res, t = timed(lambda: evalica.bradley_terry(xs, ys, outcome))
    pi = res.scores.reindex(range(args.n_items)).to_numpy(dtype=float)
    peers["evalica"] = (t, mean_loglik(np.log(pi), winner, loser))
    print(f"evalica: {t:.3f} s, {res.iterations} iterations, mean loglik {peers['evalica'][1]:.8f}")

    if not args.skip_choix:
        import choix

        data = list(zip(xs, ys))
        params, t = timed(lambda: choix.ilsr_pairwise(args.n_items, data))
        peers["choix"] = (t, mean_loglik(np.asarray(params), winner, loser))
        print(f"choix: {t:.3f} s, mean loglik {peers['choix'][1]:.8f}")

    best_peer = max(ll for _, ll in peers.values())
    speedup = {name: t / t_prefkit for name, (t, _) in peers.items()}
    print(
        f"speedup_vs_choix={speedup.get('choix', float('nan')):.1f} speedup_vs_evalica={speedup['evalica']:.1f} "
        f"loglik_gap={ll_prefkit - best_peer:.3g}"
    )


if __name__ == "__main__":
    main()
