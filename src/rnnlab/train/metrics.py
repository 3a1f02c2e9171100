"""What training reports: perplexity and bits from a mean loss, and the JSONL metrics file.

The metrics file has one JSON object per line: ``{"kind": "train", ...}`` per log interval and
``{"kind": "epoch", ...}`` per epoch (``"stop"`` when a run stops early). Fields ending in ``_s`` and
``tokens_per_s`` are wall-clock measurements; every other field repeats exactly when a run is repeated with the
same seed.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

LN2 = math.log(2)
# exp(709) is near float64's largest value; a loss above this is reported as an infinite perplexity.
_MAX_EXP = 709.0


def perplexity(loss: float) -> float:
    """exp(mean negative log-likelihood in nats per token)."""
    return math.exp(loss) if loss < _MAX_EXP else math.inf


def bits_per_token(loss: float) -> float:
    """Mean loss in nats per token → bits per token; for a character model that is bits per character (bpc)."""
    return loss / LN2


def lm_metrics(loss: float, char_level: bool) -> dict:
    """loss (nats/token), ppl, and bpc for a character-level model."""
    out = {"loss": loss, "ppl": perplexity(loss)}
    if char_level:
        out["bpc"] = bits_per_token(loss)
    return out


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no inf/nan; null means "not a finite number"
    return value


class MetricsLog:
    """Appends JSON objects to a ``.jsonl`` file, one per line, flushed at once (a crash loses nothing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        line = json.dumps({k: _jsonable(v) for k, v in record.items()}, ensure_ascii=False)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def rewind(self, step: int) -> None:
        """Drop the records written after global step ``step``: a resumed run continues from a checkpoint taken
        at ``step`` and writes those records again."""
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")
        os.replace(tmp, self.path)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(ln) for ln in self.path.read_text(encoding="utf-8").splitlines() if ln.strip()]
