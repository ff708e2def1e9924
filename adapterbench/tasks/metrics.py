"""Metric functions our generated lm-eval tasks call: answer parsing (choices, labels), BLEU, ROUGE and
classification scores (per-sample hooks, their aggregations, and the full classification report)."""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Callable, Iterable, Sequence

from adapterbench.task_types.classification import label_slug
from adapterbench.task_types.generation import ROUGE_TYPES, is_english

# sacrebleu (~0.1 s) and rouge_score (~1.3 s: it pulls in nltk, numpy and pandas) are imported inside the
# functions that need them, so importing this module (the CLI, lm-eval's task indexing) stays cheap: ~0.1 s, most
# of it pydantic, which the task types' keys need.

UNPARSEABLE = -1

# ---------------------------------------------------------------------------------------------------------------
# Answer parsing
# ---------------------------------------------------------------------------------------------------------------

_MARKUP = re.compile(r"[*`]")  # markdown emphasis/code marks around answers ("**B**", "`B`")
_QUOTES = "\"'“”‘’«»"
_TRAILING = ".!?,;:"
# A letter written as a token: "(B)", "[B]", or B not glued to a word ("B." "B)" "B" but not "Be", "B's").
_LETTER = r"(?:\((?P<{0}p>[a-z])\)|\[(?P<{0}b>[a-z])\]|(?P<{0}l>[a-z])(?![\w'’]))"
_BARE = re.compile(r"\s*(?:\(([a-z])\)|\[([a-z])\]|([a-z])\)?)\s*[.:,;!?]*\s*", re.I)
_ANSWER = re.compile(
    r"\b(?P<kw>answer|option|choice)\b(?P<link>\s+(?:is|would\s+be|should\s+be|will\s+be)\b)?\s*(?P<sep>[:=\-])?\s*"
    + _LETTER.format("x"), re.I)
_LEADING = re.compile(
    r"(?:\((?P<p>[a-z])\)|\[(?P<b>[a-z])\]|(?P<l>[a-z])[).:,;!\-](?=\s|$)"
    r"|(?P<w>[a-z])\s+is\s+(?:the\s+)?(?:correct|right|best|answer)\b)", re.I)
_OTHER_LETTER = re.compile(_LETTER.format("y"), re.I)
_ANSWER_PREFIX = re.compile(
    r"^(?:the\s+)?(?:final\s+|correct\s+|right\s+)?(?:answer|label|class|category|sentiment|prediction)\b"
    r"(?:\s+is\b)?\s*:?\s*", re.I)
# What may stand between an answer and a second option it offers or corrects itself to: "A or B", "A, B", "A/B",
# "positive? No, negative", "Berlin? No - Madrid", "B. Wait, actually C", "A (or maybe B)".
_BETWEEN = re.compile(r"[\s,;:/&|?!.\-–—()\[\]\"'“”‘’«»…]+")
_OFFERING = re.compile(r"(?:or|and|no|nope|wait|actually|rather|maybe|perhaps|possibly|sorry|correction|also|either|"
                       r"i\s+mean|i\s+think|scratch\s+that|on\s+second\s+thought)\b", re.I)
# A mention right after one of these is what the answer rules out, not what it answers ("not Paris", "isn't B").
_NEGATED = re.compile(r"(?:\bnot|\bnever|\bnor|n't|\bno|\brather\s+than|\binstead\s+of|\bother\s+than|\bexcept)"
                      r"\s+(?:the\s+|a\s+|an\s+)?$", re.I)


def _strip_markup(text: str) -> str:
    return _MARKUP.sub("", text or "").strip()


def _norm(text: str) -> str:
    """Casefolded, whitespace collapsed, markup/quotes and trailing punctuation removed: the form compared."""
    text = " ".join(_strip_markup(text).casefold().split())
    return text.strip(_QUOTES).rstrip(_TRAILING).strip().strip(_QUOTES).strip()


def _letter_of(match: re.Match, prefix: str) -> str:
    return match.group(prefix + "p") or match.group(prefix + "b") or match.group(prefix + "l")


def _index(letter: str, n: int) -> int | None:
    i = ord(letter.upper()) - ord("A")
    return i if 0 <= i < n else None


