"""Draw docs/dqn-on-policy-returns.png from docs/dqn-on-policy-runs.csv (the PQN / PPO runs on decoded planes).

Lines are training returns (mean of the last 100 games), dots the frozen 100-episode evals of the parameters at
that point. Left: the 10M-frame runs, one colour per setting; right: the longer runs.

    python experiments/plot_on_policy_runs.py [--csv docs/dqn-on-policy-runs.csv] [--out docs/dqn-on-policy-returns.png]
"""
from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "docs"

# setting (run name without its "-s<seed>") -> (legend label, colour, line style); drawn in this order
SETTINGS = {
    "pqn-ego-k3-e128": ("PQN --preset pqn-ego-e128 (pqn-ego, 128 envs x 32-step rollouts; the default)", "navy", "-"),
    "pqn-ego-k3-e128-seg25": ("pqn-ego-e128, one segment (--checkpoint-every 2500000)", "tab:orange", "-"),
    "pqn-ego-k3": ("PQN --preset pqn-ego (egocentric planes, stack 3, 8 envs x 128-step rollouts)", "darkgreen", "-"),
    "pqn-ego-k3-ep2": ("pqn-ego, 2 epochs per rollout", "limegreen", "-."),
    "pqn-ego-k3-qr32": ("pqn-ego, 32-quantile head", "darkviolet", "--"),
    "pqn-bilinear-k3": ("PQN --preset pqn (bilinear planes, stack 3)", "tab:red", "-"),
    "pqn-bilinear-k3-e32": ("pqn, 32 envs x 32-step rollouts", "tab:purple", "-"),
    "pqn-bilinear-k4": ("pqn, stack 4", "tab:brown", "-"),
    "pqn-bilinear-k3-wide": ("pqn, CNN (32, 64) + 512", "tab:gray", "-"),
    "pqn-bilinear-k3-lr5e4": ("pqn, step size 5e-4", "gold", "--"),
    "pqn-bilinear-k3-lam08": ("pqn, lambda 0.8", "tab:green", "--"),
    "pqn-bilinear-k3-unclip": ("pqn, score / 33 (not clipped)", "black", "-"),
    "pqn-bilinear-k3-ep8": ("pqn, 8 epochs per rollout", "tab:blue", "-."),
    "pqn-bilinear-k3-duel": ("pqn, dueling head", "tab:olive", "-."),
    "pqn-bilinear-k3-mb8": ("pqn, 8 minibatches", "tab:cyan", ":"),
    "pqn-bilinear-k3-s122": ("pqn, convolutions (16, 32, 32) at strides (1, 2, 2)", "tab:purple",
                             ":"),
    "pqn-bilinear-k3-eps05": ("pqn, trained at epsilon 0.05 (0.01 in pqn)", "tab:brown",
                              ":"),
    "pqn-bilinear-k3-symlog": ("pqn, symlog of the score (not its sign)", "black", ":"),
    "pqn-bilinear-k3-convln": ("pqn, LayerNorm after each convolution", "tab:pink", ":"),
    "pqn-box-k3": ("PQN, box planes (38 x 40 cells of 4 x 5 px), CNN (16, 32, 32); seed 2 stopped at 5.7M", "tab:gray",
                   ":"),
    "ppo-bilinear-k3": ("PPO on bilinear planes (stack 3)", "tab:orange", "--"),
    "pqn-bilinear-k2": ("PQN, bilinear planes, stack 2", "tab:pink", "--"),
    "pqn-planes": ("PQN on planes (stack 2), compiled-iteration form", "tab:cyan", "-"),
    "pqn-planes-learner": ("PQN on planes (stack 2)", "tab:blue", "-"),
    "pqn-mb8": ("PQN on planes, 8 minibatches", "tab:olive", "--"),
    "ppo-planes": ("PPO on planes", "tab:orange", "-"),
    "pqn-ego-k3-40m": ("PQN --preset pqn-ego, schedules over 40M", "darkgreen", "-"),
    "pqn-ego-k3-lr80m": ("pqn-ego, step size to 0 over 80M frames", "darkviolet", "--"),
    "pqn-ego-k3-e128-40m": ("pqn-ego-40m, 500k-step segments (until 2026-12-05)", "tab:orange", "-"),
    "pqn-ego-k3-e128-40m-seg25": ("PQN --preset pqn-ego-40m (2.5M-step segments)", "navy", "-"),
    "pqn-bilinear-k3-40m": ("PQN --preset pqn, schedules over 40M", "tab:red", "-"),
    "pqn-planes-40m": ("PQN on planes (stack 2), compiled-iteration form", "tab:green", "-"),
}
EVAL_POLICIES = ("epsilon 0.05", "greedy-eps0.05", "sampled")  # the dots drawn: the first a run has
GOALS = ((663, "goal at 10M frames: 663", "--"), (1300, "goal at 40M frames: 1,300", "-."))


