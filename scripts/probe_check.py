#!/usr/bin/python3
"""How well did a planner's probes predict a mixer it never swept?

  scripts/probe_check.py PLANNER_OUT STUDY [STUDY ...]

PLANNER_OUT is a plan_replacement output folder whose predictor.json holds the drop model fitted
with probes (d(l, m) = s_m * e_l); each STUDY is a study folder whose runs/sweep-*.json measured
the probed mixers in every layer afterwards. For every probed mixer and every layer that was not
a probe, prints the model's prediction (with its standard error where the planner wrote one)
beside the sweep's measurement, and the mean absolute error against the baseline the probes
alone give (their mean for every layer). Reads only JSON; writes nothing.
"""
import glob
import json
import os
import statistics
import sys


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    pred = json.load(open(os.path.join(argv[1], "predictor.json")))
    model = pred["model"]
    scale = model["mixer_scale"]
    effect = {e["layer"]: e["effect"] for e in model["layer_effect"]}
    probes = {}
    for p in pred["probes"]:
        probes.setdefault(p["mixer"], {})[p["layer"]] = p["drop"]
    if not probes:
        sys.exit(f"probe_check: {argv[1]}/predictor.json lists no probes")
    measured = {}
    for study in argv[2:]:
        files = glob.glob(os.path.join(study, "runs", "sweep-*.json"))
        if not files:
            sys.exit(f"probe_check: expected single-layer runs in {study}/runs, found none")
        for f in files:
            r = json.load(open(f))
            measured.setdefault((r["mixer"], r["layers"][0]), []).append(r["drop_stage2"])
    print("| mixer | layer | probe | predicted s·e | measured (seeds) | baseline (probes' mean) |")
    print("|---|---|---|---|---|---|")
    for mixer, pl in sorted(probes.items()):
        errs, base_errs = [], []
        base = statistics.mean(pl.values())
        for layer in sorted(effect):
            m = measured.get((mixer, layer))
            p = scale[mixer] * effect[layer]
            probe = "yes" if layer in pl else ""
            if m is None:
                print(f"| {mixer} | {layer} | {probe} | {p:.4f} | not measured | {base:.4f} |")
                continue
            mm = statistics.mean(m)
            print(f"| {mixer} | {layer} | {probe} | {p:.4f} | {mm:.4f} ({len(m)}) | {base:.4f} |")
            if layer not in pl:
                errs.append(abs(p - mm))
                base_errs.append(abs(base - mm))
        if errs:
            print(f"\n{mixer}: {len(errs)} layers not probed: MAE {statistics.mean(errs):.5f}, "
                  f"baseline {statistics.mean(base_errs):.5f}\n")


if __name__ == "__main__":
    main(sys.argv)
