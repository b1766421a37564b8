"""Generation metrics (ROUGE, BLEU, METEOR) with per-example scores and bootstrap CIs.

Everything runs offline. The usual recipes reach for NLTK's punkt (sentence splitting) and
`nltk.download("wordnet")`, neither of which exists without the internet, so:

- sentences are split by nupunkt (a pure-Python punkt that ships its model in the wheel,
  Python >= 3.11) and otherwise by a simple regex; `SENTENCE_SPLITTER` says which is in use,
  because rougeLsum depends on it;
- METEOR tokens come from NLTK's regex Treebank tokenizer (what `word_tokenize` runs after
  punkt) applied to those sentences, so no punkt data is needed;
- WordNet for METEOR is an existing NLTK wordnet corpus if there is one, else one built once
  from Debian's wordnet-base + wordnet-sense-index files (see `load_wordnet`).

A failed generation (None) is scored as the empty string, never dropped: dropping it would
reward a model for failing on the hard examples.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends.aliases import cache_dir
from harness.compare.stats import bootstrap_ci, iter_bootstrap_indices, percentile_interval
from harness.errors import BenchError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

Reference = str | Sequence[str]  # one reference, or several for the same example

# ------------------------------------------------------------------ sentences and tokens

_nupunkt_sent_tokenize: Callable[[str], list[Any]] | None
try:  # nupunkt needs Python >= 3.11; its default model ships inside the wheel
    from nupunkt import sent_tokenize as _nupunkt_sent_tokenize

    SENTENCE_SPLITTER = "nupunkt"
except ImportError:  # pragma: no cover - depends on the interpreter
    _nupunkt_sent_tokenize = None
    SENTENCE_SPLITTER = "regex"

# End punctuation (optionally closed by a quote/bracket), whitespace, then something that
# looks like a sentence start. Crude next to punkt: "Dr. Smith" splits, which only matters
# for rougeLsum, and only on the machines without nupunkt.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`: newlines always end a sentence, then nupunkt (or the regex) splits."""
    sentences: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if _nupunkt_sent_tokenize is not None:
            parts = _nupunkt_sent_tokenize(line)
        else:
            parts = _SENTENCE_END.split(line)
        sentences.extend(str(p).strip() for p in parts if str(p).strip())
    return sentences


def word_tokenize(text: str) -> list[str]:
    """NLTK's `word_tokenize` without punkt: our sentence split, then its Treebank regexes."""
    from nltk.tokenize import NLTKWordTokenizer

    tokenizer = NLTKWordTokenizer()
    return [tok for sentence in split_sentences(text) for tok in tokenizer.tokenize(sentence)]


# ------------------------------------------------------------------ ROUGE


def rouge_scores(
    predictions: Sequence[str | None], references: Sequence[Reference]
) -> dict[str, dict[str, Any]]:
    """ROUGE-1/2/L/Lsum F-measures: {type: {"mean": float, "per_example": [float]}}.

    rouge-score with use_stemmer=True. The mean of per-example F1 is what HF `evaluate`
    reports without its bootstrap aggregator. With several references an example takes the
    best-F reference per type (rouge-score's score_multi, as `evaluate` does). rougeLsum
    is computed on text re-joined one sentence per line, because rouge-score only treats
    newlines as sentence boundaries and would otherwise give rougeLsum == rougeL.
    """
    from rouge_score import rouge_scorer

    preds, refs = _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    per: dict[str, list[float]] = {t: [] for t in ROUGE_TYPES}
    for pred, ref_list in zip(preds, refs):
        scores = scorer.score_multi(
            [_one_sentence_per_line(r) for r in ref_list], _one_sentence_per_line(pred)
        )
        for t in ROUGE_TYPES:
            per[t].append(float(scores[t].fmeasure))
    return {t: {"mean": float(np.mean(v)), "per_example": v} for t, v in per.items()}