def _offers_another(text: str, pos: int, index: int, option_at: Callable[[str, int], tuple[int, int] | None]) -> bool:
    """True when, after the answer ending at `pos`, the text offers a different option: a list ("A, B", echoed
    options "positive, negative, neutral"), alternatives ("Paris or London", "B/C") or a self-correction
    ("Positive? No, negative."). `option_at(text, pos)` gives (option index, end) of an option written at pos, or
    None. Only separators and offering words ("or", "no", "wait", "actually", ...) may stand between; a mention
    of the same option is passed over; anything else ("because ...", "not C") ends the search."""
    while pos < len(text):
        gap = _BETWEEN.match(text, pos)
        pos = gap.end() if gap else pos
        found = option_at(text, pos)
        if found is not None:
            if found[0] != index:
                return True
            pos = found[1]
            continue
        word = _OFFERING.match(text, pos)
        if word is None:
            return False
        pos = word.end()
    return False


def _other_letter(text: str, pos: int, n: int) -> tuple[int, int] | None:
    """A letter written as a token at pos, in range: (index, end). A bare "a" or "I" followed by a word is the
    article or the pronoun ("B, a city", "B, I think"), not a letter."""
    m = _OTHER_LETTER.match(text, pos)
    if not m:
        return None
    letter = _letter_of(m, "y")
    if m.group("yl") and letter in "aAI" and re.match(r"[ \t]+[A-Za-z]", text[m.end():]):
        return None
    index = _index(letter, n)
    return None if index is None else (index, m.end())


def _text_option(names: Sequence[tuple[str, int]]) -> Callable[[str, int], tuple[int, int] | None]:
    """option_at for option texts (normalized names, longest first) matched case-insensitively as whole words."""
    def option_at(text: str, pos: int) -> tuple[int, int] | None:
        rest = text[pos:].casefold()
        for name, index in names:
            if _starts_with(rest, name):
                # an offered name that is itself an offering word ("no") offers only when nothing follows it:
                # "Yes? No." corrects itself, "Yes, no doubt" does not
                if _OFFERING.fullmatch(name) and re.match(r"\s*\w", rest[len(name):]):
                    continue
                return index, pos + len(name)
        return None
    return option_at


def _choice_names(choices: Sequence[str]) -> list[tuple[str, int]]:
    return sorted(((_norm(c), i) for i, c in enumerate(choices) if _norm(c)), key=lambda item: -len(item[0]))


def _any_option(choices: Sequence[str]) -> Callable[[str, int], tuple[int, int] | None]:
    """option_at for a multiple-choice answer: a letter, or a choice's text."""
    by_text = _text_option(_choice_names(choices))
    return lambda text, pos: _other_letter(text, pos, len(choices)) or by_text(text, pos)


def _letter_from_answer_phrases(text: str, choices: Sequence[str]) -> int | None | bool:
    """Letters named by "answer is B", "Answer: (B)", "option B": the index, None when none, False when ambiguous.
    "answer" phrases outrank "option"/"choice" ones ("The answer is B; option C is wrong" -> B)."""
    n = len(choices)
    found: dict[bool, set[int]] = {True: set(), False: set()}
    for m in _ANSWER.finditer(text):
        letter = _letter_of(m, "x")
        index = _index(letter, n)
        if index is None:
            continue
        if m.group("xl"):
            rest = text[m.end():]
            followed_by_word = re.match(r"[ \t]+[A-Za-z]", rest) is not None
            # "The answer is a model ...", "answer: I think ..." use the article / pronoun, not a letter.
            if followed_by_word and letter in "aAiI" and (letter.islower() or m.group("link") or m.group("sep")):
                continue
        if _offers_another(text, _past_own_text(text, m.end(), choices), index, _any_option(choices)):
            return False
        found[m.group("kw").lower() == "answer"].add(index)
    letters = found[True] or found[False]
    if len(letters) > 1:
        return False
    return next(iter(letters)) if letters else None


def _past_own_text(text: str, pos: int, choices: Sequence[str]) -> int:
    """After a letter, skip the choice text written as its label ("B) London", "(B) Madrid": the letter decides)."""
    gap = re.match(r"[ \t]*[.:)\-]?[ \t]*", text[pos:])
    start = pos + gap.end()
    found = _text_option(_choice_names(choices))(text, start)
    return found[1] if found else pos


def _starts_with(text: str, name: str) -> bool:
    """text is name, or begins with it followed by a non-word character."""
    return text.startswith(name) and (len(text) == len(name) or not text[len(name)].isalnum())


