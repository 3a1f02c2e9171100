import pytest
import torch

import rnnlab


@pytest.mark.parametrize("cls", [rnnlab.LSTM, rnnlab.GRU, rnnlab.RNN, torch.nn.LSTM])
def test_orthogonal_blocks(cls):
    m = rnnlab.init.orthogonal_(cls(5, 6, num_layers=2, bidirectional=True))
    gates = m.weight_hh_l0.shape[0] // 6
    for name, p in m.named_parameters():
        if name.startswith("weight_hh"):
            for block in p.detach().chunk(gates):
                torch.testing.assert_close(block @ block.t(), torch.eye(6), atol=1e-5, rtol=0)
        if name.startswith("bias"):
            assert torch.all(p == 0)


def test_identity_irnn():
    m = rnnlab.init.identity_(rnnlab.RNN(3, 4, nonlinearity="relu", num_layers=2))
    for name, p in m.named_parameters():
        if name.startswith("weight_hh"):
            assert torch.equal(p.detach(), torch.eye(4))
        elif name.startswith("bias"):
            assert torch.all(p == 0)
        else:
            assert p.detach().std() < 0.01
    with pytest.raises(ValueError, match="Elman RNN"):
        rnnlab.init.identity_(rnnlab.LSTM(3, 4))


def test_forget_bias():
    m = rnnlab.init.forget_bias_(rnnlab.LSTM(3, 4), 1.0)
    total = (m.bias_ih_l0 + m.bias_hh_l0).detach()
    assert torch.all(total[4:8] == 1.0)
    with pytest.raises(ValueError, match="bias=False"):
        rnnlab.init.forget_bias_(rnnlab.LSTM(3, 4, bias=False))


def test_default_is_torch_range():
    m = rnnlab.init.default_(rnnlab.GRU(3, 16))
    for p in m.parameters():
        assert p.abs().max() <= 0.25


def test_chrono_biases():
    """Tallec & Ollivier's chrono init: b_f = log u with u in [1, t_max - 1], b_i = -b_f, per unit and direction;
    the weights and the g/o biases untouched."""
    m = rnnlab.LSTM(3, 64, num_layers=2, bidirectional=True)
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    rnnlab.init.chrono_(m, 100, generator=torch.Generator().manual_seed(0))
    H = 64
    for sfx in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
        b = (getattr(m, "bias_ih" + sfx) + getattr(m, "bias_hh" + sfx)).detach()  # what each gate sees
        u = b[H:2 * H].exp()  # the forget gate's time constant
        assert u.min() >= 1 - 1e-5 and u.max() <= 99 + 1e-4
        assert u.max() > 50 and u.min() < 10  # spread over the range, not all one value
        torch.testing.assert_close(b[:H], -b[H:2 * H])
        torch.testing.assert_close(b[2 * H:], before["bias_ih" + sfx][2 * H:] + before["bias_hh" + sfx][2 * H:])
        assert torch.equal(getattr(m, "weight_hh" + sfx).detach(), before["weight_hh" + sfx])
    with pytest.raises(ValueError, match="LSTM"):
        rnnlab.init.chrono_(rnnlab.GRU(3, 4), 100)
    with pytest.raises(ValueError, match="t_max"):
        rnnlab.init.chrono_(rnnlab.LSTM(3, 4), 2)


def test_chrono_classifier_config_round_trip():
    from rnnlab.models.classifier import SequenceClassifier, build

    m = SequenceClassifier(1, input_size=2, cell="lstm", hidden=8, task="regress", init="chrono", init_length=50)
    assert m.config["init_length"] == 50
    assert build(m.config).config == m.config
    with pytest.raises(ValueError, match="init_length"):
        SequenceClassifier(1, input_size=2, cell="lstm", hidden=8, task="regress", init="chrono")
    with pytest.raises(ValueError, match="cell='lstm'"):
        SequenceClassifier(1, input_size=2, cell="gru", hidden=8, task="regress", init="chrono", init_length=50)
