"""A NaN or Inf that enters a recurrent layer must come out of it, as it does from torch.nn: the trainer's fault
handling can only skip a poisoned batch it can see (a finite loss computed from NaN inputs would be trained on)."""
import pytest
import torch

import rnnlab


@pytest.mark.parametrize("cls, kwargs", [(rnnlab.LSTM, {}), (rnnlab.GRU, {}), (rnnlab.RNN, {}),
                                         (rnnlab.RNN, {"nonlinearity": "relu"})])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_non_finite_input_reaches_the_output_like_torch(backend, cls, kwargs, bad, dtype):
    torch.manual_seed(0)
    ours = cls(3, 20, **kwargs).to(dtype)  # H = 20: full vector chunks and a partial one
    ref = getattr(torch.nn, cls.__name__)(3, 20, **kwargs).to(dtype)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(6, 4, 3, dtype=dtype)
    x[2, 1, 0] = bad  # sequence 1 at step 2
    out, _ = ours(x)
    expected, _ = ref(x)
    # where torch.nn is finite we must be close to it, and where it is not (NaN, or Inf through ReLU) so are we
    torch.testing.assert_close(out.isfinite(), expected.isfinite())
    fin = expected.isfinite()
    torch.testing.assert_close(out[fin], expected[fin])
    if bad != bad:  # NaN: the poisoned sequence is NaN from the bad step on (an Inf can saturate to a finite gate)
        assert out[2:, 1].isnan().all()
    assert out[:, [0, 2, 3]].isfinite().all()  # the other sequences are untouched


@pytest.mark.parametrize("make", [lambda: rnnlab.LayerNormLSTM(3, 20), lambda: rnnlab.LayerNormGRU(3, 20),
                                  lambda: rnnlab.SkipRNN("lstm", 3, 20), lambda: rnnlab.DilatedRNN("gru", 3, 20)])
def test_nan_input_reaches_the_output_of_the_variants(backend, make):
    torch.manual_seed(0)
    m = make()
    x = torch.randn(6, 4, 3)
    x[2, 1, 0] = float("nan")
    out = m(x)[0]
    assert out[2, 1].isnan().any()
    assert out[:, [0, 2, 3]].isfinite().all()