def _exact_choice(text: str, choices: Sequence[str]) -> int | None:
    """The one choice equal to the answer, or to its first line, each also without an "The answer is" prefix."""
    normed = [_norm(c) for c in choices]
    answer, first_line = _norm(text), _norm(text.split("\n", 1)[0])
    for candidate in dict.fromkeys((answer, _ANSWER_PREFIX.sub("", answer), first_line,
                                    _ANSWER_PREFIX.sub("", first_line))):
        exact = [i for i, c in enumerate(normed) if c and c == candidate]
        if exact:
            return exact[0] if len(exact) == 1 else None  # duplicate choices: no way to tell them apart
    return None


def _contained_choice(text: str, choices: Sequence[str]) -> int | None:
    """The choices the answer affirms as whole words: a mention right after a negation ("not Paris", "rather than
    Paris") does not count, nor one inside a longer matched choice ("Paris, Texas" hides "Paris"). The single one
    left, or the one the answer (without an "The answer is" prefix) starts with, unless it goes on to offer
    another ("Paris or London", "Berlin? No - Madrid")."""
    answer = _ANSWER_PREFIX.sub("", _norm(text))
    hits = {i: [m.span() for m in re.finditer(rf"(?<!\w){re.escape(c)}(?!\w)", answer)
                if not _NEGATED.search(answer[:m.start()])]
            for i, c in enumerate(_norm(c) for c in choices) if c}
    hits = {i: spans for i, spans in hits.items() if spans}

    def inside_longer(i: int) -> bool:
        return all(any(j != i and a2 <= a and b <= b2 and b2 - a2 > b - a for j in hits for a2, b2 in hits[j])
                   for a, b in hits[i])

    alive = [i for i in hits if not inside_longer(i)]
    if len(alive) == 1:
        return alive[0]
    starting = [i for i in alive if any(a == 0 for a, _ in hits[i])]
    if len(starting) != 1:
        return None
    end = max(b for a, b in hits[starting[0]] if a == 0)
    return None if _offers_another(answer, end, starting[0], _any_option(choices)) else starting[0]


def _echoed_options(text: str, choices: Sequence[str]) -> bool:
    """Two or more lines each naming a different option by itself ("A. Paris\nB. London", "A\nB", "Paris\nRome"):
    the options echoed back, not an answer."""
    named = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        bare, lead = _BARE.fullmatch(line), _LEADING.match(line.strip())
        letter = next((g for g in bare.groups() if g), None) if bare else (
            next((g for g in lead.groups() if g), None) if lead and not lead.group("w") else None)
        index = _index(letter, len(choices)) if letter else _exact_choice(line, choices)
        if index is not None:
            named.add(index)
    return len(named) > 1


def parse_choice(text: str, choices: Sequence[str]) -> int | None:
    """Map a generated answer to a choice index, or None when it is unparseable.

    Letters run A.. up to len(choices) (case-insensitive); a letter past the last choice is no letter. Markdown
    marks (``*``, backticks), surrounding whitespace and trailing punctuation ("B,", "B!") are ignored. An answer
    that echoes the options (two lines each naming a different one) is None. Then, in order, the first rule that
    decides wins:
    1. The first non-empty line is a bare letter: "B", "b", "b)", "B.", "B:", "B!", "(B)", "[B]", "**B**".
    2. The whole answer (or its first line, with or without a leading "The answer is"/"Answer:") equals one
       choice's text after normalizing case, whitespace, quotes and trailing punctuation.
    3. An answer phrase names a letter: "Answer: B", "answer is B", "The correct answer is (B) ...", "option B".
       After "answer is"/"answer:", an unbracketed "A"/"I" followed by a word is read as the article/pronoun
       ("The answer is a model ...") and skipped. Two different letters named -> None; "answer" phrases outrank
       "option"/"choice" ones.
    4. The answer starts with a marked letter: "B) Paris", "(B) Paris", "[B] Paris", "B. Paris", "B: Paris",
       "B, not C", "B is correct". A bare "A" followed by a word ("A model ...") is never a letter.
    5. The choices' texts the answer affirms (see ``_contained_choice``: negated mentions do not count): exactly
       one, or the one the answer starts with.
    A letter or choice followed by a different option, with only separators and words such as "or", "no",
    "wait", "actually" between ("A or B", "Answer: A, B", "B/C", "Berlin? No - Madrid", "B. Wait, C"), is None:
    lists, alternatives and self-corrections are not answers (a self-correction's last option is not taken:
    "B? No, C. Or B." shows why). So are empty text, a letter out of range with no matching choice text, a choice
    only negated ("Not Paris"), and text naming no choice. When a letter and the choice text written as its
    label disagree ("B) London" with London as choice C), the letter wins.
    """
    text = _strip_markup(text)
    if not text or _echoed_options(text, choices):
        return None
    n = len(choices)
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    bare = _BARE.fullmatch(first_line)
    if bare:
        index = _index(next(g for g in bare.groups() if g), n)
        if index is not None:
            return index
    exact = _exact_choice(text, choices)
    if exact is not None:
        return exact
    named = _letter_from_answer_phrases(text, choices)
    if named is False:
        return None
    if named is not None:
        return named
    lead = _LEADING.match(text)
    if lead:
        index = _index(next(g for g in lead.groups() if g), n)
        if index is not None:
            end = lead.end() if lead.group("w") else _past_own_text(text, lead.end(), choices)
            return None if _offers_another(text, end, index, _any_option(choices)) else index
    return _contained_choice(text, choices)


