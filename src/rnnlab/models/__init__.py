"""Models: embedding → layers → head. No training code here."""
from .classifier import SequenceClassifier as SequenceClassifier
from .classifier import SequenceTagger as SequenceTagger
from .classifier import build as build_sequence_model
from .lm import CELLS as CELLS
from .lm import NGramLM as NGramLM
from .lm import RecurrentLM as RecurrentLM
from .lm import build_model as build_model
from .seq2seq import ConditionalDecoder as ConditionalDecoder
from .seq2seq import Seq2Seq as Seq2Seq
from .seq2seq import build_seq2seq as build_seq2seq
from .tagger import BiRNNTagger as BiRNNTagger
from .tagger import build_tagger as build_tagger

__all__ = ["CELLS", "BiRNNTagger", "ConditionalDecoder", "NGramLM", "RecurrentLM", "Seq2Seq", "SequenceClassifier",
           "SequenceTagger", "build_model", "build_seq2seq", "build_sequence_model", "build_tagger"]
