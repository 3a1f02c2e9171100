"""Models: embedding → layers → head. No training code here."""
from .lm import CELLS as CELLS
from .lm import NGramLM as NGramLM
from .lm import RecurrentLM as RecurrentLM
from .lm import build_model as build_model

__all__ = ["CELLS", "NGramLM", "RecurrentLM", "build_model"]