def read_runs(path: Path) -> dict[str, dict]:
    """run -> {"setting", "seed", "total_frames", "train": [(frames, return)], "eval": [(frames, return)]}."""
    runs: dict[str, dict] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            run = runs.setdefault(row["run"], dict(setting=re.sub(r"-s\d+$", "", row["run"]), seed=int(row["seed"]),
                                                   total_frames=int(row["total_frames"]), train=[], eval=[]))
            point = (int(row["frames"]) / 1e6, float(row["return_mean"]))
            if row["kind"] == "eval":  # PQN: "epsilon 0.05"; PPO: a row per policy
                run.setdefault("policies", defaultdict(list))[row["eval_policy"]].append(point)
            else:
                run[row["kind"]].append(point)
    for run in runs.values():  # PPO's dots: ε 0.05 on its greedy policy (as PQN's) where measured, else sampled
        policies = run.pop("policies", {})
        run["eval"] = next((policies[name] for name in EVAL_POLICIES if name in policies), [])
    return runs


def draw(runs: dict[str, dict], out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 8.5), gridspec_kw=dict(width_ratios=[1.4, 1]))
    panels = ((axes[0], "10M-frame runs", lambda r: r["total_frames"] <= 10_000_100),
              (axes[1], "runs of 40M frames and more", lambda r: r["total_frames"] > 10_000_100))
    for ax, title, keep in panels:
        seeds = defaultdict(list)
        for run in runs.values():
            if keep(run):
                seeds[run["setting"]].append(run)
        for setting, (label, colour, style) in SETTINGS.items():
            group = sorted(seeds.pop(setting, []), key=lambda r: r["seed"])
            for i, run in enumerate(group):
                names = ", ".join(str(r["seed"]) for r in group)
                ax.plot(*zip(*run["train"]), color=colour, ls=style, lw=1.2,
                        label=f"{label}, seed{'s' if len(group) > 1 else ''} {names}" if i == 0 else None)
                if run["eval"]:
                    ax.plot(*zip(*run["eval"]), "o", color=colour, ms=6, zorder=3)
        if seeds:
            raise ValueError(f"no label for the runs of {sorted(seeds)}: add them to SETTINGS")
        for value, text, style in GOALS:
            ax.axhline(value, color="k", ls=style, lw=1.2)
            ax.text(0.02, value + 12, text, transform=ax.get_yaxis_transform(), fontsize=9)
        ax.axhline(285, color="gray", ls=":", lw=1)
        ax.text(0.98, 250, "always FIRE 285", transform=ax.get_yaxis_transform(), ha="right", fontsize=9,
                color="gray")
        ax.set(title=title, xlabel="frames (millions)", ylim=(0, 2000), xlim=(0, None))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.1), labelspacing=0.3)  # below the axes
    axes[0].set_ylabel("episode return")
    fig.suptitle("SpaceInvaders from decoded RAM planes (2-core CPU): lines = training return (last 100 games),\n"
                 "dots = frozen eval of the parameters at that point (100 games, ε 0.05; PPO: sampled unless "
                 "ε 0.05 was run)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DOCS / "dqn-on-policy-runs.csv")
    parser.add_argument("--out", type=Path, default=DOCS / "dqn-on-policy-returns.png")
    args = parser.parse_args()
    draw(read_runs(args.csv), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
