"""The only package that knows about time: the unrolled loop, its BPTT, truncation and the gradient probe."""
from .function import backend_name as backend_name
from .probe import probe as probe
from .truncation import detach_state as detach_state
from .truncation import tbptt as tbptt

__all__ = ["backend_name", "detach_state", "probe", "tbptt"]