def _one_sentence_per_line(text: str) -> str:
    return "\n".join(split_sentences(text))


# ------------------------------------------------------------------ BLEU


def bleu_scores(
    predictions: Sequence[str | None], references: Sequence[Reference]
) -> dict[str, Any]:
    """sacrebleu corpus BLEU (13a, exp smoothing, 0..100) plus per-example sentence BLEU.

    Corpus BLEU is not the mean of sentence BLEUs, so the per-example n-gram statistics are
    returned too (`stats`: rows of [sys_len, ref_len, 4 match counts, 4 totals]); summed
    over any subset they give that subset's corpus BLEU, which is what the bootstrap uses.
    Sentence BLEU uses sacrebleu's sentence defaults (exp smoothing, effective order): it is
    for paired tests on individual examples, not for reporting.
    """
    from sacrebleu.metrics import BLEU

    preds, refs = _check_pairs(predictions, references)
    streams = _reference_streams(refs)
    corpus = BLEU().corpus_score(preds, streams)  # type: ignore[arg-type]  # None pads ragged refs
    sentence_metric = BLEU(effective_order=True)
    sentence: list[float] = []
    stats: list[list[int]] = []
    for pred, ref_list in zip(preds, refs):
        s = sentence_metric.sentence_score(pred, list(ref_list))
        sentence.append(float(s.score))
        stats.append([int(s.sys_len), int(s.ref_len), *map(int, s.counts), *map(int, s.totals)])
    return {
        "score": float(corpus.score),
        "precisions": [float(p) for p in corpus.precisions],
        "bp": float(corpus.bp),
        "length_ratio": float(corpus.ratio),
        "sys_len": int(corpus.sys_len),
        "ref_len": int(corpus.ref_len),
        "per_example": sentence,
        "stats": stats,
    }


def bleu_from_stats(stats: np.ndarray) -> float:
    """Corpus BLEU (0..100, sacrebleu's corpus defaults) from summed per-example statistics."""
    from sacrebleu.metrics import BLEU

    row = [int(x) for x in np.asarray(stats).reshape(-1)]
    return float(
        BLEU.compute_bleu(row[2:6], row[6:10], row[0], row[1], smooth_method="exp").score
    )


def _reference_streams(refs: list[list[str]]) -> list[list[str | None]]:
    """Per-example reference lists -> sacrebleu's reference streams, None-padded if ragged."""
    width = max(len(r) for r in refs)
    return [[r[i] if i < len(r) else None for r in refs] for i in range(width)]


def _bleu_ci(stats: list[list[int]], resamples: int, seed: int) -> tuple[float, float]:
    """Percentile CI of corpus BLEU over resampled examples (recomputed, not averaged)."""
    s = np.asarray(stats, dtype=np.int64)
    n = s.shape[0]
    values: list[float] = []
    for idx in iter_bootstrap_indices(n, resamples, seed):
        rows = idx.shape[0]
        # Example multiplicities per resample, one bincount for the whole block.
        flat = (idx + (np.arange(rows, dtype=np.int64) * n)[:, None]).ravel()
        weights = np.bincount(flat, minlength=rows * n).reshape(rows, n)
        values.extend(bleu_from_stats(total) for total in weights @ s)
    return percentile_interval(np.asarray(values), 0.95)


# ------------------------------------------------------------------ METEOR and WordNet

DEBIAN_WORDNET = Path("/usr/share/wordnet")
WORDNET_FIX = (
    "apt-get install -y wordnet-base wordnet-sense-index (Debian/Ubuntu), "
    "or set NLTK_DATA to a folder holding corpora/wordnet"
)

# The 45 WordNet 3.0 lexicographer files, numbered as in the lex_filenum field of the data
# files. NLTK reads them from a `lexnames` file that Debian's packages do not ship.
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal",
    "noun.artifact", "noun.attribute", "noun.body", "noun.cognition", "noun.communication",
    "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive",
    "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
    "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
    "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
    "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)
