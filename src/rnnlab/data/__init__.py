"""Reading data files into tensors: the only package that opens the user's files; and the synthetic tasks."""
from .conllu import read_conllu as read_conllu
from .conllu import TaggingVocab as TaggingVocab
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

__all__ = ["Adding", "Copy", "Corpus", "DataError", "LMStream", "Parity", "SeqBatch", "TaggingVocab", "Vocab",
           "batchify", "build_corpus", "load_corpus", "read_conllu", "read_text", "stdlib_corpus"]
