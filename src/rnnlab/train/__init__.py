"""Training: a loop that knows nothing about RNNs (trainer.py), checkpoints (checkpoint.py), metrics (metrics.py),
language modelling as a task for it (lm.py), classification / regression / per-step outputs (supervised.py),
tagging (tagging.py) and sequence-to-sequence (seq2seq.py)."""
from .checkpoint import Checkpoint as Checkpoint
from .checkpoint import CheckpointError as CheckpointError
from .checkpoint import load_checkpoint as load_checkpoint
from .checkpoint import save_checkpoint as save_checkpoint
from .lm import LMTask as LMTask
from .lm import evaluate as evaluate
from .lm import load_lm as load_lm
from .metrics import MetricsLog as MetricsLog
from .metrics import bits_per_token as bits_per_token
from .metrics import perplexity as perplexity
from .seq2seq import Seq2SeqTask as Seq2SeqTask
from .seq2seq import evaluate_seq2seq as evaluate_seq2seq
from .seq2seq import load_seq2seq as load_seq2seq
from .supervised import ClassificationTask as ClassificationTask
from .supervised import PerStepTask as PerStepTask
from .supervised import RegressionTask as RegressionTask
from .supervised import evaluate_classification as evaluate_classification
from .supervised import evaluate_per_step as evaluate_per_step
from .supervised import evaluate_regression as evaluate_regression
from .supervised import load_sequence_model as load_sequence_model
from .tagging import TaggingTask as TaggingTask
from .tagging import evaluate_tagger as evaluate_tagger
from .tagging import load_tagger as load_tagger
from .trainer import Trainer as Trainer
from .trainer import TrainingError as TrainingError
from .trainer import TrainOptions as TrainOptions
from .trainer import evaluate_task as evaluate_task
from .trainer import seed_everything as seed_everything

__all__ = ["Checkpoint", "CheckpointError", "ClassificationTask", "LMTask", "MetricsLog", "PerStepTask",
           "RegressionTask", "Seq2SeqTask", "TaggingTask", "TrainOptions", "Trainer", "TrainingError",
           "bits_per_token", "evaluate", "evaluate_classification", "evaluate_per_step", "evaluate_regression",
           "evaluate_seq2seq", "evaluate_task", "evaluate_tagger", "load_checkpoint", "load_lm", "load_seq2seq",
           "load_sequence_model", "load_tagger", "perplexity", "save_checkpoint", "seed_everything"]
