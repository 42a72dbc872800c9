#!/usr/bin/env python3
"""Deterministic benchmark data set for bench/run.sh (stdlib only).

    gen-data.py DIR [--size-mb 1024] [--seed 42]
    gen-data.py DIR --change-percent 1 [--size-mb 1024] [--seed 42]

The first form fills DIR (which must be empty or absent) with about
SIZE_MB MiB:
  * ~29% of the bytes in small files (1-64 KiB, log-uniform sizes, about
    20,000 files for 1 GiB) spread over nested folders small/aa/bb/;
  * ~72% in six large files (for 1 GiB: ~50-180 MiB each) under large/.
Half of all bytes are compressible text (words drawn from a fixed
vocabulary, with JSON-ish log lines) and half are incompressible random
bytes from a seeded PRNG (random.Random(seed).randbytes).  Every file's
content depends only on (seed, file name, size), so two runs with the same
arguments produce bit-identical trees.

The second form applies a deterministic change to a tree made by the first
form with the same --size-mb/--seed, touching about PERCENT % of the bytes:
rewrites ~PERCENT % of the small files (new content, new size), overwrites
a few regions in two large files (in place, same length) and adds a few new
files under added/.  It is idempotent: applying it twice gives the same tree.
"""
import argparse
import hashlib
import os
import random
import sys

KIB = 1024
MIB = 1024 * 1024

# Fixed vocabulary: the same on every machine and Python version.
_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or "
    "his from at which but have an they you were her she there been one all we "
    "their has would when if so no will more can said what up its about into "
    "than them only other time new some could these two may first then do any "
    "like my now over such our man me even most made after also did many off "
    "before must through back years where much your way well down should because "
    "each just those people how too little state good very make world still own "
    "see men work long get here between both life being under never day same "
    "another know while last might us great old year come since against go came "
    "right used take three backup snapshot repository chunk pack index blob tree "
    "restore encrypt key nonce cipher hash digest storage peer node replica "
    "request response error warning info debug trace latency throughput bytes "
    "file folder path owner group mode inode device mtime ctime size offset"
).split()
_LEVELS = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
_SERVICES = ["api", "auth", "billing", "index", "search", "store", "queue", "mailer"]


def _rng(seed, *parts):
    """A PRNG whose state depends only on seed and parts (stable across runs)."""
    h = hashlib.sha256(repr((seed,) + parts).encode()).digest()
    return random.Random(int.from_bytes(h[:16], "big"))


def text_bytes(rng, n):
    """About n bytes of compressible text (prose and JSON-ish log lines), exact length n."""
    out = []
    total = 0
    vocab = _WORDS
    choices = rng.choices
    while total < n:
        if rng.random() < 0.5:
            # A paragraph of prose.
            words = choices(vocab, k=rng.randint(40, 400))
            piece = " ".join(words) + ".\n\n"
        else:
            # A batch of log lines.
            lines = []
            for _ in range(rng.randint(5, 60)):
                lines.append(
                    '{"ts":"2026-11-%02dT%02d:%02d:%02d.%03dZ","level":"%s","svc":"%s",'
                    '"req":%d,"msg":"%s"}\n'
                    % (
                        rng.randint(1, 30), rng.randint(0, 23), rng.randint(0, 59),
                        rng.randint(0, 59), rng.randint(0, 999), rng.choice(_LEVELS),
                        rng.choice(_SERVICES), rng.getrandbits(32),
                        " ".join(choices(vocab, k=rng.randint(3, 16))),
                    )
                )
            piece = "".join(lines)
        out.append(piece)
        total += len(piece)
    return "".join(out).encode()[:n]


def random_bytes(rng, n):
    return rng.randbytes(n)


def content(kind, rng, n):
    return text_bytes(rng, n) if kind == "text" else random_bytes(rng, n)


