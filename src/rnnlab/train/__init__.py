"""Training: a loop that knows nothing about RNNs (trainer.py), checkpoints (checkpoint.py), metrics (metrics.py),
and language modelling as a task for it (lm.py)."""
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
from .trainer import Trainer as Trainer
from .trainer import TrainingError as TrainingError
from .trainer import TrainOptions as TrainOptions
from .trainer import evaluate_task as evaluate_task
from .trainer import seed_everything as seed_everything

__all__ = ["Checkpoint", "CheckpointError", "LMTask", "MetricsLog", "TrainOptions", "Trainer", "TrainingError",
           "bits_per_token", "evaluate", "evaluate_task", "load_checkpoint", "load_lm", "perplexity",
           "save_checkpoint", "seed_everything"]
