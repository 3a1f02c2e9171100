"""rnnlab: recurrent networks whose math and backpropagation through time are written out, drop-in for torch.nn."""
from . import data as data
from . import init as init
from . import models as models
from . import train as train
from .engine import backend_name as backend_name
from .engine import detach_state as detach_state
from .engine import probe as probe
from .engine import tbptt as tbptt
from .generate import beam_search as beam_search
from .generate import generate as generate
from .layers import GRU as GRU
from .layers import LSTM as LSTM
from .layers import RNN as RNN
from .layers import safe_globals as safe_globals
from .variants import ALL_CELLS as ALL_CELLS
from .variants import DilatedRNN as DilatedRNN
from .variants import LayerNormGRU as LayerNormGRU
from .variants import LayerNormLSTM as LayerNormLSTM
from .variants import SkipRNN as SkipRNN
from .variants import recurrent_layer as recurrent_layer

__version__ = "0.1.0"

__all__ = ["ALL_CELLS", "DilatedRNN", "GRU", "LSTM", "LayerNormGRU", "LayerNormLSTM", "RNN", "SkipRNN",
           "backend_name", "beam_search", "data", "detach_state", "generate", "init", "models", "probe",
           "recurrent_layer", "safe_globals", "tbptt", "train"]