def layout(size_mb):
    """(small_files, large_files) for a data set of about size_mb MiB.

    small_files: list of (relpath, kind, size); large_files: list of (relpath, kind, size).
    """
    total = size_mb * MIB
    small_budget = int(total * 0.29)
    small = []
    rng = _rng("layout", size_mb)
    used = 0
    i = 0
    while used < small_budget:
        size = int(KIB * (64 ** rng.random()))  # log-uniform 1..64 KiB
        size = max(KIB, min(64 * KIB, size))
        kind = "text" if i % 2 == 0 else "bin"
        ext = "txt" if kind == "text" else "bin"
        rel = "small/%02x/%02x/f%06d.%s" % ((i // 400) % 256, (i // 20) % 20, i, ext)
        small.append((rel, kind, size))
        used += size
        i += 1
    large_budget = total - used
    # Fractions: text 0.25+0.17+0.08 = 0.5, bin 0.22+0.18+0.10 = 0.5.
    fractions = [
        ("large/app-logs.jsonl", "text", 0.25),
        ("large/disk-image.img", "bin", 0.22),
        ("large/corpus.txt", "text", 0.17),
        ("large/video.mkv", "bin", 0.18),
        ("large/dump.sql", "text", 0.08),
        ("large/archive.tar.zst", "bin", 0.10),
    ]
    large = []
    for rel, kind, frac in fractions:
        size = int(large_budget * frac) // 4096 * 4096
        large.append((rel, kind, size))
    return small, large


def write_file(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def write_large(path, kind, size, seed, rel):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    block = 4 * MIB
    with open(path, "wb") as f:
        off = 0
        b = 0
        while off < size:
            n = min(block, size - off)
            f.write(content(kind, _rng(seed, rel, "block", b), n))
            off += n
            b += 1


def generate(root, size_mb, seed):
    if os.path.exists(root) and os.listdir(root):
        sys.exit("gen-data: %s is not empty" % root)
    os.makedirs(root, exist_ok=True)
    small, large = layout(size_mb)
    counts = {"text": 0, "bin": 0}
    for idx, (rel, kind, size) in enumerate(small):
        write_file(os.path.join(root, rel), content(kind, _rng(seed, rel, size), size))
        counts[kind] += size
        if idx % 5000 == 4999:
            print("gen-data: %d/%d small files" % (idx + 1, len(small)), file=sys.stderr)
    for rel, kind, size in large:
        write_large(os.path.join(root, rel), kind, size, seed, rel)
        counts[kind] += size
        print("gen-data: wrote %s (%d MiB)" % (rel, size // MIB), file=sys.stderr)
    total = counts["text"] + counts["bin"]
    print(
        "gen-data: %d files, %.1f MiB (%.1f%% compressible text, %.1f%% random)"
        % (len(small) + len(large), total / MIB, 100 * counts["text"] / total,
           100 * counts["bin"] / total),
        file=sys.stderr,
    )


def change(root, size_mb, seed, percent):
    small, large = layout(size_mb)
    total = sum(s for _, _, s in small) + sum(s for _, _, s in large)
    target = int(total * percent / 100)
    rng = _rng(seed, "change", percent)
    changed = 0
    # 1. Rewrite ~percent % of the small files with new content and size (~30% of the change).
    n_small = max(1, int(len(small) * percent / 100))
    for rel, kind, _ in rng.sample(small, n_small):
        size = int(KIB * (64 ** rng.random()))
        data = content(kind, _rng(seed, "changed", rel, size), size)
        write_file(os.path.join(root, rel), data)
        changed += size
    # 2. Overwrite regions of two large files in place (~60% of the change).
    region = 256 * KIB
    budget = max(region, int(target * 0.6))
    victims = [large[0], large[1]]  # one text, one random
    per_file = max(1, budget // region // len(victims))
    for rel, kind, size in victims:
        path = os.path.join(root, rel)
        with open(path, "r+b") as f:
            for k in range(per_file):
                off = rng.randrange(0, max(1, size - region)) // 4096 * 4096
                f.seek(off)
                f.write(content(kind, _rng(seed, "region", rel, k, off), min(region, size - off)))
                changed += region
    # 3. Add a few new files (~10% of the change).
    add_budget = max(KIB, target - changed)
    i = 0
    while add_budget > 0:
        kind = "text" if i % 2 == 0 else "bin"
        size = min(add_budget, int(KIB * (64 ** rng.random())) if i < 20 else add_budget)
        size = max(1, size)
        rel = "added/new%04d.%s" % (i, "txt" if kind == "text" else "bin")
        write_file(os.path.join(root, rel), content(kind, _rng(seed, "added", rel, size), size))
        changed += size
        add_budget -= size
        i += 1
    print(
        "gen-data: changed %.1f MiB of %.1f MiB (%.2f%%): %d small files rewritten, "
        "%d regions in %d large files, %d files added"
        % (changed / MIB, total / MIB, 100 * changed / total, n_small,
           per_file * len(victims), len(victims), i),
        file=sys.stderr,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir")
    p.add_argument("--size-mb", type=int, default=1024)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--change-percent", type=float, default=None,
                   help="modify an existing data set by about this percentage of its bytes")
    a = p.parse_args()
    if a.size_mb < 8:
        sys.exit("gen-data: --size-mb must be at least 8")
    if a.change_percent is None:
        generate(a.dir, a.size_mb, a.seed)
    else:
        if not os.path.isdir(a.dir):
            sys.exit("gen-data: %s does not exist; generate it first" % a.dir)
        change(a.dir, a.size_mb, a.seed, a.change_percent)


if __name__ == "__main__":
    main()
