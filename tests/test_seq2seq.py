"""rnnlab.models.seq2seq: padding invariance of the encoder and of attention (padded source positions get weight
exactly 0), beam search against exhaustive search, greedy == beam 1, the whole-target decoder against step-wise
decoding, gradients against a float64 re-implementation written from the equations, scheduled sampling, the
conditional decoder, configs and errors, and a tiny model that learns reversal."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from rnnlab.data.seq2seq import SymbolTask
from rnnlab.models.seq2seq import ConditionalDecoder, Seq2Seq, build_seq2seq
from rnnlab.train.seq2seq import Seq2SeqTask, evaluate_seq2seq
from rnnlab.train.trainer import Trainer, TrainOptions

BOS, EOS = 2, 3


def tiny(attention="additive", **kw):
    args = {"emb": 6, "hidden": 7, "attention": attention, "cell": "lstm"}
    args.update(kw)
    return Seq2Seq(9, 8, **args)


def padded(seqs, pad=0):
    S = max(len(s) for s in seqs)
    x = torch.full((len(seqs), S), pad, dtype=torch.long)
    for b, s in enumerate(seqs):
        x[b, :len(s)] = torch.tensor(s)
    return x, torch.tensor([len(s) for s in seqs])


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
@pytest.mark.parametrize("input_feeding", [False, True])
def test_padding_invariance_of_encoder_and_attention(attention, input_feeding):
    model = tiny(attention, input_feeding=input_feeding, layers=2).double().eval()
    seqs = [[4, 5, 6, 7, 8, 4], [5, 6], [8, 7, 6, 5]]
    src, lengths = padded(seqs, pad=1)  # padding with a real token id: it must never be read
    tgt_in = torch.tensor([[BOS, 4, 5, 6]] * 3)
    mem = model.encode(src, lengths)
    logits = model.decode(mem, tgt_in)
    attn = model.last_attention  # (B, T, S)
    for b, s in enumerate(seqs):
        n = len(s)
        assert torch.all(attn[b, :, n:] == 0.0)  # exactly zero, not just small
        assert torch.allclose(attn[b].sum(-1), torch.ones(4, dtype=torch.float64))
        alone = model.encode(torch.tensor([s]), torch.tensor([n]))
        torch.testing.assert_close(mem.memory[b, :n], alone.memory[0], rtol=0, atol=1e-12)
        assert torch.all(mem.memory[b, n:] == 0)
        torch.testing.assert_close(model.decode(alone, tgt_in[b:b + 1])[0], logits[b], rtol=0, atol=1e-12)
        torch.testing.assert_close(model.last_attention[0], attn[b, :, :n], rtol=0, atol=1e-12)


def all_sequences(V: int, max_len: int):
    """Every sequence the beam can return: ends with <eos>, or reaches max_len; no <eos> before the end."""
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=n):
            if EOS in seq[:-1] or (seq[-1] != EOS and n < max_len):
                continue
            yield list(seq)


def sequence_log_probs(model, src, seqs):
    """log p(seq | src) for each sequence (teacher forcing, float64)."""
    out = []
    for n in sorted({len(s) for s in seqs}):
        group = [s for s in seqs if len(s) == n]
        tgt = torch.tensor(group)
        tgt_in = torch.cat([torch.full((len(group), 1), BOS), tgt[:, :-1]], 1)
        logits = model(src.expand(len(group), -1), None, tgt_in)
        logp = F.log_softmax(logits, -1).gather(2, tgt[..., None]).squeeze(-1).sum(1)
        out += list(zip(map(tuple, group), logp.tolist()))
    return dict(out)


@pytest.mark.parametrize("attention,input_feeding", [("additive", True), ("multiplicative", False), ("none", False)])
def test_beam_search_finds_the_exhaustive_argmax(attention, input_feeding):
    torch.manual_seed(3)
    model = Seq2Seq(7, 6, emb=5, hidden=6, attention=attention, input_feeding=input_feeding).double().eval()
    with torch.no_grad():
        model.out.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.5, 0.5, 0.5]))  # <eos> likely enough to end early
        model.out.weight.mul_(4)  # peaked distributions: the best sequence differs from greedy's more often
    V, max_len = 6, 4
    for src_ids in ([4, 5, 6], [6, 6, 4, 5, 5]):
        src = torch.tensor([src_ids])
        with torch.no_grad():
            scores = sequence_log_probs(model, src, list(all_sequences(V, max_len)))
        best = max(scores, key=scores.get)
        d = model.beam_search(src, None, beam_width=V ** (max_len - 1), length_penalty=0.0, max_len=max_len)[0]
        assert tuple(d.ids + ([EOS] if d.finished else [])) == best
        assert d.score == pytest.approx(scores[best], abs=1e-9)
        steps = len(best)
        assert d.attention.shape == (steps, len(src_ids) if attention != "none" else 0)


@pytest.mark.parametrize("attention", ["none", "additive", "multiplicative"])
def test_greedy_equals_beam_of_one(attention):
    torch.manual_seed(1)
    model = tiny(attention, input_feeding=attention != "none").eval()
    src, lengths = padded([[4, 5, 6, 7], [8, 8, 5], [4, 5, 6, 7, 8, 5, 4]])
    greedy = model.greedy(src, lengths, max_len=9)
    beam = model.beam_search(src, lengths, beam_width=1, length_penalty=0.0, max_len=9)
    for g, b in zip(greedy, beam):
        assert (g.ids, g.finished) == (b.ids, b.finished)
        assert g.score == pytest.approx(b.score, abs=1e-4)
        torch.testing.assert_close(g.attention, b.attention)
    for i in range(3):  # batched greedy == each sequence alone
        alone = model.greedy(src[i:i + 1, :int(lengths[i])], lengths[i:i + 1], max_len=9)[0]
        assert alone.ids == greedy[i].ids


def test_whole_target_decoder_equals_step_wise_decoding():
    model = tiny("multiplicative", input_feeding=False).double().eval()
    src, lengths = padded([[4, 5, 6, 7], [8, 5]])
    tgt_in = torch.tensor([[BOS, 4, 7, 5, 6], [BOS, 6, 6, 0, 0]])
    mem = model.encode(src, lengths)
    whole = model.decode(mem, tgt_in)  # one call of the recurrent layer
    state, steps = mem.state, []
    for t in range(tgt_in.shape[1]):
        logits, state, _, _ = model._step(tgt_in[:, t], state, None, mem)
        steps.append(logits)
    torch.testing.assert_close(whole, torch.stack(steps, 1), rtol=0, atol=1e-12)


# -- gradients against the equations -------------------------------------------------------------------------------
def reference_loss(model, src, lengths, tgt_in, tgt_out):
    """The module doc's equations in plain float64 torch: Elman tanh cells, a bidirectional encoder, the bridge,
    additive or multiplicative attention with input feeding, the output layer, summed cross-entropy."""
    p = dict(model.named_parameters())
    H, Hd = model.hidden, model.dec_hidden

    def cell(x, h, suffix, rnn):
        return torch.tanh(x @ p[f"{rnn}.weight_ih{suffix}"].T + p[f"{rnn}.bias_ih{suffix}"]
                          + h @ p[f"{rnn}.weight_hh{suffix}"].T + p[f"{rnn}.bias_hh{suffix}"])

    total = 0.0
    for b in range(src.shape[0]):
        n = int(lengths[b])
        e = p["src_embedding.weight"][src[b, :n]]
        h, fwd = torch.zeros(H, dtype=torch.float64), []
        for t in range(n):
            h = cell(e[t], h, "_l0", "encoder")
            fwd.append(h)
        h, bwd = torch.zeros(H, dtype=torch.float64), [None] * n
        for t in reversed(range(n)):
            h = cell(e[t], h, "_l0_reverse", "encoder")
            bwd[t] = h
        m = torch.stack([torch.cat([f, g]) for f, g in zip(fwd, bwd)])  # (n, 2H)
        s = torch.tanh(torch.cat([fwd[-1], bwd[0]]) @ p["bridge_h.weight"].T + p["bridge_h.bias"])  # s_0
        feed = torch.zeros(Hd, dtype=torch.float64)
        for t in range(tgt_in.shape[1]):
            if tgt_out[b, t] < 0:
                break
            x = torch.cat([p["tgt_embedding.weight"][tgt_in[b, t]], feed])
            s = cell(x, s, "_l0", "decoder")
            if model.attention_kind == "additive":
                a = torch.tanh(s @ p["attention.query.weight"].T + p["attention.query.bias"]
                               + m @ p["attention.key.weight"].T) @ p["attention.v.weight"][0]  # (n,)
            else:
                a = (m @ p["attention.key.weight"].T) @ s  # s^T W_a m_i
            alpha = torch.softmax(a, 0)
            c = alpha @ m
            feed = torch.tanh(torch.cat([c, s]) @ p["combine.weight"].T)
            logits = feed @ p["out.weight"].T + p["out.bias"]
            total = total - torch.log_softmax(logits, 0)[tgt_out[b, t]]
    return total


@pytest.mark.parametrize("attention", ["additive", "multiplicative"])
def test_gradients_match_a_float64_reimplementation_of_the_equations(attention):
    torch.manual_seed(2)
    model = Seq2Seq(9, 8, emb=4, cell="rnn_tanh", hidden=3, dec_hidden=5, attention=attention, attn_size=4,
                    input_feeding=True).double()
    src, lengths = padded([[4, 5, 6, 7, 8], [8, 5, 4]])
    tgt_in = torch.tensor([[BOS, 4, 5, 6], [BOS, 7, 0, 0]])
    tgt_out = torch.tensor([[4, 5, 6, EOS], [7, EOS, -100, -100]])
    logits = model(src, lengths, tgt_in)
    loss = F.cross_entropy(logits.reshape(-1, 8), tgt_out.reshape(-1), ignore_index=-100, reduction="sum")
    ours = torch.autograd.grad(loss, list(model.parameters()))
    ref_loss = reference_loss(model, src, lengths, tgt_in, tgt_out)
    ref = torch.autograd.grad(ref_loss, list(model.parameters()))
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-10)
    for (name, _), g, r in zip(model.named_parameters(), ours, ref):
        torch.testing.assert_close(g, r, rtol=1e-8, atol=1e-10, msg=name)
    assert any(g.abs().sum() > 0 for (name, _), g in zip(model.named_parameters(), ours) if "attention" in name)


# -- scheduled sampling, the conditional decoder, configs ---------------------------------------------------------
def test_scheduled_sampling_with_probability_one_feeds_the_model_its_own_tokens():
    torch.manual_seed(4)
    model = tiny("multiplicative", input_feeding=True)
    src, lengths = padded([[4, 5, 6, 7], [8, 5, 6]])
    tgt_in = torch.tensor([[BOS, 7, 7, 7, 7], [BOS, 4, 4, 4, 4]])  # ignored after <bos> when p = 1
    model.train()
    sampled = model(src, lengths, tgt_in, sampling_prob=1.0).argmax(-1)
    greedy = model.greedy(src, lengths, max_len=5)  # eval mode: the same weights, no dropout
    for b, d in enumerate(greedy):
        n = len(d.ids) + d.finished
        assert sampled[b, :n].tolist() == (d.ids + [EOS])[:n]
    model.eval()  # evaluation always feeds the true tokens
    torch.testing.assert_close(model(src, lengths, tgt_in, sampling_prob=1.0), model(src, lengths, tgt_in))


def test_conditional_decoder_learns_one_sequence_per_class():
    torch.manual_seed(0)
    targets = {0: [4, 5], 1: [5, 5, 4], 2: [6]}
    model = ConditionalDecoder(7, n_conditions=3, cond_size=8, emb=8, dec_hidden=16, dec_layers=2)
    cond = torch.tensor([0, 1, 2])
    tgt_in = torch.tensor([[BOS, 4, 5, 0], [BOS, 5, 5, 4], [BOS, 6, 0, 0]])
    tgt_out = torch.tensor([[4, 5, EOS, -100], [5, 5, 4, EOS], [6, EOS, -100, -100]])
    opt = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(60):
        loss = F.cross_entropy(model(cond, None, tgt_in).reshape(-1, 7), tgt_out.reshape(-1), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = model.greedy(cond, max_len=6)
    assert [d.ids for d in out] == [targets[k] for k in range(3)] and all(d.finished for d in out)
    assert model.beam_search(cond[1:2], beam_width=3, max_len=6)[0].ids == targets[1]
    vec = ConditionalDecoder(7, cond_size=5, cell="gru")  # a float vector as the condition
    assert vec(torch.randn(2, 5), None, tgt_in[:2]).shape == (2, 4, 7)


@pytest.mark.parametrize("model", [
    lambda: tiny("additive", layers=2, dec_layers=1, cell="gru", bidirectional=False),
    lambda: tiny("none", hidden=4, dec_hidden=8, cell="rnn_relu"),
    lambda: ConditionalDecoder(8, n_conditions=4, dec_layers=2),
])
def test_config_rebuilds_the_model(model):
    m = model()
    again = build_seq2seq(m.config)
    assert again.config == m.config
    again.load_state_dict(m.state_dict())


def test_errors_state_the_rule_and_the_value():
    with pytest.raises(ValueError, match="attention must be one of none, additive, multiplicative; got 'dot'"):
        Seq2Seq(9, 8, attention="dot")
    with pytest.raises(ValueError, match="tgt_vocab must be an integer >= 4; got 3. The target vocabulary"):
        Seq2Seq(9, 3)
    with pytest.raises(ValueError, match="needs an encoder memory"):
        ConditionalDecoder(8)._init_decoder(8, emb=4, cell="lstm", dec_hidden=4, dec_layers=1, attention="additive",
                                            attn_size=None, input_feeding=False, dropout=0.0, memory_size=0,
                                            pad_id=0, bos_id=2, eos_id=3)
    model = tiny()
    with pytest.raises(ValueError, match=r"every length in \[1, S\] = \[1, 3\]"):
        model(torch.tensor([[4, 5, 6]]), torch.tensor([4]), torch.tensor([[BOS]]))
    with pytest.raises(ValueError, match="tgt_in must be a \\(B, T\\) int64 tensor"):
        model(torch.tensor([[4, 5, 6]]), None, torch.tensor([BOS]))
    with pytest.raises(ValueError, match="model config 'kind' must be one of seq2seq, conditional_decoder"):
        build_seq2seq({"kind": "lm"})
    with pytest.raises(ValueError, match="bad seq2seq model config"):
        build_seq2seq({**model.config, "colour": 1})


# -- learning ------------------------------------------------------------------------------------------------------
def test_a_tiny_model_learns_to_reverse_short_sequences():
    torch.manual_seed(0)
    train = SymbolTask("reverse", 32, 150, min_len=3, max_len=6, alphabet=6, bucket_width=4, seed=0)
    valid = SymbolTask("reverse", 100, 2, min_len=3, max_len=6, alphabet=6, bucket_width=4, seed=0, split="valid")
    model = Seq2Seq(len(train.vocab.src), len(train.vocab.tgt), emb=16, hidden=32, attention="multiplicative")
    options = TrainOptions(epochs=3, lr=1e-2, clip_norm=1.0, quiet=True, progress=False)
    Trainer(model, Seq2SeqTask(model), train, None, options, print_fn=lambda s: None).fit()
    m = evaluate_seq2seq(model, valid, bucket_width=2)
    assert m["exact_match"] >= 0.9, m
    assert m["token_accuracy"] >= 0.95 and m["n"] == 200
    assert [r["lengths"] for r in m["by_length"]] == ["3", "4-5", "6"]
    assert sum(r["n"] for r in m["by_length"]) == 200


def test_attention_heatmap_and_length_curves_figures(tmp_path):
    pytest.importorskip("matplotlib")
    from rnnlab.diagnose import report

    model = tiny("multiplicative").eval()
    src, lengths = padded([[4, 5, 6, 7, 8], [5, 6]])
    d = model.greedy(src, lengths, max_len=6)[1]
    target = [str(i) for i in d.ids] + (["<eos>"] if d.finished else [])
    assert d.attention.shape == (len(target), 2)
    small = report.plot_attention(d.attention, ["a", " "], target, tmp_path / "small.png", title="line 2")
    assert small.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    weights = torch.rand(40, 30).softmax(-1)
    big = report.plot_attention(weights, [f"w{i}" for i in range(30)], [f"t{i}" for i in range(40)],
                                tmp_path / "big.png")

    def size(path):  # (width, height) in pixels, from the PNG header
        b = path.read_bytes()
        return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")

    assert size(big)[0] > size(small)[0] and size(big)[1] > size(small)[1]  # the figure grows with the tokens
    assert size(big)[0] <= report.WIDTH * report.DPI + 1  # up to the report width
    with pytest.raises(ValueError, match="3 target and 2 source tokens"):
        report.plot_attention(torch.rand(2, 2), ["a", "b"], ["x", "y", "z"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="attention 'none'"):
        report.plot_attention(torch.zeros(3, 0), [], ["x", "y", "z"], tmp_path / "x.png")
    curves = report.plot_length_curves({"none": {5: 1.0, 6: 0.5, 8: 0.0}, "additive": {5: 1.0, 6: 1.0, 8: 0.9}},
                                       tmp_path / "curves.png")
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="curves is empty"):
        report.plot_length_curves({}, tmp_path / "x.png")
