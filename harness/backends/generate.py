"""Text out of a model: batched generation (greedy, or seeded sampling), and rolling-window
log-likelihood for perplexity.

Generation sorts prompts by length so a batch pads little, pads on the left (causal models) so
every prompt ends in the last column and new tokens line up, reuses the KV cache (`generate`),
and stops a row at EOS or at a stop string. Outputs come back in input order.
"""
from __future__ import annotations

from typing import Any, Sequence

from harness.backends.batching import collate, length_sorted_batches, pad_batch
from harness.backends.target_logits import logits_at, target_positions
from harness.progress import progress


def generate_batched(model: Any, tokenizer: Any, prompts: Sequence[list[int]], *, max_new_tokens: int,
                     batch_size: int, stop: Sequence[str] = (), seq2seq: bool = False, temperature: float = 0.0,
                     seed: int = 0) -> list[str]:
    """Continuation of each prompt (token ids), decoded and cut at the first stop string: greedy,
    or sampled at `temperature` with every batch seeded by `seed` (repeated judge samples)."""
    import torch

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outputs: list[str] = [""] * len(prompts)
    extra: dict[str, Any] = {"stop_strings": list(stop), "tokenizer": tokenizer} if _can_stop_early(tokenizer, stop) else {}
    sampling: dict[str, Any] = ({"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
                                if temperature > 0 else {"do_sample": False, "num_beams": 1})
    model.eval()
    with torch.inference_mode(), progress("generate", total=len(prompts), unit="seq") as bar:
        for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
            ids, mask = pad_batch([prompts[i] for i in batch], pad_id, left=not seq2seq, device=device)
            width = ids.shape[1]
            if temperature > 0:
                torch.manual_seed(seed)
            generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                       pad_token_id=pad_id, eos_token_id=_stop_ids(model, tokenizer), **sampling,
                                       **extra)
            new_tokens = generated if seq2seq else generated[:, width:]
            for row, i in enumerate(batch):
                outputs[i] = cut_at_stop(tokenizer.decode(new_tokens[row], skip_special_tokens=True), stop)
            # new tokens, less the padding of rows that stopped early (approximate where pad is EOS)
            bar.advance(len(batch), counted={"new tok": int((new_tokens != pad_id).sum())})
    return outputs


def _can_stop_early(tokenizer: Any, stop: Sequence[str]) -> bool:
    """Stopping inside `generate` saves the tokens after a stop string; some vocabularies cannot
    spell a stop string (T5 has no newline token), and then outputs are only cut afterwards."""
    if not stop:
        return False
    try:
        from transformers import StopStringCriteria

        StopStringCriteria(tokenizer, list(stop))
    except (ValueError, ImportError):
        return False
    return True


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """EOS of the tokenizer and of the model's generation config (chat models end turns with their own)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return sorted(i for i in ids if i is not None)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((text.find(s) for s in stop if s and s in text), default=len(text))
    return text[:cut].strip()


def rolling_windows(tokens: Sequence[int], max_length: int, stride: int) -> list[tuple[tuple[int, ...], int]]:
    """(window tokens, how many of its last tokens to score) covering every token after the first
    exactly once: windows of up to `max_length` advancing by `stride`, so each scored token keeps at
    least max_length - stride tokens of history. The HF and vLLM backends both score these windows."""
    stride = max(1, min(stride, max_length - 1))  # every scored token keeps at least one token of context
    windows: list[tuple[tuple[int, ...], int]] = []
    scored_until, end = 1, min(max_length, len(tokens))  # the first token has no context: never scored
    while scored_until < len(tokens):
        begin = max(0, end - max_length)
        windows.append((tuple(tokens[begin:end]), end - scored_until))
        scored_until, end = end, min(end + stride, len(tokens))
    return windows


def rolling_nll(model: Any, documents: Sequence[list[int]], *, max_length: int, stride: int,
                batch_size: int) -> list[tuple[float, int]]:
    """Per document: (sum of negative log-likelihoods, tokens scored), every token after the first
    scored exactly once. Windows of up to `max_length` tokens advance by `stride`; each window
    scores only its last tokens not scored before, with the rest as context (the Hugging Face
    perplexity recipe), so a token sees at least max_length - stride tokens of history."""
    import torch

    # (document, window ids, tokens to score at its end)
    windows = [(doc, window, count) for doc, ids in enumerate(documents)
               for window, count in rolling_windows(ids, max_length, stride)]
    totals = [[0.0, 0] for _ in documents]
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode(), progress("perplexity", total=len(windows), unit="windows") as bar:
        for batch in length_sorted_batches([len(w[1]) for w in windows], batch_size):
            ids, mask = pad_batch([windows[i][1] for i in batch], 0, left=False, device=device)
            # a window scores only its last `count` tokens (the rest is context): the head runs
            # at the positions predicting them, never over the whole [B, T, V]
            select = torch.zeros_like(ids, dtype=torch.bool)
            for row, i in enumerate(batch):
                _, window, count = windows[i]
                select[row, len(window) - 1 - count: len(window) - 1] = True
            logits = logits_at(model, {"input_ids": ids, "attention_mask": mask}, select)
            following = torch.zeros_like(ids)
            following[:, :-1] = ids[:, 1:]
            logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, following[select].unsqueeze(-1)).squeeze(-1)
            counts = select.sum(dim=1).tolist()
            for i, row_logp, count in zip(batch, torch.split(logp, counts), counts):
                doc = windows[i][0]
                totals[doc][0] -= float(row_logp.sum())
                totals[doc][1] += count
            bar.advance(len(batch), counted={"tok": sum(counts)})
    return [(nll, int(count)) for nll, count in totals]


def target_nll(model: Any, items: Sequence[Any], *, pad_id: int, batch_size: int, seq2seq: bool = False
               ) -> list[tuple[float, int]]:
    """Teacher-forced (sum of NLL, tokens) of each item's target tokens (`lm_labels` != -100): the
    response perplexity of instruction tuning, counted on response tokens only."""
    import torch

    device = next(model.parameters()).device
    results: list[tuple[float, int]] = [(0.0, 0)] * len(items)
    model.eval()
    with torch.inference_mode(), progress("reference loss", total=len(items), unit="ex") as bar:
        for batch in length_sorted_batches([len(item.input_ids) for item in items], batch_size):
            inputs = collate([items[i] for i in batch], pad_id, device)
            labels = inputs.pop("labels")
            if seq2seq:
                inputs["decoder_input_ids"] = model.prepare_decoder_input_ids_from_labels(labels=labels)
            # the LM head and log-softmax at the target positions only: the prompt's positions (most
            # of a long dialogue) never get a full-vocabulary row
            select, targets = target_positions(labels, seq2seq=seq2seq)
            logits = logits_at(model, inputs, select)
            logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            counts = select.sum(dim=1).tolist()
            for i, row_logp, count in zip(batch, torch.split(logp, counts), counts):
                results[i] = (-float(row_logp.sum()), int(count))
            bar.advance(len(batch))
    return results