def parse_label(text: str, labels: Sequence[str], verbalizers: Sequence[str]) -> int | None:
    """Map a generated answer to a label index, or None when it is unparseable.

    Names are each label's verbalizer and its label name, compared normalized (case, whitespace, markdown marks,
    quotes, trailing punctuation). The answer, with a leading "Answer:"/"Label:"/"The answer is" dropped when that
    alone does not match, must equal a name or start with one followed by a non-word character ("Yes." -> yes,
    "no, because ..." -> no). The longest name that matches decides, so "not sarcastic" is not read as "not";
    names of two labels matching equally -> None. So does a second label offered after it (an echoed label list
    "positive, negative, neutral", alternatives "yes/no", "positive or negative", a self-correction "Positive? No,
    negative."), and a negated label ("Not positive": no label starts it).
    """
    names = sorted({(_norm(name), i) for i, pair in enumerate(zip(verbalizers, labels)) for name in pair
                    if _norm(name)}, key=lambda item: -len(item[0]))
    answer = _norm(text)
    for candidate in dict.fromkeys((answer, _ANSWER_PREFIX.sub("", answer))):
        matches = [(name, i) for name, i in names if _starts_with(candidate, name)]
        if not matches:
            continue
        longest = len(matches[0][0])
        indices = {i for name, i in matches if len(name) == longest}
        if len(indices) > 1:
            return None
        index = indices.pop()
        return None if _offers_another(candidate, longest, index, _text_option(names)) else index
    return None


# ---------------------------------------------------------------------------------------------------------------
# Generation metrics
# ---------------------------------------------------------------------------------------------------------------

# Scripts written without spaces between words (Thai, Lao, Myanmar, Khmer, kana, CJK ideographs): each character is
# a token, the character-level ROUGE usual for Chinese and Japanese.
_UNSPACED = ((0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x3040, 0x30FF), (0x31F0, 0x31FF),
             (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FFFF))


class UnicodeTokenizer:
    """A rouge-score tokenizer (its `tokenize(text)` interface) for every script: text lowercased and NFC-normalized,
    each run of Unicode letters, marks and digits one token, each character of an unspaced script one token,
    everything else a separator; no stemming. rouge-score's default keeps only [a-z0-9], so any other script
    scores 0."""

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        word: list[str] = []
        for ch in unicodedata.normalize("NFC", text.lower()):
            unspaced = any(low <= ord(ch) <= high for low, high in _UNSPACED)
            if not unspaced and unicodedata.category(ch)[0] in "LMN":
                word.append(ch)
                continue
            if word:
                tokens.append("".join(word))
                word = []
            if unspaced:
                tokens.append(ch)
        if word:
            tokens.append("".join(word))
        return tokens


@functools.lru_cache(maxsize=2)
def _rouge_scorer(english: bool):
    from rouge_score import rouge_scorer

    if english:  # rouge-score's defaults with the Porter stemmer: scores comparable with everyone else's
        return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=UnicodeTokenizer())


def rouge_scores(prediction: str, reference: str, *, language: str = "en") -> dict[str, float]:
    """rouge-score's precision/recall/F1 (in [0, 1]) of rouge1/2/L/Lsum: for English its default tokenizer with the
    Porter stemmer, for any other language the UnicodeTokenizer without stemming."""
    # rouge-score's argument order is (target, prediction)
    scores = _rouge_scorer(is_english(language)).score(reference, prediction)
    return {f"{t}_{part}": float(getattr(scores[t], attr)) for t in ROUGE_TYPES
            for part, attr in (("precision", "precision"), ("recall", "recall"), ("f1", "fmeasure"))}


@functools.lru_cache(maxsize=1)
def _bleu():
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True)  # only its per-sentence counts are used; effective_order silences a warning


