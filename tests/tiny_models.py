"""Tiny, randomly initialised, fully offline Hugging Face checkpoints for tests.

Nothing is downloaded: every tokenizer is trained on the fly (``tokenizers``
library) on a small built-in English corpus, and every model is built from a
config with random weights.  The resulting folders load with the ordinary
``AutoTokenizer`` / ``AutoModelFor*`` ``from_pretrained`` calls.

Public API
----------
``TINY_FAMILIES``
    ``("gpt2", "gpt_neo", "llama", "bert", "t5")``.
``build_tiny_model(family, out_dir, *, seed=0) -> pathlib.Path``
    Write ``config.json`` + ``model.safetensors`` + ``tokenizer.json`` +
    ``tokenizer_config.json`` into ``out_dir`` and return ``out_dir``.

Per family
----------
* ``gpt2``    -> ``GPT2LMHeadModel``; byte-level BPE; bos = eos = unk =
  ``<|endoftext|>``; **no pad token** (neither on the tokenizer nor in the config).
* ``gpt_neo`` -> ``GPTNeoForCausalLM``; same tokenizer as gpt2, same pad policy.
* ``llama``   -> ``LlamaForCausalLM``; byte-level BPE; bos ``<s>``, eos ``</s>``,
  unk ``<unk>``; **no pad token**; like real Llama-1/2 tokenizers, the
  post-processor PREPENDS ``<s>`` (use ``add_special_tokens=False`` to get the
  bare word pieces).
* ``bert``    -> ``BertModel`` (sentence-transformers style encoder, no head);
  lower-cased WordPiece with ``[PAD]``=0, ``[UNK]``, ``[CLS]``, ``[SEP]``,
  ``[MASK]``; post-processor ``[CLS] A [SEP] (B [SEP])``.
* ``t5``      -> ``T5ForConditionalGeneration``; Metaspace + BPE;
  ``<pad>``=0, ``</s>``=1, ``<unk>``=2; post-processor appends ``</s>``;
  ``decoder_start_token_id`` = 0.

Every checkpoint also loads with ``AutoModelForSequenceClassification`` (a
fresh head is initialised).  For the pad-less causal families the caller must
set ``tokenizer.pad_token`` before padding and ``model.config.pad_token_id``
before feeding a batch of more than one sequence.  ``T5ForSequenceClassification``
calls its head ``classification_head``, which peft's SEQ_CLS default
``modules_to_save`` (``classifier``/``score``) does not cover.

Cost: ~0.3 s for all five once ``transformers.modeling_utils`` is imported (that
import itself is a one-time 2-5 s); trained tokenizers are cached per process.
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
import random

TINY_FAMILIES = ("gpt2", "gpt_neo", "llama", "bert", "t5")

_MAX_POSITIONS = 512
_HIDDEN = 64
_INTERMEDIATE = 128
_LAYERS = 2

# --------------------------------------------------------------------------- #
# Built-in corpus
# --------------------------------------------------------------------------- #

# Label words / verbalizers that must exist as whole tokens (with and without a
# leading space, lower- and capitalised) in every tokenizer.
_LABEL_WORDS = [
    "positive", "negative", "neutral", "World", "Sports", "Business", "Science",
    "Technology", "Tech", "spam", "ham", "True", "False", "Neither", "entailment",
    "contradiction", "yes", "no", "maybe", "good", "bad", "great", "terrible",
    "correct", "incorrect", "A", "B", "C", "D",
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
]
_TASK_WORDS = [
    "review", "sentiment", "news", "email", "question", "answer", "label",
    "text", "sentence", "premise", "hypothesis", "topic", "category", "message",
    "article", "classify", "summary", "context", "passage", "input", "output",
    "title", "claim", "document", "choice", "options", "response", "prompt",
]
_SUBJECTS = [
    "the movie", "this film", "the book", "the team", "the company", "the market",
    "the government", "the scientist", "the researcher", "the player", "the coach",
    "the student", "the teacher", "my friend", "the city", "the country",
    "the president", "the startup", "the phone", "the computer", "the software",
    "the email", "the customer", "the restaurant", "the hotel", "the game",
]
_VERBS = [
    "is", "was", "seems", "looks", "became", "remains", "felt", "sounds",
]
_ADJECTIVES = [
    "good", "bad", "great", "terrible", "wonderful", "awful", "excellent",
    "boring", "exciting", "amazing", "poor", "fine", "strong", "weak", "new",
    "old", "happy", "sad", "funny", "slow", "fast", "cheap", "expensive",
    "important", "interesting", "simple", "difficult", "beautiful", "useful",
]
_ACTIONS = [
    "won the match", "lost the game", "reported strong profits", "announced a new product",
    "published a study", "released an update", "raised interest rates",
    "signed a deal", "launched a rocket", "discovered a new planet",
    "scored two goals", "cut jobs", "opened a new office", "held an election",
    "passed a law", "built a faster chip", "sent you a free prize",
    "wants to meet tomorrow", "asked a question", "gave the answer",
]
_TOPIC_SENTENCES = {
    "World": ["leaders met to discuss peace", "the election results were announced",
              "the government passed a new law", "the country signed a treaty"],
    "Sports": ["the team won the championship", "the player scored a goal",
               "the coach praised the defense", "the match ended in a draw"],
    "Business": ["stocks rose after strong earnings", "the company reported profits",
                 "the market fell on Monday", "the bank raised interest rates"],
    "Science": ["scientists discovered a new species", "the study was published today",
                "researchers found water on the planet", "the experiment confirmed the theory"],
    "Technology": ["the company released new software", "the phone has a faster chip",
                   "the computer crashed again", "the app update fixed the bug"],
}
_SPAM_SENTENCES = [
    "win a free prize now, click here", "claim your cash reward today",
    "free money offer, call now", "you have won a lottery, reply to claim",
]
_HAM_SENTENCES = [
    "are we still meeting for lunch tomorrow", "please send me the report",
    "see you at the office on Monday", "thanks for your help yesterday",
]
_NLI = [
    ("a man is playing a guitar", "a man is making music", "entailment", "True"),
    ("a man is playing a guitar", "a woman is sleeping", "contradiction", "False"),
    ("a man is playing a guitar", "the man is famous", "neutral", "Neither"),
    ("the dog runs in the park", "an animal is outside", "entailment", "True"),
    ("the dog runs in the park", "the dog is asleep", "contradiction", "False"),
    ("the dog runs in the park", "the dog is happy", "neutral", "Neither"),
]
_FILLER = (
    "the a an and or but not of to in on at for with from by about as is are was "
    "were be been it this that these those i you he she we they my your our their "
    "what which who when where why how very really quite too also just only then "
    "than so if because there here all some any each every more most less many much "
    "one two three first last other same different please thanks hello yes no"
).split()


def _corpus_sentences() -> list[str]:
    """A few hundred deterministic English sentences (also used by tests as text)."""
    rng = random.Random(1234)
    out: list[str] = []
    # Plain descriptive sentences.
    for _ in range(150):
        s = rng.choice(_SUBJECTS)
        out.append(f"{s.capitalize()} {rng.choice(_VERBS)} {rng.choice(_ADJECTIVES)}.")
        out.append(f"Yesterday {s} {rng.choice(_ACTIONS)}.")
    # Sentiment / review prompts with verbalizers.
    for _ in range(60):
        adj = rng.choice(_ADJECTIVES)
        lab = rng.choice(["positive", "negative", "neutral"])
        out.append(f"Review: this movie was {adj}. Sentiment: {lab}")
        out.append(f"The sentiment of the review is {lab}. Answer: {lab.capitalize()}")
    # Topic classification.
    for _ in range(40):
        topic = rng.choice(sorted(_TOPIC_SENTENCES))
        sent = rng.choice(_TOPIC_SENTENCES[topic])
        out.append(f"News article: {sent}. Topic: {topic}")
        out.append(f"Question: what is the topic of the news? Answer: {topic} ({topic.lower()})")
    # Spam / ham.
    for _ in range(30):
        if rng.random() < 0.5:
            out.append(f"Email: {rng.choice(_SPAM_SENTENCES)}. Label: spam")
        else:
            out.append(f"Email: {rng.choice(_HAM_SENTENCES)}. Label: ham")
    # NLI.
    for _ in range(30):
        p, h, lab, tf = rng.choice(_NLI)
        out.append(f"Premise: {p}. Hypothesis: {h}. Label: {lab}. Answer: {tf}")
    # Every label/task word with several spacings and casings, repeated so BPE
    # merges them into single tokens (" positive", "Positive", "POSITIVE"?).
    words = _LABEL_WORDS + _TASK_WORDS
    for w in words:
        for form in {w, w.lower(), w.capitalize()}:
            out.append(" ".join([form] * 6))
            out.append(f"Answer: {form}. Label: {form}. The {form} one is {form}")
    for _ in range(40):
        out.append(" ".join(rng.choice(_FILLER) for _ in range(12)) + ".")
    out.append("0 1 2 3 4 5 6 7 8 9 10 100 2024 ? ! , . : ; ' \" ( ) - / [ ] { }")
    return out


# --------------------------------------------------------------------------- #
# Tokenizer training (cached per process; returns the JSON string so callers
# always get a fresh, independently mutable Tokenizer object)
# --------------------------------------------------------------------------- #

_VOCAB_SIZE = 800


@functools.lru_cache(maxsize=None)
def _trained_tokenizer_json(kind: str) -> str:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    corpus = _corpus_sentences()

    if kind in ("gpt2", "llama"):
        if kind == "gpt2":
            specials = ["<|endoftext|>"]
        else:
            specials = ["<unk>", "<s>", "</s>"]
        tok = Tokenizer(models.BPE(unk_token=None if kind == "gpt2" else "<unk>", byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=_VOCAB_SIZE,
            min_frequency=1,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer=trainer)
        if kind == "gpt2":
            tok.post_processor = processors.ByteLevel(trim_offsets=False)
        else:
            bos = tok.token_to_id("<s>")
            tok.post_processor = processors.Sequence([
                processors.ByteLevel(trim_offsets=False),
                processors.TemplateProcessing(
                    single="<s> $A",
                    pair="<s> $A <s>:1 $B:1",
                    special_tokens=[("<s>", bos)],
                ),
            ])
    elif kind == "bert":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=_VOCAB_SIZE, min_frequency=1, special_tokens=specials,
            continuing_subword_prefix="##", show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer=trainer)
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
    elif kind == "t5":
        specials = ["<pad>", "</s>", "<unk>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("  ", " ")])
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        alphabet = sorted({c for s in corpus for c in s if not c.isspace()} | {"▁"})
        trainer = trainers.BpeTrainer(
            vocab_size=_VOCAB_SIZE, min_frequency=1, special_tokens=specials,
            initial_alphabet=alphabet, show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer=trainer)
        eos = tok.token_to_id("</s>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", eos)]
        )
    else:  # pragma: no cover - internal
        raise ValueError(kind)

    for i, s in enumerate(specials):  # specials come first, in order
        assert tok.token_to_id(s) == i, (kind, s, tok.token_to_id(s))
    return tok.to_str()


_TOKENIZER_KIND = {"gpt2": "gpt2", "gpt_neo": "gpt2", "llama": "llama", "bert": "bert", "t5": "t5"}


def _hf_tokenizer(family: str):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_str(_trained_tokenizer_json(_TOKENIZER_KIND[family]))
    common = dict(tokenizer_object=raw, model_max_length=_MAX_POSITIONS)
    if family in ("gpt2", "gpt_neo"):
        return PreTrainedTokenizerFast(
            bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>", **common
        )
    if family == "llama":
        return PreTrainedTokenizerFast(bos_token="<s>", eos_token="</s>", unk_token="<unk>", **common)
    if family == "bert":
        return PreTrainedTokenizerFast(
            unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
            mask_token="[MASK]", **common,
        )
    if family == "t5":
        return PreTrainedTokenizerFast(pad_token="<pad>", eos_token="</s>", unk_token="<unk>", **common)
    raise ValueError(family)


# --------------------------------------------------------------------------- #
# Models
# --------------------------------------------------------------------------- #


def _build_model(family: str, tok):
    import transformers as tf

    vocab = len(tok)
    if family == "gpt2":
        eos = tok.convert_tokens_to_ids("<|endoftext|>")
        cfg = tf.GPT2Config(
            vocab_size=vocab, n_positions=_MAX_POSITIONS, n_embd=_HIDDEN, n_layer=_LAYERS,
            n_head=2, n_inner=_INTERMEDIATE, bos_token_id=eos, eos_token_id=eos,
        )
        return tf.GPT2LMHeadModel(cfg)
    if family == "gpt_neo":
        eos = tok.convert_tokens_to_ids("<|endoftext|>")
        cfg = tf.GPTNeoConfig(
            vocab_size=vocab, max_position_embeddings=_MAX_POSITIONS, hidden_size=_HIDDEN,
            num_layers=_LAYERS, attention_types=[[["global", "local"], 1]], num_heads=2,
            intermediate_size=_INTERMEDIATE, window_size=256, bos_token_id=eos, eos_token_id=eos,
        )
        return tf.GPTNeoForCausalLM(cfg)
    if family == "llama":
        cfg = tf.LlamaConfig(
            vocab_size=vocab, hidden_size=_HIDDEN, intermediate_size=_INTERMEDIATE,
            num_hidden_layers=_LAYERS, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=_MAX_POSITIONS,
            bos_token_id=tok.convert_tokens_to_ids("<s>"),
            eos_token_id=tok.convert_tokens_to_ids("</s>"),
            pad_token_id=None, tie_word_embeddings=False,
        )
        return tf.LlamaForCausalLM(cfg)
    if family == "bert":
        cfg = tf.BertConfig(
            vocab_size=vocab, hidden_size=_HIDDEN, num_hidden_layers=_LAYERS,
            num_attention_heads=2, intermediate_size=_INTERMEDIATE,
            max_position_embeddings=_MAX_POSITIONS, type_vocab_size=2,
            pad_token_id=tok.pad_token_id,
        )
        return tf.BertModel(cfg, add_pooling_layer=True)
    if family == "t5":
        cfg = tf.T5Config(
            vocab_size=vocab, d_model=_HIDDEN, d_ff=_INTERMEDIATE, d_kv=32, num_layers=_LAYERS,
            num_decoder_layers=_LAYERS, num_heads=2, relative_attention_num_buckets=32,
            relative_attention_max_distance=128, feed_forward_proj="relu",
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
            n_positions=_MAX_POSITIONS,
        )
        return tf.T5ForConditionalGeneration(cfg)
    raise ValueError(family)


def build_tiny_model(family: str, out_dir: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Build a tiny random ``family`` checkpoint (model + tokenizer) in ``out_dir``.

    Deterministic for a given ``seed`` (weights) — the tokenizer does not depend
    on the seed.  The global torch RNG state is restored afterwards.
    """
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {TINY_FAMILIES}")
    import torch

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = _hf_tokenizer(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_model(family, tok)
    model.eval()
    with _quiet_progress_bars():
        model.save_pretrained(out_dir)  # transformers 5.x always writes model.safetensors
    tok.save_pretrained(out_dir)
    return out_dir


@contextlib.contextmanager
def _quiet_progress_bars():
    """Silence transformers' "Writing model shards" tqdm bar, restoring the previous setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


__all__ = ["TINY_FAMILIES", "build_tiny_model"]
