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
