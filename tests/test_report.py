"""Reports: every model, task and metric reaches each format; hostile model output and data stay literal text in
HTML, LaTeX and Markdown; the HTML renders in chromium without console errors and the LaTeX compiles with pdflatex;
training runs overlay; the CLI writes the files or says what is missing."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from adapterbench.errors import UserError
from adapterbench.harness import database
from adapterbench.harness.compare import aggregate
from adapterbench.reports import make_report
from adapterbench.reports.context import build_context
from adapterbench.reports.render import MD_LIMIT, md_escape, render, tex_escape, write_report

HOSTILE = ["<script>alert(1)</script>", "</textarea>", "{{ x }}", "{% raw %}", r"\input{/etc/passwd}",
           r"\write18{rm -rf /}", "% & _ # $ ^ ~ \\", "a -- b | c ` d"]
NON_ASCII = "naïve café, Ærø, “quotes” — 東京 🙂"
ALL_HOSTILE = " ".join(HOSTILE + [NON_ASCII])
LABELS = ["<script>x</script>", r"\input{/etc/passwd}", "{{ y }} {% raw %}", "plain ü"]
HOSTILE_TASK = "gen<b>{{t}}</b>"
HOSTILE_MODEL = "r8<i>&amp;"


def _samples(label: str, offset: int) -> list[dict]:
    """Deterministic per-sample records of four task types; `offset` shifts which items the model gets right."""
    out = []
    for i in range(12):
        right = float((i + offset) % 3 != 0)
        out.append({"label": label, "task": "mc", "doc_id": f"mc-{i}", "doc_hash": f"m{i}", "prompt":
                    f"SYSTEM PROMPT\nQuestion {i}: {HOSTILE[i % len(HOSTILE)]}\nAnswer:", "prediction":
                    f"choice {i % 4} {HOSTILE[(i + 1) % len(HOSTILE)]}", "reference": f"ref {NON_ASCII}",
                    "metrics": {"acc": right, "acc_norm": right}, "group": "math" if i % 2 else "recall"})
        out.append({"label": label, "task": "ppl", "doc_id": f"p-{i}", "doc_hash": f"p{i}", "prompt": "text",
                    "prediction": "-12.0", "reference": "text",
                    "metrics": {"word_perplexity": [-10.0 - i - offset, 5], "byte_perplexity": [-10.0 - i, 30],
                                "bits_per_byte": [-10.0 - i - offset, 30]}})
        prediction = f"answer {i} {ALL_HOSTILE}" if (i + offset) % 2 else f"other words {i}"
        reference = f"answer {i} {ALL_HOSTILE}"
        rouge = 0.9 if (i + offset) % 2 else 0.1
        out.append({"label": label, "task": HOSTILE_TASK, "doc_id": f"g-{i}", "doc_hash": f"g{i}",
                    "prompt": f"Explain {HOSTILE[i % len(HOSTILE)]}", "prediction": prediction, "reference": reference,
                    "metrics": {"bleu": [prediction, reference],
                                **{f"{t}_{p}": rouge for t in ("rouge1", "rouge2", "rougeL", "rougeLsum")
                                   for p in ("precision", "recall", "f1")}}})
        gold, pred = i % 4, (i + offset) % 4 if i % 5 else -1
        item = [gold, pred]
        out.append({"label": label, "task": "topics", "doc_id": f"t-{i}", "doc_hash": f"t{i}",
                    "prompt": f"Text: {NON_ASCII}", "prediction": LABELS[pred] if pred >= 0 else "???",
                    "reference": LABELS[gold],
                    "metrics": {"acc": float(gold == pred), "unparseable_rate": float(pred == -1), "f1_macro": item,
                                "f1_weighted": item,
                                **{f"{k}_{s}": item for s in ("script_x_script", "input_etc_passwd", "y_raw", "plain_u")
                                   for k in ("precision", "recall", "f1")}}})
    return out


def _scores(samples: list[dict]) -> list[dict]:
    by: dict[tuple, list] = {}
    for s in samples:
        for metric, item in s["metrics"].items():
            by.setdefault((s["label"], s["task"], metric), []).append(item)
    labels = ["script_x_script", "input_etc_passwd", "y_raw", "plain_u"]
    return [{"label": label, "task": task, "metric": metric, "stderr": 0.05, "n": len(items),
             "value": aggregate(metric, [tuple(i) if isinstance(i, list) else i for i in items], labels=labels)}
            for (label, task, metric), items in by.items()]


def make_evaluation(suite_path: Path, labels=("base", HOSTILE_MODEL), offsets=(0, 1), **overrides) -> dict:
    samples = [s for label, off in zip(labels, offsets) for s in _samples(label, off)]
    evaluation = {
        "id": "ev-20260101-000000-abcd", "created_at": "2026-01-01T00:00:00+00:00",
        "suite": {"name": "hostile", "path": str(suite_path)}, "base_ref": "default",
        "config": {"limit": None, "dtype": "float32"}, "command": f"adapterbench eval suite.yaml # {HOSTILE[5]}",
        "environment": {"python": "3.11.7", "platform": "Linux", "packages": {"torch": "2.13.0", "lm_eval": "0.4.13"}},
        "kind": "eval", "train_run": None, "step": None, "tokens_seen": None,
        "models": [{"label": label, "role": "base" if i == 0 else "adapter", "path": f"/runs/{label}",
                    "sha256": f"{i}" * 64, "base_name": "default", "lm_eval": None,
                    "manifest": None if i == 0 else {"config": {"lora": {"r": 8, "alpha": 16}, "lr": 2e-4},
                                                     "stats": {"steps": 10, "planned_steps": 10}}}
                   for i, label in enumerate(labels)],
        "scores": _scores(samples), "samples": samples,
    }
    evaluation.update(overrides)
    return evaluation


@pytest.fixture
def suite_path(tmp_path) -> Path:
    """A suite naming hostile class labels, with a data split's leakage report beside its test file."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mc_leakage.json").write_text(json.dumps({
        "ngram": 8, "n_heldout": 12, "share_over_threshold": 0.25, "mean_shared_ngram_share": 0.1,
        "worst": [{"id": "mc-3", "longest_overlap": 11, "span": f"copied {HOSTILE[4]} {NON_ASCII}"}]}))
    labels = ", ".join(json.dumps(label) for label in LABELS)
    path = tmp_path / "suite.yaml"
    path.write_text("name: hostile\ntasks:\n"
                    "  - {name: mc, type: multiple_choice, data: data/mc_test.jsonl}\n"
                    "  - {name: ppl, type: perplexity, data: data/notes_test.jsonl}\n"
                    f"  - {{name: topics, type: classification, data: data/topics_test.jsonl, labels: [{labels}]}}\n",
                    encoding="utf-8")
    return path