@functools.lru_cache(maxsize=1 << 16)
def _bleu_statistics(prediction: str, reference: str) -> tuple:
    """One item's BLEU sufficient statistics (lengths, n-gram matches and totals). Corpus BLEU sums them, so a
    bootstrap over items re-sums cached numbers instead of re-tokenizing every resample."""
    score = _bleu().sentence_score(prediction, [reference])
    return (score.sys_len, score.ref_len, *score.counts, *score.totals)


def bleu_corpus(items: Iterable[Sequence[str]]) -> float:
    """sacrebleu's corpus BLEU (0-100, default settings) over (prediction, reference) items; 0.0 for no items."""
    items = list(items)
    if not items:
        return 0.0  # sacrebleu raises IndexError on an empty corpus
    totals = [sum(column) for column in zip(*(_bleu_statistics(p, r) for p, r in items))]
    order = _bleu().max_ngram_order
    return float(_bleu().compute_bleu(correct=totals[2:2 + order], total=totals[2 + order:], sys_len=totals[0],
                                      ref_len=totals[1], smooth_method="exp", effective_order=False,
                                      max_ngram_order=order).score)


def bleu_statistics(items: Iterable[Sequence[str]]):
    """Per-item BLEU sufficient statistics as a float array (items x (2 + 2 * order)): sys_len, ref_len, n-gram
    matches, n-gram totals. Summing rows of it and calling `bleu_from_statistics` is `bleu_corpus` of those rows."""
    import numpy as np

    width = 2 + 2 * _bleu().max_ngram_order
    return np.array([_bleu_statistics(p, r) for p, r in items], dtype=float).reshape(-1, width)


def bleu_from_statistics(totals):
    """Corpus BLEU (0-100) for each row of summed statistics (... x (2 + 2 * order)), vectorised: sacrebleu's
    compute_bleu with its default exp smoothing, so a bootstrap scores thousands of resamples in one call."""
    import numpy as np

    totals = np.asarray(totals, dtype=float)
    order = _bleu().max_ngram_order
    sys_len, ref_len = totals[..., 0], totals[..., 1]
    correct, total = totals[..., 2:2 + order], totals[..., 2 + order:]
    with np.errstate(divide="ignore", invalid="ignore"):
        # exp smoothing: the k-th order with no match gets precision 100 / (2**k * total)
        misses = np.cumsum(correct == 0, axis=-1)
        precision = np.where(correct > 0, 100 * correct / total, 100 / (2.0 ** misses * total))
        brevity = np.where(sys_len >= ref_len, 1.0, np.exp(1 - ref_len / sys_len))
        score = brevity * np.exp(np.log(precision).mean(axis=-1))
    # sacrebleu scores 0 when nothing matches (an empty output included) or when an order has no n-grams at all.
    zero = ~(correct > 0).any(axis=-1) | (total == 0).any(axis=-1)
    return np.where(zero, 0.0, score)


def process_generation(doc: dict, results: Sequence[str], language: str = "en") -> dict:
    """lm-eval hook for a generation doc: the BLEU item and the 12 ROUGE scores of the stripped output (ROUGE in
    the task's `language`, bound in the generated utils.py for tasks not in English)."""
    prediction = (results[0] or "").strip()
    return {"bleu": (prediction, doc["reference"]), **rouge_scores(prediction, doc["reference"], language=language)}


def process_mc_generate(doc: dict, results: Sequence[str]) -> dict:
    """lm-eval hook for a multiple-choice doc answered by generation; an unparseable answer counts as wrong."""
    pred = parse_choice(results[0], doc["choices"])
    return {"acc": float(pred == doc["answer"]), "unparseable_rate": float(pred is None)}


# ---------------------------------------------------------------------------------------------------------------
# Classification metrics
# ---------------------------------------------------------------------------------------------------------------

def _classification_result(doc: dict, pred: int) -> dict:
    item = (int(doc["label"]), pred)
    out = {"acc": float(pred == doc["label"]), "unparseable_rate": float(pred == UNPARSEABLE),
           "f1_macro": item, "f1_weighted": item}
    for name in doc["labels"]:
        slug = label_slug(name)
        out.update({f"precision_{slug}": item, f"recall_{slug}": item, f"f1_{slug}": item})
    return out


def process_classification_generate(doc: dict, results: Sequence[str]) -> dict:
    """lm-eval hook for a classification doc answered by generation; items are (gold, pred or -1)."""
    pred = parse_label(results[0], doc["labels"], doc["verbalizers"])
    return _classification_result(doc, UNPARSEABLE if pred is None else pred)


