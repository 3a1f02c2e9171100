"""Text from a trained language model: greedy decoding, sampling (temperature, top-k, top-p) and beam search.

Works with any model that has the LM call ``model(tokens (T, B), state) -> (logits (T, B, V), state)`` plus
``init_state(B)`` and ``reorder_state(state, index)`` (``rnnlab.models.RecurrentLM`` and ``NGramLM``): the prompt
is read in one call, then one token at a time with the state carried along (T = 1 per step), so generating N tokens
costs N steps, not N² re-reads of the text.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.text import DataError, Vocab

STRATEGIES = ("greedy", "sample", "beam")


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def prompt_ids(vocab: Vocab, prompt: str) -> list[int]:
    """The prompt's token ids. Unknown tokens become ``<unk>`` when the vocabulary has it, else a DataError. An
    empty prompt starts from a line end (``<eos>`` for words, ``\\n`` for characters and BPE)."""
    if prompt:
        ids = vocab.encode(prompt, name="prompt", final_eos=False)
        if ids:
            return ids
    if vocab.level == "word":
        start = vocab.eos_id
    elif vocab.level == "char":
        start = vocab.stoi.get("\n")
    else:
        start = (vocab.encode("\n") or [None])[0]
    if start is None:
        raise DataError("the prompt is empty and the vocabulary has no line-end token to start from; give a prompt")
    return [start]


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> Tensor:
    """Logits (V,) → the sampling distribution's logits: divided by ``temperature``, then only the ``top_k`` most
    likely tokens kept, then only the smallest set of most likely tokens whose probability reaches ``top_p``
    (nucleus sampling, Holtzman et al. 2020); the rest get -inf."""
    logits = logits.float() / temperature  # (V,)
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)  # (V,)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # probability mass of the tokens ranked above each one
        drop = before >= top_p  # the top token always stays (before = 0)
        logits = logits.masked_fill(drop.scatter(0, order, drop), -math.inf)
    return logits


def _check(strategy, max_tokens, temperature, top_k, top_p, beam_width, length_penalty) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an integer >= 1; got {max_tokens!r}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a number > 0 (use strategy 'greedy' for the limit 0); "
                         f"got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1; got {top_k!r}")
    if top_p is not None and (not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be a number in (0, 1]; got {top_p!r}")
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_width must be an integer >= 1; got {beam_width!r}")
    if not isinstance(length_penalty, (int, float)) or length_penalty < 0:
        raise ValueError(f"length_penalty must be a number >= 0; got {length_penalty!r}")
    if strategy != "sample" and (temperature != 1.0 or top_k is not None or top_p is not None):
        raise ValueError(f"temperature, top_k and top_p shape sampling; strategy {strategy!r} does not sample. "
                         "Drop them or use strategy 'sample'")


@torch.no_grad()
def generate(model: nn.Module, vocab: Vocab, prompt: str = "", max_tokens: int = 200, strategy: str = "sample", *,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             beam_width: int = 5,  # a common default: most of beam search's gain over greedy comes by width 5
             length_penalty: float = 1.0,  # 1: rank finished beams by mean log-probability per token
             stop: str | None = None, generator: torch.Generator | None = None) -> str:
    """The text that ``model`` continues ``prompt`` with, at most ``max_tokens`` tokens; ``prompt + result`` reads
    as one text. ``stop``: a token (e.g. ``"<eos>"`` or ``"\\n"``) that ends the text once produced (kept).
    ``generator`` makes sampling repeatable."""
    _check(strategy, max_tokens, temperature, top_k, top_p, beam_width, length_penalty)
    start = prompt_ids(vocab, prompt)
    stop_id = None
    if stop is not None:
        if stop not in vocab.stoi:
            raise DataError(f"stop token {stop!r} is not in the vocabulary")
        stop_id = vocab.stoi[stop]
    was_training = model.training
    model.eval()
    try:
        if strategy == "beam":
            new = beam_search(model, start, max_tokens, beam_width, length_penalty, stop_id)[0][0]
        else:
            new = _decode_stepwise(model, start, max_tokens, strategy == "greedy", temperature, top_k, top_p,
                                   stop_id, generator)
    finally:
        model.train(was_training)
    return _continuation(vocab, prompt, start, new)


def _decode_stepwise(model, start, max_tokens, greedy, temperature, top_k, top_p, stop_id, generator) -> list[int]:
    device = _device(model)
    x = torch.tensor(start, device=device).unsqueeze(1)  # (T, 1)
    logits, state = model(x, model.init_state(1, device))  # (T, 1, V)
    last = logits[-1, 0]  # (V,)
    out: list[int] = []
    for _ in range(max_tokens):
        if greedy:
            token = int(last.argmax())
        else:
            probs = filter_logits(last, temperature, top_k, top_p).softmax(-1).cpu()  # (V,)
            token = int(torch.multinomial(probs, 1, generator=generator))
        out.append(token)
        if token == stop_id:
            break
        logits, state = model(torch.tensor([[token]], device=device), state)  # (1, 1, V)
        last = logits[0, 0]
    return out


@torch.no_grad()
def beam_search(model: nn.Module, start: list[int], max_tokens: int, beam_width: int = 5,
                length_penalty: float = 1.0, stop_id: int | None = None, *,
                keep_width: bool = True) -> list[tuple[list[int], float]]:
    """Beam search from the token ids ``start``: [(continuation ids, score)], best first, where score is the
    continuation's total log-probability divided by ``len ** length_penalty``. A beam ends when it produces
    ``stop_id`` or reaches ``max_tokens``. With a beam as wide as all sequences (V ** (max_tokens - 1)) this is
    exhaustive search.

    ``keep_width``: True reads the best 2W extensions at each step, so W beams stay live after some finish (then
    width 1 is not greedy decoding: a finished runner-up can win); False reads only the best W - (finished so far),
    so a beam that produces ``stop_id`` leaves for good (the beam narrows) — then width 1 is exactly greedy."""
    device = _device(model)
    x = torch.tensor(start, device=device).unsqueeze(1)  # (T, 1)
    logits, state = model(x, model.init_state(1, device))  # (T, 1, V)
    logp = F.log_softmax(logits[-1].double(), -1)  # (1, V)
    V = logp.shape[-1]
    scores = torch.zeros(1, dtype=torch.float64, device=device)  # (W,) total log-probability of each live beam
    seqs: list[list[int]] = [[]]
    finished: list[tuple[list[int], float]] = []

    def norm(total: float, n: int) -> float:
        return total / (n ** length_penalty)

    for t in range(max_tokens):
        last_step = t == max_tokens - 1
        cand = (scores[:, None] + logp).flatten()  # (W*V,)
        if keep_width:  # the best 2W extensions: at most W of them end with stop_id, so W live beams remain
            wide = beam_width if last_step else 2 * beam_width
        else:  # the best W - (finished) extensions: each finished beam leaves the beam for good
            wide = beam_width - len(finished)
        top = torch.topk(cand, min(wide, cand.numel()))
        keep_beam, keep_tok, keep_score = [], [], []
        for score, idx in zip(top.values.tolist(), top.indices.tolist()):
            b, tok = divmod(idx, V)
            if tok == stop_id or last_step:
                finished.append((seqs[b] + [tok], norm(score, t + 1)))
            elif len(keep_beam) < beam_width:
                keep_beam.append(b)
                keep_tok.append(tok)
                keep_score.append(score)
        if not keep_beam:
            break
        index = torch.tensor(keep_beam, device=device)
        seqs = [seqs[b] + [tok] for b, tok in zip(keep_beam, keep_tok)]
        scores = torch.tensor(keep_score, dtype=torch.float64, device=device)
        state = model.reorder_state(state, index)
        logits, state = model(torch.tensor([keep_tok], device=device), state)  # (1, W, V)
        logp = F.log_softmax(logits[0].double(), -1)  # (W, V)
    finished.sort(key=lambda f: -f[1])
    return finished


def _continuation(vocab: Vocab, prompt: str, start: list[int], new: list[int]) -> str:
    if vocab.level == "bpe":  # decode with the prompt so a character split across the boundary comes out whole
        return vocab.decode(start + new)[len(vocab.decode(start)):]
    text = vocab.decode(new)
    if vocab.level == "word" and prompt and text and not prompt[-1].isspace() and not text.startswith("\n"):
        text = " " + text  # words are joined by spaces
    return text