@pytest.fixture
def files(suite_path) -> dict[str, str]:
    context = build_context([make_evaluation(suite_path)], iters=200)
    return render(context)


def _run_dir(path: Path, r: int, losses: list[float]) -> Path:
    path.mkdir(parents=True)
    config = {"lora": {"r": r, "alpha": 16}, "lr": 2e-4, "max_steps": len(losses), "out": str(path)}
    (path / "manifest.json").write_text(json.dumps({"config": config, "best": {"step": 2, "metric": "val_loss",
                                                                               "value": 2.0},
                                                    "stats": {"steps": len(losses)}}))
    rows = [{"kind": "eval", "step": 0, "val_loss": 4.0, "mc/acc": 0.2, "mc/acc_norm": 0.3, "topics/f1_macro": 0.1,
             "topics/precision_a": 0.5}]
    rows += [{"kind": "train", "step": i + 1, "train_loss": loss} for i, loss in enumerate(losses)]
    rows += [{"kind": "eval", "step": len(losses), "val_loss": 3.0 - r / 100, "mc/acc": 0.4, "mc/acc_norm": 0.35,
              "topics/f1_macro": 0.3, "topics/precision_a": 0.6}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


class _Parser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _parse(text: str) -> _Parser:
    parser = _Parser()
    parser.feed(text)
    parser.close()
    return parser


# --- structure -----------------------------------------------------------------------------------------------------

def test_every_model_task_and_metric_appears_in_each_format(files):
    main_metrics = ["acc", "acc_norm", "word_perplexity", "byte_perplexity", "bits_per_byte", "bleu", "rouge1_f1",
                    "rougeL_f1", "rougeLsum_f1", "unparseable_rate", "f1_macro", "f1_weighted"]
    page = "".join(_parse(files["report.html"]).text)
    for name in ["base", HOSTILE_MODEL, "mc", "ppl", "topics", HOSTILE_TASK, *main_metrics, *LABELS, "rouge2"]:
        assert name in page, name
        assert tex_escape(name) in files["report.tex"], name
        assert md_escape(name) in files["report.md"], name
    for name in ["base", HOSTILE_MODEL, "mc", "topics", HOSTILE_TASK, *main_metrics]:
        assert tex_escape(name) in files["report_table.tex"], name
    assert "Δ " + HOSTILE_MODEL in page
    assert "rouge1_precision" not in page  # per-class and ROUGE P/R live in the detail tables, by type and label


def test_main_table_marks_best_and_significant_deltas(suite_path):
    context = build_context([make_evaluation(suite_path)], iters=200)
    rows = {(r["task"], r["metric"]): r for r in context["table"]}
    ppl = rows[("ppl", "word_perplexity")]
    assert ppl["higher_is_better"] is False
    assert ppl["best"] == ["base"]  # the adapter's log-likelihoods are lower: a higher perplexity
    delta = ppl["deltas"][HOSTILE_MODEL]
    assert delta["low"] <= delta["delta"] <= delta["high"] and delta["delta"] > 0
    assert delta["significant"] and delta["direction"] == -1  # significantly worse
    assert rows[("ppl", "byte_perplexity")]["best"] == []  # a tie marks no one
    acc = rows[("mc", "acc")]["values"]["base"]
    assert acc["low"] == pytest.approx(acc["value"] - 1.959964 * 0.05)
    assert context["reference"] == "base" and context["candidates"] == [HOSTILE_MODEL]
    page = render(context, "html")["report.html"]
    assert page.count('class="num delta down"') == sum(
        1 for r in context["table"] if not r["detail"] and r["deltas"][HOSTILE_MODEL]["direction"] < 0) > 0


def test_a_suite_file_that_no_longer_loads_is_said_in_the_notes(tmp_path):
    broken = tmp_path / "suite.yaml"
    broken.write_text("name: s\ntasks:\n  - {name: t, type: multiple_choice, data: x.jsonl, labels: [a]}\n")
    notes = build_context([make_evaluation(broken)], iters=50)["comparison_notes"]
    assert any(n.startswith("the suite file no longer loads") and "'labels' is read by classification" in n
               for n in notes), notes


def test_a_delta_without_an_interval_is_not_reported(suite_path, monkeypatch):
    from adapterbench.harness.compare import compare as real

    def without_intervals(*args, **kwargs):
        result = real(*args, **kwargs)
        for row in result["rows"]:
            row["ci_low"] = row["ci_high"] = None
        return result

    monkeypatch.setattr("adapterbench.harness.compare.compare", without_intervals)
    context = build_context([make_evaluation(suite_path)], iters=50)
    assert all(d is None for row in context["table"] for d in row["deltas"].values())
    page = render(context, "html")["report.html"]
    assert page.count('title="no paired interval"') == sum(1 for r in context["table"] if not r["detail"])


def test_per_task_detail_has_classification_report_groups_and_answers(suite_path):
    context = build_context([make_evaluation(suite_path)], iters=50, max_answers=3)
    tasks = {t["name"]: t for t in context["tasks"]}
    report = tasks["topics"]["classification"]["base"]
    assert list(report["per_class"]) == LABELS  # names from the suite file, not slugs
    assert report["confusion"]["labels"][-1] == "unparseable"
    assert sum(map(sum, report["confusion"]["matrix"])) == 12
    assert tasks["topics"]["unparseable"]["base"] == pytest.approx(3 / 12)
    groups = tasks["mc"]["groups"]
    assert [g["group"] for g in groups["rows"]] == ["recall", "math"] and "acc" in groups["metrics"]
    assert tasks["ppl"]["answers"] is None  # a log-likelihood is no answer to show
    answers = tasks["mc"]["answers"]
    assert answers["prompt_prefix"] == "SYSTEM PROMPT\n" and answers["prompt_suffix"] == "\nAnswer:"
    assert len(answers["shown"]) == 3
    change = answers["changes"][HOSTILE_MODEL]
    assert change["n_fixed"] == 4 and change["n_broken"] == 4 and len(change["fixed"]) == 3
    assert all(i["answers"]["base"]["score"] == 0 and i["answers"][HOSTILE_MODEL]["score"] == 1
               for i in change["fixed"])
    assert context["leakage"][0]["task"] == "mc" and context["leakage"][0]["share_over_threshold"] == 0.25


# --- escaping ------------------------------------------------------------------------------------------------------

def test_hostile_text_stays_literal_in_html(files):
    parsed = _parse(files["report.html"])
    assert not {"script", "textarea", "i", "b"} & set(parsed.tags)
    text = "".join(parsed.text)
    for hostile in [*HOSTILE, NON_ASCII, *LABELS, HOSTILE_TASK, HOSTILE_MODEL]:
        assert hostile in text, hostile
    assert "default-src 'none'" in files["report.html"]  # and were anything to slip through, the CSP blocks it


def test_hostile_text_is_escaped_in_latex(files):
    tex = files["report.tex"] + files["report_table.tex"]
    assert r"\input{/etc/passwd}" not in tex and r"\write18" not in tex
    assert r"\textbackslash{}input\{/etc/passwd\}" in tex
    assert r"\textbackslash{}write18\{rm -rf /\}" in tex
    assert tex_escape("% & _ # $ ^ ~ \\") == (r"\% \& \_ \# \$ \textasciicircum{} \textasciitilde{} "
                                               r"\textbackslash{}")
    assert tex_escape("{{ x }} {% raw %}") == r"\{\{ x \}\} \{\% raw \%\}"
    assert tex_escape("a -- b") == "a -{}- b"  # no en-dash ligature: the text stays what it was
    for line in files["report.tex"].splitlines():
        assert not line.lstrip().startswith(("\\input", "\\include", "\\write", "\\immediate")), line


def test_hostile_text_is_escaped_in_markdown(files):
    md = files["report.md"]
    assert "<script" not in md and "</textarea" not in md and "<i>" not in md and "<b>" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert md_escape("% & _ # $ ^ ~ \\ | `x` [a](b) @team") == (
        "% &amp; \\_ # \\$ ^ \\~ \\\\ \\| \\`x\\` \\[a\\](b) @\u200bteam")
    assert md_escape("- item") == "\\- item" and md_escape("two\nlines") == "two<br>lines"
    header_cells = None
    for line in md.splitlines():  # every table row has as many cells as its header: no pipe leaks from the data
        if not line.startswith("|"):
            header_cells = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line))
        header_cells = header_cells or cells
        assert cells == header_cells, line


