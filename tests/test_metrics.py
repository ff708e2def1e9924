"""Metric functions: answer parsing, BLEU/ROUGE against their reference libraries, classification scores."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import pytest

from adapterbench.task_types.generation import ROUGE_KEYS
from adapterbench.tasks import metrics
from adapterbench.tasks.metrics import (
    bleu_corpus, classification_report, f1_macro, f1_weighted, label_slug, parse_choice, parse_label, per_class,
    process_classification_generate, process_classification_loglikelihood, process_generation, process_mc_generate,
    rouge_scores,
)

CITIES = ["Paris", "London", "Berlin", "Madrid"]


@pytest.mark.parametrize(("text", "expected"), [
    # bare letters
    ("B", 1), ("b", 1), ("b)", 1), ("B.", 1), ("B:", 1), ("(B)", 1), ("[B]", 1), ("**B**", 1), ("`C`", 2),
    ("\n\n   B", 1), ("B\nExplanation: London is the capital.", 1), ("a", 0), ("D", 3),
    # answer phrases
    ("Answer: B", 1), ("answer is B", 1), ("The answer is B.", 1), ("The correct answer is (B) London", 1),
    ("the answer is (d)", 3), ("Answer: b", 1), ("  \n**Answer:** B", 1), ("I think the answer is D", 3),
    ("Option B is correct", 1), ("answer: a", 0), ("The answer is B, not C", 1),
    ("The answer is B. Option C is wrong", 1), ("The answer is B because London is the capital", 1),
    # a leading marked letter
    ("B) London", 1), ("(B) London", 1), ("[c] Berlin", 2), ("A. Paris", 0), ("B: London", 1), ("B is correct", 1),
    ("B) Madrid", 1),  # letter and text disagree: the letter wins
    # choice text
    ("london", 1), ("London.", 1), ("  \"Berlin\"  ", 2), ("The answer is London", 1), ("London is the capital", 1),
    ("It's Berlin.", 2), ("Madrid\nBecause it is in Spain.", 3), ("Paris, not London", 0),
    # unparseable
    ("", None), ("   \n ", None), ("E", None), ("The answer is E.", None), ("A or B", None), ("(A) or (B)", None),
    ("B/C", None), ("The answer is B or C", None), ("I don't know", None), ("A model is a function", None),
    ("The answer is a city", None), ("The answer is A because", None),
    ("Answers vary", None), ("Rome", None),
])
def test_parse_choice_table(text, expected):
    assert parse_choice(text, CITIES) == expected


# Adversarial answers a careful reader calls unparseable (None), and their near misses that still name one option.
@pytest.mark.parametrize(("text", "expected"), [
    # an echoed option list is not an answer
    ("A. Paris\nB. London\nC. Berlin\nD. Madrid", None), ("A) Paris\nB) London", None),
    ("(A) Paris\n(B) London\n(C) Berlin", None), ("A\nB\nC\nD", None), ("Paris\nLondon\nBerlin\nMadrid", None),
    ("A. Paris B. London C. Berlin D. Madrid", None), ("A) Paris B) London", None),
    ("Paris, London, Berlin, Madrid", None), ("Paris, London, Berlin or Madrid", None), ("Options: A, B, C, D", None),
    ("B\nC", None), ("**A.** Paris\n**B.** London", None),
    # a negated choice is not chosen; what the answer affirms instead is
    ("Not Paris", None), ("Not A", None), ("not London.", None), ("It is not Berlin.", None),
    ("The answer is not B", None), ("Answer: not C", None), ("Definitely not Madrid", None), ("Never Berlin", None),
    ("Not Paris but London", 1), ("It isn't Paris, it's London", 1), ("London, not Paris", 1),
    ("Berlin rather than Madrid", 2), ("Madrid instead of Paris", 3), ("Anything except Paris", None),
    # several choices at once
    ("Answer: A, B", None), ("A, B", None), ("A and C", None), ("B, C and D", None), ("The answer is A, B or C", None),
    ("Answer: (A), (B)", None), ("A & B", None), ("Answers: B, D", None), ("Paris and London", None),
    ("London/Berlin", None), ("(B)/(C)", None), ("B; D", None),
    # alternatives
    ("Paris or London", None), ("Either Paris or London", None), ("B or maybe C", None), ("(B) or (D)", None),
    ("London or Berlin, hard to say", None), ("It's A or B", None), ("Answer: B (or possibly C)", None),
    ("B, perhaps D", None),
    # self-corrections: unparseable, not the last option named (see the docstring)
    ("Berlin? No - Madrid.", None), ("Berlin? No, Madrid.", None), ("Paris... actually London", None),
    ("B. Wait, no, C.", None), ("Answer: B\nActually C", None), ("B? No, C.", None),
    ("The answer is A. Sorry, I mean B.", None), ("London. Correction: Paris.", None), ("A, I mean D", None),
    ("Madrid. No wait, Berlin.", None), ("B -- scratch that, D", None), ("C? On second thought, A.", None),
    # trailing punctuation is ignored
    ("B,", 1), ("B!", 1), ("B;", 1), ("b!!", 1), ("(C),", 2), ("D.", 3), ("**B**!", 1), ("B .", 1),
    ("London!", 1), ("Berlin,", 2), ("Madrid;", 3), ("[A]!", 0),
    # near misses that still answer
    ("B) London is correct because it is the capital", 1), ("The answer is B, because London is the capital.", 1),
    ("Answer: C. Berlin is the capital of Germany.", 2), ("B. No other option fits.", 1), ("Answer: B (London)", 1),
    ("B, London", 1), ("London (B)", 1), ("The capital is London.", 1), ("Definitely London.", 1),
    ("London, of course.", 1), ("London, which is in England.", 1), ("Final answer: B", 1), ("Option C", 2),
    ("C is the answer", 2), ("(D) Madrid", 3), ("Paris is the capital of France", 0), ("B, not C", 1),
    ("Answer: D\nD. Madrid", 3), ("London; the others are not capitals of the UK", 1),
    ("B) London\nExplanation: the Thames runs through it.", 1), ("B, a city on the Thames", 1),
])
def test_parse_choice_refuses_lists_negations_alternatives_and_self_corrections(text, expected):
    assert parse_choice(text, CITIES) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("True", 0), ("False.", 1), ("True!", 0), ("A", 0), ("B.", 1), ("true (not false)", 0), ("It is true.", 0),
    ("Not true", None), ("Not false", None), ("It is not true", None), ("true, false", None), ("True or false", None),
    ("False? No, true.", None), ("A. True\nB. False", None), ("True/False", None), ("neither", None),
])
def test_parse_choice_true_false(text, expected):
    assert parse_choice(text, ["True", "False"]) == expected


SENTIMENTS = ["positive", "negative", "neutral"]


@pytest.mark.parametrize(("text", "expected"), [
    # echoed label lists, alternatives, self-corrections and negations
    ("positive, negative, neutral", None), ("Positive, negative or neutral", None),
    ("positive\nnegative\nneutral", None),
    ("positive / negative", None), ("Positive? No, negative.", None), ("Negative... actually positive", None),
    ("neutral - no, positive", None), ("Not positive", None), ("not negative.", None), ("Positive or negative", None),
    ("Positive and negative", None), ("positive, negative", None), ("Answer: positive, negative", None),
    ("Positive. Wait, negative.", None), ("negative, I mean neutral", None), ("positive or negative sentiment", None),
    ("Neutral (or maybe negative)", None), ("Label: neutral? Sorry, positive", None),
    # trailing punctuation and near misses that still answer
    ("Positive,", 0), ("Negative!", 1), ("neutral;", 2), ("POSITIVE.", 0),
    ("Positive, because the reviewer loves it.", 0), ("negative, clearly", 1), ("Neutral. The tone is flat.", 2),
    ("Label: negative", 1), ("The sentiment is positive", 0),
    ("positive sentiment", 0), ("Positive (not negative)", 0), ("positive, not negative", 0), ("Negative? Yes.", 1),
    ("**Neutral**", 2), ("Sentiment: positive!", 0),
    ("mixed", None), ("", None), ("pos", None), ("I cannot tell", None),
])
def test_parse_label_refuses_echoed_lists_alternatives_self_corrections_and_negations(text, expected):
    assert parse_label(text, SENTIMENTS, SENTIMENTS) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("Yes? No.", None), ("No. Yes.", None), ("yes or no", None), ("Yes, no doubt", 0), ("No, no.", 1), ("Yes!", 0),
    ("no,", 1), ("No!!", 1), ("Yes, no, maybe", None), ("no - yes", None),
])
def test_parse_label_yes_no_self_corrections(text, expected):
    assert parse_label(text, ["positive", "negative"], ["yes", "no"]) == expected


def test_parse_choice_article_a_is_not_letter_a_but_choice_text_still_counts():
    choices = ["a function", "a table", "a tree", "a graph"]
    assert parse_choice("A model is a function", choices) == 0
    assert parse_choice("A model is a mapping", choices) is None


def test_parse_choice_letters_stop_at_the_number_of_choices():
    assert parse_choice("C", ["yes", "no"]) is None
    assert parse_choice("Answer: C", ["yes", "no"]) is None
    assert parse_choice("E", ["a", "b", "c", "d", "e"]) == 4


def test_parse_choice_exact_text_of_a_choice_beats_an_out_of_range_letter():
    assert parse_choice("E", ["C", "E", "G", "B"]) == 1
    assert parse_choice("II", ["I", "II", "III", "IV"]) == 1


def test_parse_choice_longer_choice_hides_the_shorter_one_inside_it():
    assert parse_choice("It is Paris, Texas.", ["Paris", "Paris, Texas", "Rome"]) == 1


def test_parse_choice_duplicate_choices_are_unparseable():
    assert parse_choice("Paris", ["Paris", "paris", "Rome"]) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("yes", 0), ("Yes.", 0), ("no, because the tone is flat", 1), ("**No**", 1), ("No\nThe review is negative.", 1),
    ("positive", 0), ("NEGATIVE!", 1), ("Answer: no", 1), ("The answer is yes", 0),
    ("maybe", None), ("yes and no", None), ("Yes/No", None), ("yesterday", None), ("nope", None), ("", None),
])
def test_parse_label_table(text, expected):
    assert parse_label(text, ["positive", "negative"], ["yes", "no"]) == expected


def test_parse_label_longest_name_wins_for_multiword_verbalizers():
    labels, verbalizers = ["sarcastic", "not_sarcastic"], ["sarcastic", "not sarcastic"]
    assert parse_label("Not sarcastic.", labels, verbalizers) == 1
    assert parse_label("sarcastic, clearly", labels, verbalizers) == 0
    assert parse_label("not_sarcastic", labels, verbalizers) == 1


PREDICTIONS = ["The cat sat on the mat.", "", "LoRA learns a low-rank update  \n",
               "Perplexity is the exponential of the mean loss.", "running dogs ran quickly"]
REFERENCES = ["A cat was sitting on the mat.", "Nothing was generated here.", "LoRA learns a low-rank update of W.",
              "Perplexity is the exponential of the mean negative log-likelihood.", "the dog runs quickly"]


def test_bleu_equals_sacrebleu_corpus_bleu_on_the_stripped_predictions():
    import sacrebleu

    items = [process_generation({"id": str(i), "prompt": "", "reference": r}, [p])["bleu"]
             for i, (p, r) in enumerate(zip(PREDICTIONS, REFERENCES))]
    expected = sacrebleu.corpus_bleu([p.strip() for p in PREDICTIONS], [REFERENCES]).score
    assert bleu_corpus(items) == pytest.approx(expected, abs=1e-12)
    assert 0 < expected < 100
    assert bleu_corpus([list(item) for item in items]) == pytest.approx(expected, abs=1e-12)  # JSON round trip


def test_bleu_of_no_items_is_zero():
    assert bleu_corpus([]) == 0.0


def test_rouge_mean_over_samples_equals_rouge_score_called_directly():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    ours = [process_generation({"id": "x", "prompt": "", "reference": r}, [p]) for p, r in zip(PREDICTIONS, REFERENCES)]
    direct = [scorer.score(r, p.strip()) for p, r in zip(PREDICTIONS, REFERENCES)]
    keys = [k for k in ours[0] if k != "bleu"]
    assert len(keys) == 12 and set(keys) == set(ROUGE_KEYS)
    for kind in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        for part, attr in (("precision", "precision"), ("recall", "recall"), ("f1", "fmeasure")):
            key = f"{kind}_{part}"
            mean_ours = sum(o[key] for o in ours) / len(ours)
            mean_direct = sum(getattr(d[kind], attr) for d in direct) / len(direct)
            assert mean_ours == pytest.approx(mean_direct, abs=1e-12), key
    assert all(0.0 <= o[k] <= 1.0 for o in ours for k in keys)
    assert rouge_scores("dogs running", "the dog runs")["rouge1_recall"] > 0  # the stemmer is on


def test_process_mc_generate_counts_unparseable_as_wrong():
    doc = {"id": "q1", "question": "Capital of Germany?", "choices": CITIES, "answer": 2}
    assert process_mc_generate(doc, ["The answer is (C)."]) == {"acc": 1.0, "unparseable_rate": 0.0}
    assert process_mc_generate(doc, ["B"]) == {"acc": 0.0, "unparseable_rate": 0.0}
    assert process_mc_generate(doc, ["no idea"]) == {"acc": 0.0, "unparseable_rate": 1.0}


CLS_DOC = {"id": "c1", "text": "Great film.", "context": "", "label": 0, "labels": ["very positive", "négatif"],
           "verbalizers": ["yes", "no"]}
ITEM_KEYS = {"f1_macro", "f1_weighted", "precision_very_positive", "recall_very_positive", "f1_very_positive",
             "precision_negatif", "recall_negatif", "f1_negatif"}


def test_process_classification_generate_returns_acc_rate_and_items():
    out = process_classification_generate(CLS_DOC, ["No, it is not."])
    assert set(out) == {"acc", "unparseable_rate"} | ITEM_KEYS
    assert (out["acc"], out["unparseable_rate"]) == (0.0, 0.0)
    assert all(out[k] == (0, 1) for k in ITEM_KEYS)
    unparsed = process_classification_generate(CLS_DOC, ["hmm"])
    assert (unparsed["acc"], unparsed["unparseable_rate"], unparsed["f1_macro"]) == (0.0, 1.0, (0, -1))


def test_process_classification_loglikelihood_takes_the_argmax_first_on_ties():
    assert process_classification_loglikelihood(CLS_DOC, [(-2.0, False), (-0.5, True)])["f1_macro"] == (0, 1)
    tie = process_classification_loglikelihood(CLS_DOC, [(-1.0, False), (-1.0, False)])
    assert (tie["acc"], tie["unparseable_rate"], tie["f1_weighted"]) == (1.0, 0.0, (0, 0))


def test_label_slug_keeps_metric_names_to_word_characters():
    assert label_slug("very positive") == "very_positive"
    assert label_slug("négatif") == "negatif"
    assert label_slug("not-sarcastic!") == "not_sarcastic"
    assert label_slug("?!") == "label"


LABELS = ["neg", "neu", "pos"]
GOLDS = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
PREDS = [0, 1, -1, 1, 2, 2, 2, 0, -1, 0]


def test_classification_report_matches_hand_computed_values():
    report = classification_report(GOLDS, PREDS, LABELS)
    assert report["confusion"] == {"labels": ["neg", "neu", "pos", "unparseable"],
                                   "matrix": [[2, 1, 0, 1], [0, 1, 1, 0], [1, 0, 2, 1]]}
    assert report["acc"] == pytest.approx(0.5)
    assert report["unparseable_rate"] == pytest.approx(0.2)
    expected = {"neg": (2 / 3, 2 / 4, 4 / 7, 4), "neu": (1 / 2, 1 / 2, 1 / 2, 2), "pos": (2 / 3, 2 / 4, 4 / 7, 4)}
    for name, (p, r, f1, support) in expected.items():
        got = report["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f1))
        assert got["support"] == support
    assert report["f1_macro"] == pytest.approx(23 / 42)
    assert report["f1_weighted"] == pytest.approx(39 / 70)


def _reference_scores(golds, preds, n_labels):
    """Exact fractions counted straight from the pairs, independent of the module's confusion matrix."""
    pairs = list(zip(golds, preds))
    per = []
    for k in range(n_labels):
        tp = sum(1 for g, p in pairs if g == k and p == k)
        fp = sum(1 for g, p in pairs if g != k and p == k)
        fn = sum(1 for g, p in pairs if g == k and p != k)
        precision = Fraction(tp, tp + fp) if tp + fp else Fraction(0)
        recall = Fraction(tp, tp + fn) if tp + fn else Fraction(0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else Fraction(0)
        per.append((precision, recall, f1, tp + fn))
    macro = sum(f for _, _, f, _ in per) / n_labels
    weighted = sum(f * s for _, _, f, s in per) / sum(s for *_, s in per)
    return per, macro, weighted


@pytest.mark.parametrize(("golds", "preds", "labels"), [
    (GOLDS, PREDS, LABELS),
    ([0, 0, 1, 2, 2, 2, 1, 0, 1], [0, -1, 1, 2, 1, 2, 0, 0, -1], LABELS),
    ([0, 0, 1], [0, 1, 1], ["a", "b", "never seen"]),  # a label absent from golds and predictions
    ([0, 1, 1, 1], [-1, -1, -1, 1], ["x", "y"]),
])
def test_aggregations_and_report_agree_with_an_independent_count(golds, preds, labels):
    per, macro, weighted = _reference_scores(golds, preds, len(labels))
    report = classification_report(golds, preds, labels)
    items = list(zip(golds, preds))
    assert report["f1_macro"] == pytest.approx(float(macro))
    assert report["f1_weighted"] == pytest.approx(float(weighted))
    assert f1_macro(items, n_labels=len(labels)) == pytest.approx(float(macro))
    assert f1_weighted(items) == pytest.approx(float(weighted))
    assert report["acc"] == pytest.approx(sum(g == p for g, p in items) / len(items))
    for k, name in enumerate(labels):
        for metric, value in zip(("precision", "recall", "f1"), per[k][:3]):
            assert report["per_class"][name][metric] == pytest.approx(float(value))
            assert per_class(metric, k)(items) == pytest.approx(float(value))
            assert per_class(metric, k)([list(i) for i in items]) == pytest.approx(float(value))  # JSON round trip


def test_macro_and_weighted_f1_differ_on_an_imbalanced_example():
    items = [(0, 0)] * 8 + [(1, 0)] * 2  # the minority class is never predicted
    assert f1_macro(items) == pytest.approx((16 / 18 + 0) / 2)
    assert f1_weighted(items) == pytest.approx(0.8 * 16 / 18)


def test_zero_division_gives_zero_not_an_error():
    report = classification_report([0, 1], [-1, -1], ["a", "b"])
    assert report["acc"] == 0.0 and report["unparseable_rate"] == 1.0
    assert report["f1_macro"] == report["f1_weighted"] == 0.0
    assert all(s["precision"] == s["recall"] == s["f1"] == 0.0 for s in report["per_class"].values())
    assert per_class("precision", 2)([(0, 0), (1, 1)]) == 0.0  # a label neither gold nor predicted
    empty = classification_report([], [], ["a", "b"])
    assert (empty["acc"], empty["f1_macro"], empty["f1_weighted"]) == (0.0, 0.0, 0.0)


def test_macro_f1_counts_every_label_of_the_label_list():
    assert classification_report([0, 0], [0, 0], ["a", "b", "c"])["f1_macro"] == pytest.approx(1 / 3)
    assert f1_macro([(0, 0), (0, 0)], n_labels=3) == pytest.approx(1 / 3)


def test_out_of_range_indices_and_unknown_per_class_metric_are_rejected():
    with pytest.raises(ValueError):
        classification_report([0, 3], [0, 0], ["a", "b"])
    with pytest.raises(ValueError):
        classification_report([0, 1], [0, 2], ["a", "b"])
    with pytest.raises(ValueError):
        per_class("accuracy", 0)


def test_importing_the_module_loads_no_scoring_library():
    code = ("import sys, adapterbench.tasks.metrics; "
            "print(sorted(m for m in ('sacrebleu', 'rouge_score', 'nltk', 'numpy', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


MULTILINGUAL = [  # (prediction, reference)
    ("Кошка сидела на коврике.", "Кошка сидит на коврике."),
    ("Москва — столица России", "Столица России — Москва"),
    ("猫坐在垫子上。", "猫在垫子上坐着。"),
    ("東京は日本の首都です", "日本の首都は東京です"),
    ("Ελλάδα είναι όμορφη", "η Ελλάδα είναι πολύ όμορφη"),
    ("हिन्दी भाषा सुंदर है", "हिन्दी एक सुंदर भाषा है"),
]


def test_unicode_tokenizer_keeps_letters_marks_and_digits_and_splits_unspaced_scripts():
    tokenize = metrics.UnicodeTokenizer().tokenize
    assert tokenize("Кошка, сидит! 42") == ["кошка", "сидит", "42"]
    assert tokenize("猫坐在垫子上。") == ["猫", "坐", "在", "垫", "子", "上"]
    assert tokenize("हिन्दी भाषा") == ["हिन्दी", "भाषा"]  # vowel signs are marks: kept inside the word
    assert tokenize("Cafe\u0301 naïve") == ["café", "naïve"]  # NFC: a combining accent equals the composed letter


def test_rouge_for_other_languages_is_rouge_score_with_the_unicode_tokenizer_and_not_zero():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(metrics.ROUGE_TYPES), tokenizer=metrics.UnicodeTokenizer())
    default = rouge_scorer.RougeScorer(list(metrics.ROUGE_TYPES), use_stemmer=True)
    for prediction, reference in MULTILINGUAL:
        ours = rouge_scores(prediction, reference, language="ru")
        direct = scorer.score(reference, prediction)
        for kind in metrics.ROUGE_TYPES:
            assert ours[f"{kind}_f1"] == pytest.approx(direct[kind].fmeasure, abs=1e-12)
            assert ours[f"{kind}_recall"] == pytest.approx(direct[kind].recall, abs=1e-12)
        assert ours["rouge1_f1"] > 0.3 and default.score(reference, prediction)["rouge1"].fmeasure == 0.0
    # by hand: 猫坐在垫子上 vs 猫在垫子上坐着, six of six and six of seven characters shared
    assert rouge_scores("猫坐在垫子上。", "猫在垫子上坐着。", language="zh-Hans")["rouge1_f1"] == pytest.approx(
        2 * (6 / 6) * (6 / 7) / (6 / 6 + 6 / 7))


def test_english_rouge_stays_rouge_scores_default_exactly():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(metrics.ROUGE_TYPES), use_stemmer=True)
    texts = [*zip(PREDICTIONS, REFERENCES), ("the café was running", "a cafe runs"), ("dogs", "dog")]
    for language in ("en", "en-GB", "EN_us"):
        for prediction, reference in texts:
            ours, direct = rouge_scores(prediction, reference, language=language), scorer.score(reference, prediction)
            assert all(ours[f"{t}_f1"] == direct[t].fmeasure for t in metrics.ROUGE_TYPES)
    assert not metrics.is_english("de") and metrics.is_english(None)
    assert rouge_scores("running dogs", "the dog runs", language="de")["rouge1_f1"] == 0.0  # no English stemmer