_LEX_POS = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
# Files NLTK's WordNetCorpusReader opens, less `lexnames`, which we generate.
WORDNET_FILES = (
    "cntlist.rev", "index.sense", "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb", "adj.exc", "adv.exc", "noun.exc",
    "verb.exc",
)

_WORDNET_READERS: dict[str, Any] = {}


def nltk_data_dir() -> Path:
    """Where bench builds NLTK data: <bench cache>/nltk_data (BENCH_CACHE moves it)."""
    return cache_dir() / "nltk_data"


def lexnames_text() -> str:
    """The `lexnames` file NLTK expects: 'NN<TAB>name<TAB>pos-number', one line per file."""
    return "".join(
        f"{i:02d}\t{name}\t{_LEX_POS[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES)
    )


def build_wordnet(source: Path | None = None, nltk_data: Path | None = None) -> Path:
    """Copy a WordNet 3.0 dict folder into <nltk_data>/corpora/wordnet, plus `lexnames`.

    Copies, not links: NLTK (3.9+) refuses corpus roots outside its data path and opens
    files without following symlinks. Built in a temporary folder and renamed into place,
    so a half-copied corpus is never found. Returns the corpus folder.
    """
    src = Path(source or os.environ.get("WNSEARCHDIR") or DEBIAN_WORDNET)
    missing = [f for f in WORDNET_FILES if not (src / f).is_file()]
    if len(missing) == len(WORDNET_FILES):
        raise BenchError(f"WordNet not found (no NLTK wordnet corpus, nothing in {src}): {WORDNET_FIX}")
    if missing:
        raise BenchError(f"incomplete WordNet in {src} (no {', '.join(missing)}): {WORDNET_FIX}")
    corpora = Path(nltk_data or nltk_data_dir()) / "corpora"
    target = corpora / "wordnet"
    if (target / "lexnames").is_file():
        return target
    corpora.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=corpora, prefix=".wordnet-"))
    try:
        for name in WORDNET_FILES:
            shutil.copyfile(src / name, staging / name)
        (staging / "lexnames").write_text(lexnames_text(), encoding="utf-8")
        try:
            staging.rename(target)
        except OSError:  # another process finished first; keep theirs
            if not (target / "lexnames").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def load_wordnet() -> Any:
    """An NLTK WordNetCorpusReader, found or built offline; cached per corpus folder.

    Order: an NLTK wordnet corpus on nltk.data.path (NLTK_DATA, ~/nltk_data, ...); the one
    bench built in its cache; a fresh build from $WNSEARCHDIR or /usr/share/wordnet
    (Debian's wordnet-base + wordnet-sense-index). Raises BenchError naming the fix when
    none exists, rather than letting NLTK try to download.
    """
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    root: Any = None
    try:
        root = nltk.data.find("corpora/wordnet")
    except LookupError:
        bench_data = nltk_data_dir()
        built = bench_data / "corpora" / "wordnet"
        if (built / "lexnames").is_file():
            if (built / "lexnames").read_text(encoding="utf-8") != lexnames_text():
                (built / "lexnames").write_text(lexnames_text(), encoding="utf-8")  # stale build
            root = str(built)
        else:
            root = str(build_wordnet(nltk_data=bench_data))
        # NLTK only opens corpora under its data path.
        if str(bench_data) not in nltk.data.path:
            nltk.data.path.append(str(bench_data))
    key = str(getattr(root, "path", root))  # a FileSystemPathPointer or ZipFilePathPointer
    if key not in _WORDNET_READERS:
        try:
            with warnings.catch_warnings():  # "multilingual functions are not available"
                warnings.simplefilter("ignore")
                _WORDNET_READERS[key] = WordNetCorpusReader(root, None)
        except (OSError, ValueError, AssertionError, LookupError) as exc:
            raise BenchError(f"WordNet at {key} is unreadable ({exc}): {WORDNET_FIX}") from exc
    return _WORDNET_READERS[key]


