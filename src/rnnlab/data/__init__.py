"""Reading data files into tensors: the only package that opens the user's files."""
from .text import Corpus as Corpus
from .text import DataError as DataError
from .text import LMStream as LMStream
from .text import Vocab as Vocab
from .text import batchify as batchify
from .text import build_corpus as build_corpus
from .text import load_corpus as load_corpus
from .text import read_text as read_text
from .text import stdlib_corpus as stdlib_corpus

__all__ = ["Corpus", "DataError", "LMStream", "Vocab", "batchify", "build_corpus", "load_corpus", "read_text",
           "stdlib_corpus"]
