"""Seeded train/(val/)test splits of a data file, and how much of each held-out text train already holds (word
n-gram leakage); `split_file` writes the parts and the leakage report together or not at all."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from adapterbench import paths
from adapterbench.datafiles.reading import read_records, record_text
from adapterbench.datafiles.writing import jsonl_text, write_files
from adapterbench.digest import text_sha256
from adapterbench.errors import UserError

_WORD = re.compile(r"\w+")


def _check_ratios(ratios) -> list[float]:
    try:
        shares = [float(r) for r in ratios]
    except (TypeError, ValueError):
        shares = []
    if len(shares) not in (2, 3) or not all(0 < r < 1 for r in shares) or abs(sum(shares) - 1) > 1e-6:
        raise UserError(f"ratios {','.join(str(r) for r in ratios)} are not valid (expected 2 or 3 positive "
                        "shares summing to 1: train,test or train,val,test, e.g. 0.7,0.3 or 0.8,0.1,0.1)")
    return shares


def split_records(records: list, ratios, seed: int) -> list[list]:
    """Seeded shuffle cut at rounded cumulative shares; every part gets at least one record."""
    ratios = _check_ratios(ratios)
    n, k = len(records), len(ratios)
    if n < k:
        raise UserError(f"{n} record(s) cannot fill {k} parts (expected at least {k})")
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    bounds, total = [0], 0.0
    for ratio in ratios[:-1]:
        total += ratio
        bounds.append(int(n * total + 0.5))
    bounds.append(n)
    for i in range(1, k):  # push cuts apart so that no part is empty
        bounds[i] = max(bounds[i], bounds[i - 1] + 1)
    for i in range(k - 1, 0, -1):
        bounds[i] = min(bounds[i], bounds[i + 1] - 1)
    return [shuffled[bounds[i]:bounds[i + 1]] for i in range(k)]


def _ngram_hashes(tokens: list, n: int) -> list[int]:
    # Python's per-process hash salt is harmless: the set never outlives one report.
    return [hash(tuple(tokens[i:i + n])) for i in range(len(tokens) - n + 1)]


def leakage_report(train_texts, heldout_texts, *, ngram: int = 8, heldout_ids=None, worst: int = 10) -> dict:
    """Word n-gram overlap of each held-out text with the whole train side (lowercase, punctuation dropped)."""
    if ngram < 1:
        raise UserError(f"ngram {ngram} is not valid (expected a positive number of words, e.g. 8)")
    train = set()
    for text in train_texts:
        train.update(_ngram_hashes(_WORD.findall(text.lower()), ngram))
    items, spans = [], []
    for i, text in enumerate(heldout_texts):
        matches = list(_WORD.finditer(text))
        hits = [h in train for h in _ngram_hashes([m[0].lower() for m in matches], ngram)]
        best, start, end = (0, 0, 0), 0, -1  # end: one past the last token of the current covered run
        for j, hit in enumerate(hits):
            if hit:
                start, end = (j if j > end else start), j + ngram
                if end - start > best[0]:
                    best = (end - start, start, end)
        items.append({"id": heldout_ids[i] if heldout_ids is not None else str(i), "longest_overlap": best[0],
                      "shared_ngram_share": sum(hits) / len(hits) if hits else 0.0})
        spans.append(text[matches[best[1]].start():matches[best[2] - 1].end()] if best[0] else "")
    n = len(items)
    order = sorted((i for i in range(n) if items[i]["longest_overlap"]), key=lambda i: -items[i]["longest_overlap"])
    return {"ngram": ngram, "n_heldout": n,
            "share_over_threshold": sum(it["longest_overlap"] >= ngram for it in items) / n if n else 0.0,
            "mean_shared_ngram_share": sum(it["shared_ngram_share"] for it in items) / n if n else 0.0,
            "worst": [{"id": items[i]["id"], "longest_overlap": items[i]["longest_overlap"], "span": spans[i]}
                      for i in order[:worst]],
            "items": items}


def split_file(path, kind: str, out_dir, *, ratios, seed: int = 0, ngram: int = 8, fields: dict | None = None,
               labels: list | None = None, keep_code: bool = False, keep_markup: bool = False,
               name: str | None = None) -> dict:
    """Read, split and write NAME_train/_val/_test.jsonl and NAME_leakage.json; nothing is written on any error."""
    ratios, path, out_dir = _check_ratios(ratios), Path(path), Path(out_dir)
    name = name or (path.resolve().name if path.is_dir() else path.stem)
    if not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
        raise UserError(f"name {name!r} is not valid (expected letters, digits, '.', '-' or '_')")
    paths.output_dir(out_dir, field="--out")
    records = read_records(path, kind, fields=fields, labels=labels, keep_code=keep_code, keep_markup=keep_markup)
    parts = dict(zip(("train", "test") if len(ratios) == 2 else ("train", "val", "test"),
                     split_records(records, ratios, seed)))
    heldout = [r for part, rs in parts.items() if part != "train" for r in rs]
    report = leakage_report([record_text(r, kind) for r in parts["train"]], [record_text(r, kind) for r in heldout],
                            ngram=ngram, heldout_ids=[r["id"] for r in heldout])
    files = {f"{name}_{part}.jsonl": jsonl_text(rs) for part, rs in parts.items()}
    leakage_name = f"{name}_leakage.json"
    files[leakage_name] = json.dumps({"input": str(path), "kind": kind, "seed": seed, "ratios": ratios, **report},
                                     indent=2, ensure_ascii=False) + "\n"
    write_files(out_dir, files)
    return {"input": str(path), "kind": kind, "records": len(records), "seed": seed, "ratios": ratios,
            "parts": {part: {"path": str(out_dir / f"{name}_{part}.jsonl"), "records": len(rs),
                             "sha256": text_sha256(files[f"{name}_{part}.jsonl"])}
                      for part, rs in parts.items()},
            "leakage": {"path": str(out_dir / leakage_name),
                        **{k: report[k] for k in ("ngram", "n_heldout", "share_over_threshold",
                                                  "mean_shared_ngram_share")},
                        "worst": report["worst"][:3]}}


def format_split_summary(summary: dict) -> str:
    leak = summary["leakage"]
    lines = [f"split {summary['records']} {summary['kind']} records of {summary['input']} (seed {summary['seed']})"]
    lines += [f"  {part:<5} {p['records']:>7}  {p['path']}" for part, p in summary["parts"].items()]
    lines.append(f"leakage ({leak['ngram']}-grams, {leak['n_heldout']} held-out items): "
                 f"{leak['share_over_threshold']:.1%} share a run of >= {leak['ngram']} words with train; "
                 f"mean shared n-gram share {leak['mean_shared_ngram_share']:.1%}")
    for item in leak["worst"]:
        span = " ".join(item["span"].split())
        span = span if len(span) <= 70 else span[:70] + "..."
        lines.append(f"  {item['id']}: {item['longest_overlap']} words, \"{span}\"")
    lines.append(f"  full report: {leak['path']}")
    return "\n".join(lines)
