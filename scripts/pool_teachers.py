#!/usr/bin/python3
"""Claim 2 pooled over teachers: the study's result folders read side by side.

    /usr/bin/python3 scripts/pool_teachers.py docs/results/paper docs/results/teacher-s1 docs/results/teacher-s2

For every folder (one teacher each): the group cells (sparsest vs densest, per mixer and group
size g) and the single-layer sweep of min_gru. Pooled:
  - groups: how many cells go each way, and the mean Δ per group size with a sign-flip test over
    teachers; cells are pooled by g / depth (a 12-layer teacher's g = 3 joins an 8-layer
    teacher's g = 2: a quarter of the layers);
  - single layers: for each per-layer predictor, the mean over teachers of the within-teacher
    Spearman ρ with the layer's mean drop, and a stratified permutation p (drops permuted within
    each teacher, 100,000 draws; two-sided on the mean ρ). Layers are never pooled across
    teachers directly: each teacher's layers are on their own scale.
Standard library only (runs with Debian's python3, no numpy). Prints Markdown.
"""
import csv
from fractions import Fraction
import json
import os
import random
import sys


def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2.0
        i = j + 1
    return r


def spearman(x, y):
    rx, ry = ranks(x), ranks(y)
    n = len(x)
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else 0.0


def load(folder):
    j = lambda *p: json.load(open(os.path.join(folder, *p)))
    summary = j("summary.json")
    profile = j("profile.json")
    kinds = j("runs", "kinds.json")
    sweep = j("sweep_stats.json").get("min_gru")
    preds = {"S_ent": profile["layer_scores"]}

    def metric(rows, name):
        out = []
        for l in profile["layer_stats"]:
            try:
                out.append(l["all_heads"]["all_keys"][rows][name]["mean"])
            except (KeyError, TypeError):
                out.append(None)
        return out

    preds["S_ent of the CLS query"] = metric("cls", "entropy_sparsity")
    preds["Gini"] = metric("all", "gini")
    preds["mean attention distance"] = metric("all", "distance")
    for k in kinds["kinds"]:
        preds[k] = [l["mean"].get(k) for l in kinds["layers"]]
    # The replacing min_gru's own normalised stage-1 error (free-running), mean over the sweep's seeds.
    err = {}
    with open(os.path.join(folder, "sweep.csv")) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        if r["mixer"] == "min_gru" and r["plan"].startswith("single:"):
            err.setdefault(int(r["layers"]), []).append(float(r["mean_nmse_free"]))
    preds["min_gru's normalised stage-1 error"] = [sum(err[l]) / len(err[l]) if l in err else None
                                                   for l in range(len(profile["layer_scores"]))]
    return {
        "name": folder,
        "accuracy": summary.get("teacher_accuracy"),
        "cells": summary.get("group_cells", []),
        "drop": sweep["mean_drop"] if sweep else None,
        "depth": len(profile["layer_scores"]),
        "preds": preds,
    }


def main(folders):
    teachers = [load(f) for f in folders]
    print("## Claim 2 pooled over %d teachers\n" % len(teachers))
    print("Command: `/usr/bin/python3 scripts/pool_teachers.py %s`\n" % " ".join(folders))
    print("### Groups (sparsest − densest stage-2 drop; negative = the paper's order)\n")
    print("| teacher | accuracy | mixer | g | Δ | 95% interval | verdict |")
    print("|---|---|---|---|---|---|---|")
    by_g = {}
    for t in teachers:
        for c in t["cells"]:
            lo, hi = c["ci"]
            verdict = "holds" if hi < 0 else "reversed" if lo > 0 else "inconclusive"
            print("| %s | %.4f | %s | %d | %+.4f | [%+.4f, %+.4f] | %s |"
                  % (os.path.basename(t["name"]), t["accuracy"], c["mixer"], c["g"], c["delta"], lo, hi, verdict))
            if c["mixer"] == "min_gru":
                # Pooled by the fraction of the depth replaced, exact as a fraction.
                by_g.setdefault(Fraction(c["g"], t["depth"]), []).append((os.path.basename(t["name"]), c["g"], c["delta"]))
    print()
    for frac, cells in sorted(by_g.items()):
        ds = [d for _, _, d in cells]
        # Exact sign-flip test over teachers: under H0 each teacher's Δ is as likely negated.
        n = len(ds)
        obs = abs(sum(ds))
        count = 0
        for mask in range(1 << n):
            s = sum(-d if mask >> i & 1 else d for i, d in enumerate(ds))
            count += abs(s) >= obs - 1e-15
        print("- min_gru, g / depth = %s: mean Δ over %d teachers %+.4f (%s); sign-flip p = %.3f (%d of %d sign patterns)"
              % (frac, n, sum(ds) / n, ", ".join("%s g=%d %+.4f" % c for c in cells),
                 count / (1 << n), count, 1 << n))
    print()
    with_sweep = [t for t in teachers if t["drop"]]
    print("### Single layers: what predicts the min_gru drop, within each teacher and pooled\n")
    names = list(with_sweep[0]["preds"].keys())
    print("| predictor | " + " | ".join("ρ %s" % os.path.basename(t["name"]) for t in with_sweep) +
          " | mean ρ | stratified permutation p |")
    print("|---|" + "---|" * len(with_sweep) + "---|---|")
    rng = random.Random(1)
    draws = 100000
    for name in names:
        pairs = []
        for t in with_sweep:
            x, y = t["preds"][name], t["drop"]
            keep = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
            pairs.append(([a for a, _ in keep], [b for _, b in keep]))
        rhos = [spearman(x, y) for x, y in pairs]
        mean = sum(rhos) / len(rhos)
        hits = 0
        ys = [list(y) for _, y in pairs]
        for _ in range(draws):
            s = 0.0
            for (x, _), y in zip(pairs, ys):
                rng.shuffle(y)
                s += spearman(x, y)
            hits += abs(s / len(pairs)) >= abs(mean) - 1e-12
        print("| %s | %s | %+.2f | %.4f |" % (name, " | ".join("%+.2f" % r for r in rhos), mean, (hits + 1) / (draws + 1)))
    print("\nA positive ρ: the larger the quantity, the larger the drop. With %d predictors a Bonferroni bound "
          "at 0.05 is %.4f." % (len(names), 0.05 / len(names)))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1:])
