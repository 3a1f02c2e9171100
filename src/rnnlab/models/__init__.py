"""Models: embedding → layers → head. No training code here."""
from .classifier import SequenceClassifier as SequenceClassifier
from .classifier import SequenceTagger as SequenceTagger
from .classifier import build as build_sequence_model
from .lm import CELLS as CELLS
from .lm import NGramLM as NGramLM
from .lm import RecurrentLM as RecurrentLM
from .lm import build_model as build_model
from .tagger import BiRNNTagger as BiRNNTagger
from .tagger import build_tagger as build_tagger

__all__ = ["CELLS", "BiRNNTagger", "NGramLM", "RecurrentLM", "SequenceClassifier", "SequenceTagger", "build_model",
           "build_sequence_model", "build_tagger"]
