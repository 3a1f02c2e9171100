"""Reading data files into tensors: the only package that opens the user's files; and the synthetic tasks."""
from .conllu import TaggingVocab as TaggingVocab
from .conllu import read_conllu as read_conllu
from .labeled import TextVocab as TextVocab
from .labeled import read_labeled as read_labeled
from .mnist import SequentialMNIST as SequentialMNIST
from .mnist import mnist_splits as mnist_splits
from .series import SeriesDataset as SeriesDataset
from .series import read_series as read_series
from .synthetic import Adding as Adding
from .synthetic import Copy as Copy
from .synthetic import Parity as Parity
from .synthetic import SeqBatch as SeqBatch
from .text import Corpus as Corpus
from .text import DataError as DataError
from .text import LMStream as LMStream
from .text import Vocab as Vocab
from .text import batchify as batchify
from .text import build_corpus as build_corpus
from .text import load_corpus as load_corpus
from .text import read_text as read_text
from .text import stdlib_corpus as stdlib_corpus
from .uea import LabeledSeries as LabeledSeries
from .uea import SeriesClassData as SeriesClassData
from .uea import read_labeled_series as read_labeled_series
from .uea import read_ts as read_ts

__all__ = ["Adding", "Copy", "Corpus", "DataError", "LMStream", "LabeledSeries", "Parity", "SeqBatch",
           "SequentialMNIST", "SeriesClassData", "SeriesDataset", "TaggingVocab", "TextVocab", "Vocab", "batchify",
           "build_corpus", "load_corpus", "mnist_splits", "read_conllu", "read_labeled", "read_labeled_series",
           "read_series", "read_text", "read_ts", "stdlib_corpus"]
