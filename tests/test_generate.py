"""Generation: greedy against a full re-read oracle, beam search against exhaustive search, top-k / top-p / temperature
against known distributions, Unicode prompts, word-level joining."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rnnlab.data import DataError, Vocab
from rnnlab.generate import beam_search, filter_logits, generate, prompt_ids
from rnnlab.models import NGramLM, RecurrentLM


def seq_logprob(model, start, cont):
    """log P(cont | start), the whole sequence read in one pass (no step-by-step state)."""
    ids = torch.tensor(start + cont).unsqueeze(1)  # (T, 1)
    logits, _ = model(ids, model.init_state(1))
    logp = F.log_softmax(logits[:, 0].double(), -1)  # (T, V)
    return sum(float(logp[len(start) - 1 + i, tok]) for i, tok in enumerate(cont))


def char_model(text="abc", hidden=6, seed=0):
    torch.manual_seed(seed)
    vocab = Vocab.build(text, "char")
    model = RecurrentLM(len(vocab), hidden=hidden)
    with torch.no_grad():  # larger weights: a peaked, input-dependent distribution
        for p in model.parameters():
            p.mul_(4)
    return model.eval(), vocab


def test_greedy_equals_rereading_argmax():
    model, vocab = char_model("abcd")
    out = generate(model, vocab, "ab", 12, "greedy")
    ids = vocab.encode("ab")
    with torch.no_grad():
        for _ in range(12):  # oracle: re-read everything, take the most likely next token
            logits, _ = model(torch.tensor(ids).unsqueeze(1))
            ids.append(int(logits[-1, 0].argmax()))
    assert out == vocab.decode(ids[2:])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_finds_the_exhaustive_best(seed):
    model, vocab = char_model("abc", seed=seed)
    start, n = vocab.encode("a"), 4
    with torch.no_grad():
        scored = {c: seq_logprob(model, start, list(c)) for c in itertools.product(range(3), repeat=n)}
    best = max(scored, key=scored.get)
    got = beam_search(model, start, n, beam_width=3 ** (n - 1))  # wide enough never to prune the best
    assert tuple(got[0][0]) == best
    assert got[0][1] == pytest.approx(scored[best] / n)  # length_penalty 1: mean log-probability
    assert generate(model, vocab, "a", n, "beam", beam_width=27) == vocab.decode(best)


def test_beam_width_one_is_greedy():
    model, vocab = char_model("abcd", seed=3)
    assert generate(model, vocab, "b", 10, "beam", beam_width=1) == generate(model, vocab, "b", 10, "greedy")


class Bigram(nn.Module):
    """A stateless LM with a fixed next-token table: log P(next | current) = table[current]."""

    def __init__(self, table):
        super().__init__()
        self.table = nn.Parameter(torch.log(torch.tensor(table, dtype=torch.float64)))

    def init_state(self, batch_size, device=None):
        return None

    def reorder_state(self, state, index):
        return None

    def forward(self, tokens, state=None):
        return self.table[tokens], None  # (T, B, V)


def test_length_normalisation_with_a_stop_token():
    # Token 2 stops. From 0: stop at once (p 0.4), or go 0 -> 1 (0.6) -> 1 (0.9) -> ... then stop (0.5).
    table = [[0.0, 0.6, 0.4], [0.0, 0.5, 0.5], [1 / 3] * 3]
    model = Bigram(table)
    raw = beam_search(model, [0], 5, beam_width=8, length_penalty=0.0, stop_id=2)
    assert raw[0][0] == [2] and raw[0][1] == pytest.approx(math.log(0.4))  # the sum favours the short one
    normed = beam_search(model, [0], 5, beam_width=8, length_penalty=1.0, stop_id=2)
    # Mean log-probability per token: [1, 2] scores (ln .6 + ln .5)/2 = -0.602 > ln .4 = -0.916.
    assert normed[0][0] == [1, 2] and normed[0][1] == pytest.approx((math.log(0.6) + math.log(0.5)) / 2)


def test_filter_logits_top_k_top_p_temperature():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    logits = probs.log()
    kept = lambda f: torch.isfinite(f).nonzero().flatten().tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [1, 3]
    assert kept(filter_logits(logits, top_p=0.5)) == [1]
    assert kept(filter_logits(logits, top_p=0.8)) == [1, 3]  # 0.5 + 0.3 reaches 0.8
    assert kept(filter_logits(logits, top_p=0.81)) == [1, 2, 3]
    assert kept(filter_logits(logits, top_k=3, top_p=0.99)) == [1, 2, 3]
    sharp = filter_logits(logits, temperature=0.5).softmax(-1)
    torch.testing.assert_close(sharp, probs ** 2 / (probs ** 2).sum())


def test_sampling_respects_top_k_and_is_repeatable():
    model, vocab = char_model("abcdefgh", hidden=8)
    g = torch.Generator().manual_seed(0)
    a = generate(model, vocab, "a", 60, temperature=1.5, generator=g)
    b = generate(model, vocab, "a", 60, temperature=1.5, generator=torch.Generator().manual_seed(0))
    assert a == b and len(a) == 60
    # top_k=1 is greedy, whatever the temperature.
    assert generate(model, vocab, "a", 20, top_k=1, temperature=3.0, generator=g) == \
        generate(model, vocab, "a", 20, "greedy")


def test_unicode_char_model_and_unknown_prompt_characters():
    model, vocab = char_model("héllo wörld 日本語 🙂\n")
    out = generate(model, vocab, "日本🙂", 30, generator=torch.Generator().manual_seed(1))
    assert len(out) == 30 and set(out) <= set(vocab.itos)
    with pytest.raises(DataError, match=r"prompt: character 'x' \(U\+0078\) at character offset 1"):
        generate(model, vocab, "hx", 5)
    vocab_unk = Vocab.build("abc", "char", extra_texts=("z",))  # has <unk>: unknown prompt characters map to it
    assert prompt_ids(vocab_unk, "az") == [vocab_unk.stoi["a"], vocab_unk.unk_id]


def test_word_model_joins_words_and_starts_from_eos():
    vocab = Vocab.build("the cat sat\nthe dog ran\n", "word")
    torch.manual_seed(0)
    model = NGramLM(len(vocab), order=3, emb=4, hidden=8).eval()
    out = generate(model, vocab, "the cat", 5, "greedy")
    words = out.replace("\n", " ").split()
    assert len(words) + out.count("\n") == 5 and (out.startswith(" ") or out.startswith("\n"))
    assert prompt_ids(vocab, "") == [vocab.eos_id]
    assert generate(model, vocab, "", 3, "greedy")  # an empty prompt starts after a line end
    assert prompt_ids(vocab, "the zebra") == [vocab.stoi["the"], vocab.unk_id]


def test_stop_token_ends_sampling():
    vocab = Vocab.build("ab\n", "char")
    model = Bigram([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # order \n a b: a -> b -> \n ...
    assert generate(model, vocab, "a", 10, "greedy", stop="\n") == "b\n"


def test_bad_generation_options():
    model, vocab = char_model()
    with pytest.raises(ValueError, match="strategy must be one of greedy, sample, beam; got 'topk'"):
        generate(model, vocab, "a", 5, "topk")
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        generate(model, vocab, "a", 5, temperature=0)
    with pytest.raises(ValueError, match="strategy 'beam' does not sample"):
        generate(model, vocab, "a", 5, "beam", top_k=3)
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):
        generate(model, vocab, "a", 5, top_p=1.5)