def test_non_ascii_survives_and_pdflatex_unsafe_characters_show_as_code_points(files):
    assert NON_ASCII in "".join(_parse(files["report.html"]).text)
    assert md_escape(NON_ASCII) == NON_ASCII and NON_ASCII in files["report.md"]
    assert tex_escape(NON_ASCII) == ("naïve café, Ærø, “quotes” — {\\ttfamily[U+6771 U+4EAC]} "
                                     "{\\ttfamily[U+1F642]}")
    assert tex_escape("e\u0301 α ≤ ½ ﬁ Ａ") == r"é \ensuremath{\alpha} \ensuremath{\leq} ½ ﬁ A"
    assert tex_escape("bell\x07") == r"bell{\ttfamily[U+0007]}"


# --- real tools ----------------------------------------------------------------------------------------------------

def _pdflatex(tex: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["pdflatex", "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error",
                           tex.name], cwd=tex.parent, capture_output=True, text=True, errors="replace", timeout=300)


def test_latex_compiles_with_pdflatex(suite_path, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex not installed (Debian: apt-get install texlive-latex-base texlive-latex-recommended)")
    out = tmp_path / "report"
    write_report(build_context([make_evaluation(suite_path)], [_run_dir(tmp_path / "runs" / "r8", 8, [3, 2])],
                               iters=50), out, "latex")
    result = _pdflatex(out / "report.tex")
    assert result.returncode == 0, result.stdout[-3000:]
    assert (out / "report.pdf").stat().st_size > 1000
    wrapper = out / "paper.tex"
    wrapper.write_text("\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n\\usepackage[T1]{fontenc}\n"
                       "\\usepackage{booktabs}\n\\begin{document}\n\\begin{table}\\centering\\small\n"
                       "\\input{report_table.tex}\n\\caption{Scores.}\\end{table}\n\\end{document}\n")
    result = _pdflatex(wrapper)
    assert result.returncode == 0, result.stdout[-3000:]
    assert (out / "paper.pdf").stat().st_size > 1000


def _png_pixels_vary(path: Path) -> bool:
    """True unless every pixel of the PNG is the same (an unrendered page)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, channels = 8, b"", 0, 4
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, color_type = struct.unpack(">I", chunk[:4])[0], chunk[9]
            channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels + 1
    first_row = raw[1:stride]
    # Row filters aside, a uniform image has rows that are all one repeated pixel.
    return len(set(raw[i + 1:i + stride] for i in range(0, len(raw), stride))) > 2 or len(set(first_row)) > channels


def test_html_renders_in_chromium_without_console_errors(suite_path, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    out = tmp_path / "report"
    write_report(build_context([make_evaluation(suite_path)], [_run_dir(tmp_path / "runs" / "r8", 8, [3, 2])],
                               iters=50), out, "html")
    png = tmp_path / "shot.png"
    result = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--window-size=1200,1600",
         f"--screenshot={png}", (out / "report.html").as_uri()],
        capture_output=True, text=True, errors="replace", timeout=120)
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert result.returncode == 0, result.stderr[-2000:]
    assert console == []  # no script error, no blocked script or resource (CSP violations log here too)
    assert png.is_file() and _png_pixels_vary(png)


# --- training runs, several evaluations, generate ---------------------------------------------------------------

def test_train_runs_are_overlaid_with_their_differing_hyperparameters(tmp_path):
    runs = [_run_dir(tmp_path / "a" / "qa", 8, [4, 3.5, 3]), _run_dir(tmp_path / "b" / "qa", 16, [4, 3, 2.5])]
    context = build_context([], runs)
    training = context["training"]
    assert [r["name"] for r in training["runs"]] == ["a/qa", "b/qa"]  # same dir names: told apart by the parent
    assert training["differing"] == ["lora.r"]  # `out` always differs; it is the name already
    assert [r["params"] for r in training["runs"]] == [[("lora.r", 8)], [("lora.r", 16)]]
    charts = {c["title"]: c for c in training["charts"]}
    assert set(charts) == {"loss", "mc/acc", "topics/f1_macro"}  # each task's primary metric
    assert [s["run"] for s in charts["mc/acc"]["series"]] == [0, 1]
    assert [m["name"] for m in training["runs"][0]["metrics"]] == ["val_loss", "mc/acc", "mc/acc_norm",
                                                                    "topics/f1_macro"]
    page = render(context, "html")["report.html"]
    colors = set(re.findall(r'<polyline points="[^"]*" stroke="(#[0-9a-f]{6})" class="eval"', page))
    assert len(colors) == 2
    text = "".join(_parse(page).text)
    assert "lora.r=8" in text and "lora.r=16" in text and "The runs differ in: lora.r" in text
    assert context["models"] == [] and context["table"] == []


def test_models_of_two_evaluations_are_keyed_apart_and_compared_with_the_reference(suite_path):
    first = make_evaluation(suite_path, id="ev-20260101-000000-aaaa")
    second = make_evaluation(suite_path, labels=("base", "r16"), offsets=(0, 2), id="ev-20260102-000000-bbbb")
    context = build_context([first, second], iters=50, reference="bbbb:base")
    assert [m["key"] for m in context["models"]] == ["aaaa:base", HOSTILE_MODEL, "bbbb:base", "r16"]
    assert context["reference"] == "bbbb:base"
    assert context["candidates"] == ["aaaa:base", HOSTILE_MODEL, "r16"]
    row = next(r for r in context["table"] if r["task"] == "mc" and r["metric"] == "acc")
    assert row["deltas"]["aaaa:base"]["delta"] == 0  # the same base on the same items
    with pytest.raises(UserError, match="no scored model 'nope'"):
        build_context([first, second], iters=50, reference="nope")


def test_generate_evaluation_shows_answers_side_by_side(tmp_path):
    samples = [{"label": label, "task": "prompts", "doc_id": f"p{i}", "doc_hash": f"h{i}", "prompt": f"Say {i}",
                "prediction": f"{label} says {HOSTILE[i]}", "reference": None, "metrics": {}}
               for label in ("base", "qa") for i in range(3)]
    evaluation = make_evaluation(tmp_path / "gone.yaml", labels=("base", "qa"), kind="generate", scores=[],
                                 samples=samples)
    context = build_context([evaluation], iters=50)
    assert context["table"] == [] and context["reference"] is None
    task = context["tasks"][0]
    assert task["type"] == "generate" and len(task["answers"]["shown"]) == 3 and task["answers"]["changes"] is None
    text = "".join(_parse(render(context, "html")["report.html"]).text)
    assert "qa says " + HOSTILE[2] in text


def test_markdown_fits_a_github_comment(suite_path):
    evaluation = make_evaluation(suite_path)
    for s in evaluation["samples"]:
        s["prediction"] = s["prediction"] + " long" * 5000
    for i in range(3000):
        evaluation["scores"].append({"label": "base", "task": f"extra_task_{i}", "metric": "acc", "value": 0.5,
                                     "stderr": 0.1, "n": 10})
    md = render(build_context([evaluation], iters=50, max_answers=50), "md")["report.md"]
    assert len(md) <= MD_LIMIT
    assert md.rstrip().endswith("the HTML report has everything.*")


# --- files and CLI -------------------------------------------------------------------------------------------------

def test_make_report_writes_every_format_from_the_store(suite_path, tmp_path):
    db = tmp_path / "store.sqlite"
    with database.connect(db) as conn:
        database.save_evaluation(conn, make_evaluation(suite_path))
    paths = make_report(tmp_path / "out", eval_refs=["latest"], store=db, max_answers=2)
    assert [p.name for p in paths] == ["report.html", "report.tex", "report_table.tex", "report.md"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths)  # no temp files


def test_a_bad_train_run_writes_nothing(tmp_path):
    with pytest.raises(UserError, match="no metrics.jsonl"):
        make_report(tmp_path / "out", train_runs=[tmp_path])
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\nnot json\n')
    with pytest.raises(UserError, match=r"malformed JSON") as err:
        make_report(tmp_path / "out", train_runs=[tmp_path / "run"])
    assert err.value.line == 2
    assert not (tmp_path / "out").exists()


def test_cli_report_prints_the_paths_and_refuses_missing_inputs(suite_path, tmp_path):
    db = tmp_path / "store.sqlite"
    with database.connect(db) as conn:
        database.save_evaluation(conn, make_evaluation(suite_path))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "adapterbench", "report", *args], capture_output=True, text=True)

    result = cli("--latest", "--store", str(db), "--format", "md,html", "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "r" / "report.html"), str(tmp_path / "r" / "report.md")]
    result = cli("--out", str(tmp_path / "r2"))
    assert result.returncode == 2 and "nothing to report" in result.stderr and "Traceback" not in result.stderr
    result = cli("--latest", "--store", str(db), "--format", "pdf", "--out", str(tmp_path / "r3"))
    assert result.returncode == 2 and "unknown format 'pdf'" in result.stderr
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_a_run_no_evaluation_ranked_shows_no_best_step(tmp_path):
    run = _run_dir(tmp_path / "qa", 8, [4, 3])
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "best": {"step": None, "metric": "val_loss",
                                                                        "value": None}}))
    context = build_context([], [run])
    assert context["training"]["runs"][0]["best"] is None
    for text in render(context).values():
        assert "step None" not in text and "step :" not in text


def test_an_unchanged_row_whose_interval_excludes_zero_is_marked_and_every_delta_shows_its_mde(suite_path):
    # 30 items, the adapter loses 5 the base had and gains none: Newcombe's interval excludes 0 while McNemar's
    # exact p is 2 / 2**5 = 0.0625, so the row is not significant and must say why its interval looks as if it were.
    samples = [{"label": label, "task": "mc", "doc_id": str(i), "doc_hash": f"h{i}", "prompt": "q", "prediction": "a",
                "reference": "a", "metrics": {"acc": float(label == "base" and i < 5)}}
               for label in ("base", "r8") for i in range(30)]
    evaluation = make_evaluation(suite_path, labels=("base", "r8"), samples=samples, scores=[
        {"label": label, "task": "mc", "metric": "acc", "value": value, "stderr": 0.05, "n": 30}
        for label, value in (("base", 5 / 30), ("r8", 0.0))])
    context = build_context([evaluation], iters=200)
    delta = next(r for r in context["table"] if r["metric"] == "acc")["deltas"]["r8"]
    assert delta["high"] < 0 and delta["p_value"] == pytest.approx(0.0625) and not delta["significant"]
    assert delta["disagrees"] and delta["mde"] >= 6 / 30  # six one-way flips are McNemar's least for p < 0.05
    files = render(context)
    row = next(line for line in files["report.md"].splitlines() if line.startswith("| mc | acc"))
    assert "†" in row and "(MDE 0.2" in row
    assert "†: the interval excludes 0 but the test does not reject" in files["report.md"]
    assert '<sup class="fn"' in files["report.html"] and "MDE 0.2" in files["report.html"]
    assert "\\textsuperscript{\\dag}" in files["report_table.tex"]
