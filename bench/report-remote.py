#!/usr/bin/env python3
"""Turn bench/remote.sh's step table into a printed comparison and a JSON file.

Reads the environment remote.sh exports (BENCH_TSV, BENCH_OUT, ...); it
only reads the TSV, so it can be re-run on a kept work folder:
BENCH_TSV=.../steps.tsv BENCH_OUT=/tmp/x.json python3 bench/report-remote.py
"""
import datetime
import json
import os

MIB = 1024 * 1024
TARGET = 1.5  # kith throughput / restic throughput, first backup and restore


def env(name, default=""):
    return os.environ.get(name, default)


def main():
    rows = {}
    with open(env("BENCH_TSV")) as f:
        for line in f:
            backend, tool, step, wall, user, sys_, rss, rc = line.rstrip("\n").split("\t")
            rows[(backend, tool, step)] = {
                "seconds": float(wall),
                "user_seconds": float(user or 0),
                "system_seconds": float(sys_ or 0),
                "peak_rss_kib": int(rss or 0),
                "exit": int(rc),
            }
    data_bytes = int(env("BENCH_DATA_BYTES", "0"))
    backends = []
    for b in dict.fromkeys(k[0] for k in rows):
        steps = []
        for s in ("init", "backup-first", "restore"):
            k, r = rows.get((b, "kith", s)), rows.get((b, "restic", s))
            if not k or not r:
                continue
            e = {"step": s, "kith": k, "restic": r,
                 "speedup": r["seconds"] / k["seconds"] if k["seconds"] > 0 else None}
            if s != "init":
                e["kith_mib_per_s"] = data_bytes / MIB / k["seconds"]
                e["restic_mib_per_s"] = data_bytes / MIB / r["seconds"]
                e["target_met"] = e["speedup"] is not None and e["speedup"] >= TARGET
            steps.append(e)
        backends.append({"backend": b, "steps": steps})

    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "nproc": int(env("BENCH_NPROC", "0") or 0),
        "versions": {"kith_rev": env("BENCH_KITH_REV"), "kith_tree": env("BENCH_KITH_DIRTY"),
                     "restic": env("BENCH_RESTIC_VERSION"), "servers": env("BENCH_SERVERS")},
        "data_set": {"size_mb_requested": int(env("BENCH_SIZE_MB", "0")),
                     "seed": int(env("BENCH_SEED", "0")), "bytes": data_bytes,
                     "files": int(env("BENCH_DATA_FILES", "0"))},
        "page_cache": env("BENCH_CACHE_MODE"),
        "load_average": env("BENCH_LOAD"),
        "restore_verified_bit_exact": env("BENCH_VERIFIED").split(),
        "target": "first backup and restore throughput >= %.1fx restic" % TARGET,
        "backends": backends,
    }
    out = env("BENCH_OUT")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    print()
    print("data set: %.1f MiB in %d files; page cache %s before each step; load %s"
          % (data_bytes / MIB, result["data_set"]["files"], result["page_cache"], result["load_average"]))
    print("kith %s (%s), %s; %s" % (result["versions"]["kith_rev"], result["versions"]["kith_tree"],
                                     result["versions"]["restic"], result["versions"]["servers"]))
    print()
    print("| backend | step | kith s | restic s | speedup | kith MiB/s | restic MiB/s | kith RSS MiB | restic RSS MiB | kith user+sys s | restic user+sys s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in backends:
        for e in b["steps"]:
            k, r = e["kith"], e["restic"]
            print("| %s | %s | %.2f | %.2f | %.2fx | %s | %s | %.1f | %.1f | %.1f+%.1f | %.1f+%.1f |" % (
                b["backend"], e["step"], k["seconds"], r["seconds"], e["speedup"] or 0,
                "%.1f" % e["kith_mib_per_s"] if "kith_mib_per_s" in e else "-",
                "%.1f" % e["restic_mib_per_s"] if "restic_mib_per_s" in e else "-",
                k["peak_rss_kib"] / 1024, r["peak_rss_kib"] / 1024,
                k["user_seconds"], k["system_seconds"], r["user_seconds"], r["system_seconds"]))
    print()
    for b in backends:
        for e in b["steps"]:
            if "target_met" in e:
                print("  %-5s %-13s %.2fx restic: %s" % (b["backend"], e["step"], e["speedup"],
                                                         "MET" if e["target_met"] else "NOT MET"))
    print("restores verified bit-exact: %s" % (", ".join(result["restore_verified_bit_exact"]) or "none"))
    print("results written to %s" % out)


if __name__ == "__main__":
    main()