def process_classification_loglikelihood(doc: dict, results: Sequence[Sequence]) -> dict:
    """lm-eval hook for a classification doc scored by log-likelihood of each verbalizer: pred = argmax (the first
    on ties, as lm-eval's own acc), never unparseable."""
    lls = [float(r[0]) for r in results]
    return _classification_result(doc, max(range(len(lls)), key=lls.__getitem__))


def _confusion(golds: Sequence[int], preds: Sequence[int], n_labels: int) -> list[list[int]]:
    """Rows gold, columns predicted, with a last column for unparseable predictions."""
    matrix = [[0] * (n_labels + 1) for _ in range(n_labels)]
    for gold, pred in zip(golds, preds, strict=True):
        if not 0 <= gold < n_labels or not -1 <= pred < n_labels:
            raise ValueError(f"gold {gold} / prediction {pred} outside {n_labels} labels (-1 = unparseable)")
        matrix[gold][n_labels if pred == UNPARSEABLE else pred] += 1
    return matrix


def _class_stats(matrix: list[list[int]]) -> list[dict[str, float]]:
    """Per label: precision, recall, F1 (0.0 where undefined, like sklearn's zero_division=0) and gold support.
    An unparseable prediction is a false negative of its gold label and a false positive of none."""
    stats = []
    for k in range(len(matrix)):
        tp = matrix[k][k]
        support = sum(matrix[k])
        predicted = sum(row[k] for row in matrix)
        stats.append({"precision": tp / predicted if predicted else 0.0, "recall": tp / support if support else 0.0,
                      "f1": 2 * tp / (predicted + support) if predicted + support else 0.0, "support": support})
    return stats


def _averages(stats: list[dict[str, float]]) -> tuple[float, float]:
    """(macro F1 over every label, support-weighted F1 over the gold labels)."""
    total = sum(s["support"] for s in stats)
    macro = sum(s["f1"] for s in stats) / len(stats) if stats else 0.0
    weighted = sum(s["f1"] * s["support"] for s in stats) / total if total else 0.0
    return macro, weighted


def classification_report(golds: Sequence[int], preds: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, unparseable rate, macro/weighted F1, per-class precision/recall/F1/support, and the confusion
    matrix (rows gold, columns predicted, the last column "unparseable") for predictions where -1 = unparseable."""
    matrix = _confusion(golds, preds, len(labels))
    stats = _class_stats(matrix)
    macro, weighted = _averages(stats)
    n = len(golds)
    return {"acc": sum(matrix[k][k] for k in range(len(labels))) / n if n else 0.0,
            "unparseable_rate": sum(row[-1] for row in matrix) / n if n else 0.0,
            "f1_macro": macro, "f1_weighted": weighted,
            "per_class": dict(zip(labels, stats)),
            "confusion": {"labels": [*labels, "unparseable"], "matrix": matrix}}


def _stats_of_items(items: Iterable[Sequence[int]], n_labels: int | None) -> list[dict[str, float]]:
    # lm-eval hands aggregations only the items, so the label count is the one given or the highest index seen:
    # labels past that index, absent from both golds and predictions, are then left out of the macro mean.
    pairs = [(int(g), int(p)) for g, p in items]
    n = max([n_labels or 0] + [max(g, p) + 1 for g, p in pairs])
    return _class_stats(_confusion([g for g, _ in pairs], [p for _, p in pairs], n))


def f1_macro(items: Iterable[Sequence[int]], n_labels: int | None = None) -> float:
    """Aggregation: unweighted mean of the per-label F1 over (gold, pred) items."""
    return _averages(_stats_of_items(items, n_labels))[0]


def f1_weighted(items: Iterable[Sequence[int]], n_labels: int | None = None) -> float:
    """Aggregation: gold-support-weighted mean of the per-label F1 over (gold, pred) items."""
    return _averages(_stats_of_items(items, n_labels))[1]


def per_class(metric: str, label_index: int) -> Callable[[Iterable[Sequence[int]]], float]:
    """An aggregation giving "precision", "recall" or "f1" of one label over (gold, pred) items."""
    if metric not in ("precision", "recall", "f1"):
        raise ValueError(f"per_class metric must be precision, recall or f1, not {metric!r}")

    def aggregate(items: Iterable[Sequence[int]]) -> float:
        return _stats_of_items(items, label_index + 1)[label_index][metric]

    aggregate.__name__ = aggregate.__qualname__ = f"{metric}_{label_index}"
    return aggregate
