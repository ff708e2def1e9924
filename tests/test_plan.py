"""`adapterbench plan`: the minimum detectable delta it prints is the one a gate on those items detects with the
stated power (checked by simulation), items needed scale as they should, and bad input is one line."""

from __future__ import annotations

import math
import numpy as np
import pytest

from adapterbench.cli import main
from adapterbench.harness import stats
from adapterbench.harness.compare import aggregator
from adapterbench.harness.plan import format_plan, plan
from test_gate import _save

N = 150


def _store(tmp_path, shift: float = 0.0):
    rng = np.random.default_rng(0)
    level = rng.uniform(0.2, 0.6, N)
    correct = rng.random(N) < 0.6
    flipped = np.where(rng.random(N) < 0.15, ~correct, correct)  # the candidate answers 15 % of items otherwise
    path = tmp_path / "store.sqlite"
    _save(path, "2026-01-01T00:00:00+00:00", {
        "base": {"qa": [{"rougeL_f1": float(v)} for v in level], "mc": [{"acc": float(a)} for a in correct]},
        "new": {"qa": [{"rougeL_f1": float(v + shift + e)} for v, e in zip(level, rng.normal(0, 0.1, N))],
                "mc": [{"acc": float(a)} for a in flipped]}})
    return path, level


def test_the_mde_is_detected_with_the_stated_power(tmp_path):
    path, level = _store(tmp_path)
    result = plan(["base"], ["new"], store=path)
    row = next(r for r in result["rows"] if r["task"] == "qa")
    assert row["metric"] == "rougeL_f1" and row["se"] == pytest.approx(0.1 / math.sqrt(N), rel=0.15)
    # Fresh candidates whose true delta is the MDE, scored with the gate's own test: about 80 % are detected.
    rng = np.random.default_rng(1)
    value = aggregator("rougeL_f1")
    sims = 150
    detected = sum(stats.paired_permutation(list(level), list(level + row["mde"] + rng.normal(0, 0.1, N)), value,
                                            iters=199, seed=s)["p_value"] < 0.05 for s in range(sims))
    assert 0.68 <= detected / sims <= 0.92  # 0.8 within about 3 binomial standard errors


def test_items_needed_scale_with_the_inverse_square_of_the_delta_and_mcnemar_has_its_floor(tmp_path):
    path, _ = _store(tmp_path)
    rows = {r["task"]: r for r in plan(["base"], ["new"], store=path, delta=0.02)["rows"]}
    half = {r["task"]: r for r in plan(["base"], ["new"], store=path, delta=0.01)["rows"]}
    assert half["qa"]["needed"] == pytest.approx(4 * rows["qa"]["needed"], rel=0.01)
    assert rows["mc"]["test"] == "mcnemar" and rows["mc"]["discordance"] == pytest.approx(0.15, abs=0.06)
    # an exact test needs 6 one-way discordant items for p < 0.05: never fewer items than 6 / delta
    assert rows["mc"]["mde"] >= 6 / N and rows["mc"]["needed"] >= 6 / 0.02
    share = {r["task"]: r for r in plan(["base"], ["new"], store=path, delta="10%")["rows"]}
    assert share["qa"]["target"] == pytest.approx(0.1 * share["qa"]["baseline"])


def test_without_a_candidate_an_independent_peer_is_assumed_and_said(tmp_path):
    path, _ = _store(tmp_path)
    alone = plan(["base"], store=path)
    mc = next(r for r in alone["rows"] if r["task"] == "mc")
    p = mc["baseline"]
    assert alone["assumed_independent"] and mc["discordance"] == pytest.approx(2 * p * (1 - p))
    assert mc["se"] == pytest.approx(math.sqrt(2 * p * (1 - p) / N))
    assert "No candidate: the spread assumes a second model" in format_plan(alone)


def test_plan_cli_prints_mdes_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    path, _ = _store(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "--baseline", "base", "--candidate", "new", "--store", str(path), "--delta", "5%"])
    out = capsys.readouterr().out
    assert exit_info.value.code in (None, 0)
    header = next(line for line in out.splitlines() if line.startswith("task"))
    assert "MDE (80% power)" in header and "items for delta 5%" in header
    assert any(line.startswith("qa ") for line in out.splitlines())
    for args, message in ((["--delta", "-1"], "field '--delta': --delta is a positive number"),
                          (["--power", "1.5"], "field '--power': power must be between 0 and 1"),
                          (["--candidate", "nobody"], "field '--candidate': no evaluation has a model labelled")):
        with pytest.raises(SystemExit) as exit_info:
            main(["plan", "--baseline", "base", "--store", str(path), *args])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1
