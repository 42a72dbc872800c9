#!/usr/bin/env python3
"""Turn bench/run.sh's step table into a printed comparison and a JSON file.

Reads the environment run.sh exports (BENCH_TSV, BENCH_OUT, ...).  Not meant
to be run by hand, but it only reads the TSV, so it can be re-run on a kept
work folder: BENCH_TSV=.../steps.tsv BENCH_OUT=/tmp/x.json python3 bench/report.py
"""
import datetime
import json
import os

MIB = 1024 * 1024
STEPS = ["init", "backup-first", "backup-unchanged", "backup-changed", "restore"]
LABELS = {
    "init": "init",
    "backup-first": "first backup",
    "backup-unchanged": "unchanged re-backup",
    "backup-changed": "re-backup after change",
    "restore": "restore latest",
}
# (step, quantity, comparison, threshold, text)
TARGETS = [
    ("backup-first", "speedup", ">=", 1.5, "first backup throughput >= 1.5x restic"),
    ("backup-unchanged", "time_ratio", "<=", 0.5, "unchanged re-backup time <= 0.5x restic"),
    ("restore", "speedup", ">=", 1.5, "restore throughput >= 1.5x restic"),
    (None, "rss_ratio", "<=", 1.0, "peak RSS (max over all steps) <= restic"),
]


def env(name, default=""):
    return os.environ.get(name, default)


def main():
    rows = {}
    with open(env("BENCH_TSV")) as f:
        for line in f:
            tool, step, wall, user, sys_, rss, rc, repo = line.rstrip("\n").split("\t")
            rows[(tool, step)] = {
                "seconds": float(wall),
                "user_seconds": float(user or 0),
                "system_seconds": float(sys_ or 0),
                "peak_rss_kib": int(rss or 0),
                "exit": int(rc),
                "repo_bytes": int(repo or 0),
            }
    data_bytes = int(env("BENCH_DATA_BYTES", "0"))
    # The restore is of the snapshot taken after the change.
    restored_bytes = int(env("BENCH_DATA_BYTES_CHANGED", "0")) or data_bytes
    steps = []
    for s in STEPS:
        k, r = rows.get(("kith", s)), rows.get(("restic", s))
        if not k or not r:
            continue
        entry = {"step": s, "kith": k, "restic": r}
        entry["speedup"] = r["seconds"] / k["seconds"] if k["seconds"] > 0 else None
        entry["time_ratio"] = k["seconds"] / r["seconds"] if r["seconds"] > 0 else None
        entry["rss_ratio"] = k["peak_rss_kib"] / r["peak_rss_kib"] if r["peak_rss_kib"] else None
        if s in ("backup-first", "restore"):
            n = data_bytes if s == "backup-first" else restored_bytes
            entry["kith_mib_per_s"] = n / MIB / k["seconds"]
            entry["restic_mib_per_s"] = n / MIB / r["seconds"]
        steps.append(entry)
    by_step = {e["step"]: e for e in steps}
    peak = {t: max(rows[(t, s)]["peak_rss_kib"] for s in STEPS if (t, s) in rows) for t in ("kith", "restic")}
    rss_ratio = peak["kith"] / peak["restic"] if peak["restic"] else None

    targets = []
    for step, qty, cmp, thr, text in TARGETS:
        val = rss_ratio if step is None else by_step.get(step, {}).get(qty)
        met = None if val is None else (val >= thr if cmp == ">=" else val <= thr)
        targets.append({"target": text, "step": step, "quantity": qty, "value": val,
                        "threshold": thr, "comparison": cmp, "met": met})

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": env("BENCH_CPU"), "nproc": int(env("BENCH_NPROC", "0") or 0),
                    "memory": env("BENCH_MEM"), "kernel": env("BENCH_KERNEL")},
        "versions": {"kith_rev": env("BENCH_KITH_REV"), "kith_tree": env("BENCH_KITH_DIRTY"),
                     "kith": env("BENCH_KITH_VERSION"), "restic": env("BENCH_RESTIC_VERSION")},
        "data_set": {"size_mb_requested": int(env("BENCH_SIZE_MB", "0")), "seed": int(env("BENCH_SEED", "0")),
                     "bytes": data_bytes, "bytes_after_change": restored_bytes, "files": int(env("BENCH_DATA_FILES", "0")),
                     "change_percent": float(env("BENCH_CHANGE_PERCENT", "0")),
                     "change": env("BENCH_CHANGE_NOTE")},
        "page_cache": env("BENCH_CACHE_MODE"),
        "load_average": env("BENCH_LOAD"),
        "restore_verified_bit_exact": env("BENCH_VERIFIED").split(),
        "steps": steps,
        "peak_rss_kib": peak,
        "peak_rss_ratio": rss_ratio,
        "repo_bytes_final": {t: rows[(t, "backup-changed")]["repo_bytes"] for t in ("kith", "restic")
                             if (t, "backup-changed") in rows},
        "targets": targets,
    }
    out = env("BENCH_OUT")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    print()
    print("data set: %.1f MiB in %d files; page cache %s before each step"
          % (data_bytes / MIB, result["data_set"]["files"], result["page_cache"]))
    print("load average (1/5/15 min) %s" % result["load_average"])
    print("kith %s (%s), %s" % (result["versions"]["kith_rev"], result["versions"]["kith_tree"],
                                result["versions"]["restic"]))
    print()
    print("| step | kith s | restic s | kith speedup (restic/kith) | kith RSS MiB | restic RSS MiB | kith user+sys s | restic user+sys s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for e in steps:
        k, r = e["kith"], e["restic"]
        print("| %s | %.2f | %.2f | %sx | %.1f | %.1f | %.1f+%.1f | %.1f+%.1f |" % (
            LABELS[e["step"]], k["seconds"], r["seconds"], fmt(e["speedup"], ".2f"),
            k["peak_rss_kib"] / 1024, r["peak_rss_kib"] / 1024,
            k["user_seconds"], k["system_seconds"], r["user_seconds"], r["system_seconds"]))
    print()
    for s in ("backup-first", "restore"):
        if s in by_step:
            print("%s throughput: kith %.1f MiB/s, restic %.1f MiB/s"
                  % (LABELS[s], by_step[s]["kith_mib_per_s"], by_step[s]["restic_mib_per_s"]))
    for t in ("kith", "restic"):
        if t in result["repo_bytes_final"]:
            print("%s repository after 3 backups: %.1f MiB" % (t, result["repo_bytes_final"][t] / MIB))
    print("peak RSS over all steps: kith %.1f MiB, restic %.1f MiB"
          % (peak["kith"] / 1024, peak["restic"] / 1024))
    print()
    print("targets:")
    for t in targets:
        state = "n/a" if t["met"] is None else ("MET" if t["met"] else "NOT MET")
        print("  %-45s %s (%s %s %s)" % (t["target"], state, fmt(t["value"], ".2f"), t["comparison"], t["threshold"]))
    print()
    print("restores verified bit-exact: %s" % (", ".join(result["restore_verified_bit_exact"]) or "none"))
    print("results written to %s" % out)


if __name__ == "__main__":
    main()