def meteor_scores(
    predictions: Sequence[str | None], references: Sequence[Reference]
) -> dict[str, Any]:
    """NLTK METEOR (alpha 0.9, beta 3, gamma 0.5, WordNet synonyms) per example, and the mean.

    As HF `evaluate` computes it: per-example meteor_score over that example's references
    (NLTK takes the best), then the plain mean. Tokens come from `word_tokenize` above.
    Note NLTK matches synonyms on the *stemmed* leftovers of its stem stage, so a pair like
    big/large (stem "larg") is not matched; that is NLTK's behaviour, kept for comparability.
    """
    from nltk.translate.meteor_score import meteor_score

    preds, refs = _check_pairs(predictions, references)
    wordnet = load_wordnet()
    per = [
        float(meteor_score([word_tokenize(r) for r in ref_list], word_tokenize(pred), wordnet=wordnet))
        for pred, ref_list in zip(preds, refs)
    ]
    return {"mean": float(np.mean(per)), "per_example": per}


# ------------------------------------------------------------------ report


def text_report(
    predictions: Sequence[str | None],
    references: Sequence[Reference],
    *,
    meteor: bool = True,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """ROUGE-1/2/L/Lsum, BLEU and METEOR, each {"value", "ci"} with a seeded 95% bootstrap CI.

    ROUGE and METEOR are 0..1 means of per-example scores; BLEU is sacrebleu's corpus score
    on its 0..100 scale, its CI recomputed from resampled n-gram statistics. `per_example`
    holds the lists paired tests need (sentence BLEU for BLEU). meteor=False skips METEOR
    (and its WordNet requirement). JSON-ready.
    """
    preds, refs = _check_pairs(predictions, references)
    n = len(preds)
    report: dict = {
        "n": n,
        "failures": sum(p is None for p in predictions),
        "sentence_splitter": SENTENCE_SPLITTER,
    }
    per_example: dict[str, list[float]] = {}

    rouge = rouge_scores(preds, refs)
    for t in ROUGE_TYPES:
        report[t] = _with_ci(rouge[t]["mean"], rouge[t]["per_example"], resamples, seed)
        per_example[t] = rouge[t]["per_example"]

    bleu = bleu_scores(preds, refs)
    lo, hi = _bleu_ci(bleu["stats"], resamples, seed) if resamples > 0 else (bleu["score"],) * 2
    report["bleu"] = {
        "value": bleu["score"],
        "ci": [lo, hi],
        **{k: bleu[k] for k in ("precisions", "bp", "length_ratio", "sys_len", "ref_len")},
    }
    per_example["bleu"] = bleu["per_example"]

    if meteor:
        met = meteor_scores(preds, refs)
        report["meteor"] = _with_ci(met["mean"], met["per_example"], resamples, seed)
        per_example["meteor"] = met["per_example"]

    report["per_example"] = per_example
    return report


def _with_ci(value: float, per: list[float], resamples: int, seed: int) -> dict[str, Any]:
    lo, hi = bootstrap_ci(per, resamples=resamples, seed=seed)
    return {"value": value, "ci": [lo, hi]}


def _check_pairs(
    predictions: Sequence[str | None], references: Sequence[Reference]
) -> tuple[list[str], list[list[str]]]:
    """Validate; None predictions -> "", each reference -> a non-empty list of strings."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise ValueError("predictions and references must be sequences of strings, not one string")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if len(predictions) == 0:
        raise ValueError("text metrics need at least one example")
    preds = ["" if p is None else str(p) for p in predictions]
    refs: list[list[str]] = []
    for i, ref in enumerate(references):
        ref_list = [ref] if isinstance(ref, str) else [str(r) for r in ref]
        if not ref_list:
            raise ValueError(f"example {i} has no reference")
        refs.append(ref_list)
    return preds, refs
