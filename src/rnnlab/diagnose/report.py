"""Figures (PNG, matplotlib's non-interactive Agg backend) and one self-contained HTML report of a gradient-flow
measurement.

    plot_decay(runs, path)          ||dL/dh_(T-k)|| / ||dL/dh_T|| and ||ds_T/ds_(T-k)||_2 against k, per layer (log y)
    plot_history(history, path)     heatmap of log10 ||dL/dh_t||: training step (rows) x time step t (columns)
    plot_training(records, path)    from diagnostics records written while training: the pre-clip gradient norm,
                                    the clip fraction, W_hh's spectral norm and radius and the gate saturation
    plot_saturation(diag, path)     histograms of the gate values per layer and gate, saturated regions shaded
    plot_losses(curves, path)       training loss against update step, one line per run (log y)
    plot_attention(weights, src, tgt, path)   a seq2seq decoder's attention weights: output x source tokens
    plot_length_curves(curves, path)  accuracy against input length, one line per run (e.g. per attention kind)
    write_html(path, title, sections)   the figures embedded as base64 PNG, the verdicts as text, HTML blocks
                                    (hidden states over a text): one file

``runs`` maps a name to a ``Diagnostics`` (``rnnlab.diagnose.measure``); one run or several side by side.
matplotlib is an optional dependency (``pip install 'rnnlab[plots]'``); without it ``MissingExtra`` says so.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import torch

from .._optional import MissingExtra, require
from .measure import SIGMOID_HIGH, SIGMOID_LOW, TANH_HIGH, Diagnostics

DPI = 110
WIDTH = 11.0  # inches: 1210 px at DPI, legible when a README scales it to ~800 px
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


# matplotlib missing: a MissingExtra (an ImportError) that names the extra; the old name is kept for callers.
MissingMatplotlib = MissingExtra


def _figure(w: float, h: float):
    require("matplotlib", purpose="drawing the figures")  # imported here: `import rnnlab` does not need it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)  # Agg: renders to PNG without a display
    fig.set_layout_engine("constrained")
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _positive(values) -> list[float]:
    """Values for a log axis: non-positive or non-finite ones become NaN (a gap in the line)."""
    out = []
    for v in values:
        v = float(v)
        out.append(v if v > 0 and math.isfinite(v) else float("nan"))
    return out


def _log_axis(ax, series: list[list[float]], what: str) -> None:
    """A log y axis when there is positive data, else a note instead of an empty log plot. Within two decades the
    tick labels are plain numbers (0.2, 0.5, 1) rather than powers of ten."""
    finite = [v for s in series for v in s if v == v]
    if finite:
        ax.set_yscale("log")
        lo, hi = min(finite), max(finite)
        if lo == hi:
            ax.set_ylim(lo / 10, hi * 10)
        elif hi / lo < 100:
            from matplotlib.ticker import FuncFormatter, LogLocator

            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    else:
        ax.text(0.5, 0.5, f"no {what} to show", transform=ax.transAxes, ha="center", va="center")


def plot_decay(runs: dict, path, *, fraction: float | None = None, title: str | None = None) -> Path:
    """Two panels side by side: the gradient ratio ||dL/dh_(T-k)|| / ||dL/dh_T|| and the exact Jacobian product's
    spectral norm ||ds_T/ds_(T-k)||_2 (median over sequences; a band from the lowest to the highest sequence)
    against the distance k, one line per run and layer, log y; the horizon fraction as a dashed line."""
    runs = {"": runs} if isinstance(runs, Diagnostics) else dict(runs)
    fig = _figure(WIDTH, 4.6)
    ax_g, ax_j = fig.subplots(1, 2)
    grad_series, jac_series = [], []
    i = 0
    for run_name, diag in runs.items():
        many = len(diag.layers) > 1
        for layer in diag.layers:
            label = run_name if not many else (f"{run_name}: {layer.label}" if run_name else layer.label)
            label = label or layer.label
            color = COLORS[i % len(COLORS)]
            i += 1
            g = _positive(layer.decay.tolist())
            grad_series.append(g)
            ax_g.plot(range(len(g)), g, color=color, lw=1.8, label=label)
            ks = layer.jacobian_distances.tolist()
            j = _positive(layer.jacobian_norms.tolist())
            jac_series.append(j)
            ax_j.plot(ks, j, color=color, lw=1.8, marker="o", ms=2.5, label=label)
            per = layer.jacobian_per_sequence
            if per.shape[0] > 1:
                lo = _positive(per.min(dim=0).values.tolist())
                hi = _positive(per.max(dim=0).values.tolist())
                ax_j.fill_between(ks, lo, hi, color=color, alpha=0.15, lw=0)
            jac_series.append(_positive(per.reshape(-1).tolist()))
    fr = fraction if fraction is not None else next(iter(runs.values())).horizon_fraction
    for ax, series, what in ((ax_g, grad_series, "gradient"), (ax_j, jac_series, "Jacobian norm")):
        _log_axis(ax, series, what)
        ax.set_xlabel("distance k back in time from the last step (steps)")
        ax.grid(True, which="major", alpha=0.3)
    ax_g.axhline(fr, color="0.3", ls="--", lw=1, label=f"horizon fraction {fr:g}")
    ax_j.axhline(1.0, color="0.3", ls=":", lw=1, label="norm 1 (no gain, no loss)")
    ax_g.set_ylabel(r"$\|dL/dh_{T-k}\| \,/\, \|dL/dh_T\|$  (ratio)")
    ax_j.set_ylabel(r"$\|\partial s_T / \partial s_{T-k}\|_2$  (spectral norm)")
    ax_g.set_title("gradient reaching step T-k (probe)")
    ax_j.set_title("exact Jacobian product (median, band: min-max)")
    ax_g.legend(fontsize=9, loc="best")
    ax_j.legend(fontsize=9, loc="best")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_history(history, path, *, title: str | None = None) -> Path:
    """Heatmap of log10 ||dL/dh_t||: one row per recorded training step, one column per time step t.
    ``history``: a list of (training step, tensor (T,) of ||dL/dh_t||) of one layer and direction; rows of
    different lengths are padded with blanks. Zero norms (an underflowed gradient) are blank, with a note."""
    if not history:
        raise ValueError("history is empty: record (training step, ||dL/dh_t|| per step) at least once")
    steps = [int(s) for s, _ in history]
    T = max(len(n) for _, n in history)
    grid = torch.full((len(history), T), float("nan"), dtype=torch.float64)
    for r, (_, norms) in enumerate(history):
        n = norms.detach().double().cpu()
        grid[r, :len(n)] = torch.where(n > 0, torch.log10(n.clamp_min(1e-300)), torch.tensor(float("nan")))
    fig = _figure(WIDTH, 4.6)
    ax = fig.subplots()
    finite = grid[grid.isfinite()]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
    if vmin == vmax:
        vmin, vmax = vmin - 1, vmax + 1
    # Row edges halfway between recorded steps, so unevenly spaced records keep their true positions.
    y = torch.tensor(steps, dtype=torch.float64)
    if len(steps) > 1:
        mids = (y[1:] + y[:-1]) / 2
        edges = torch.cat([y[:1] - (mids[0] - y[0]), mids, y[-1:] + (y[-1] - mids[-1])])
    else:
        edges = torch.tensor([y[0] - 0.5, y[0] + 0.5])
    x_edges = torch.arange(T + 1, dtype=torch.float64) - 0.5
    mesh = ax.pcolormesh(x_edges.numpy(), edges.numpy(), grid.numpy(), cmap="viridis", vmin=vmin, vmax=vmax,
                         shading="flat")
    cb = fig.colorbar(mesh, ax=ax)
    cb.set_label(r"$\log_{10} \|dL/dh_t\|$")
    ax.set_xlabel("time step t within the sequence (steps)")
    ax.set_ylabel("training step (updates)")
    ax.set_title(title or "gradient reaching each time step, over training")
    if any(bool((n.detach() == 0).any()) for _, n in history):
        ax.text(0.01, -0.13, "white: ||dL/dh_t|| = 0 (the gradient underflowed the model's dtype, e.g. below "
                "~1e-45 in float32)", transform=ax.transAxes, fontsize=9, color="0.3", va="top")
    return _save(fig, path)


def _layer_name(layer: dict) -> str:
    return f"{layer['module']} layer {layer['layer']}" + (" reverse" if layer["direction"] else "")


def plot_training(records: list, path, *, title: str | None = None) -> Path:
    """Four panels over training from diagnostics records (``rnnlab.diagnose.during``: one per recorded step):
    the pre-clip global gradient norm (log y, clipped steps marked); the share of updates clipped in each record's
    window (%); the spectral norm (solid) and spectral radius (dashed) of each layer's whole W_hh — the radius is the
    largest |eigenvalue| of each gate's block; and the saturated share of each gate type (%), per layer."""
    records = [r for r in records if r.get("layers") is not None]
    if not records:
        raise ValueError("no diagnostics records: train with --diagnose-every N to write them")
    fig = _figure(WIDTH, 7.4)
    (ax_g, ax_c), (ax_s, ax_t) = fig.subplots(2, 2)
    steps = [r["step"] for r in records]
    norms = _positive([r.get("grad_norm") if r.get("grad_norm") is not None else float("nan") for r in records])
    ax_g.plot(steps, norms, color=COLORS[0], lw=1.6, marker="o", ms=3, label="pre-clip norm")
    hit = [(s, n) for s, n, r in zip(steps, norms, records) if r.get("clipped")]
    if hit:
        ax_g.plot(*zip(*hit), ls="none", marker="x", color=COLORS[1], ms=7, label="clipped at this step")
    _log_axis(ax_g, [norms], "gradient norm")
    ax_g.set_ylabel("global gradient norm (before clipping)")
    ax_g.set_title("gradient norm at the recorded steps")
    ax_g.legend(fontsize=9)
    fr = [(r["step"], 100.0 * r["clip_fraction"]) for r in records if r.get("clip_fraction") is not None]
    if fr:
        ax_c.plot(*zip(*fr), color=COLORS[1], lw=1.6, marker="o", ms=3)
    ax_c.set_ylim(-3, 103)
    ax_c.set_ylabel("updates clipped (%)")
    ax_c.set_title("clip fraction since the previous record")
    keys = []
    for r in records:
        for layer in r["layers"]:
            k = (layer["module"], layer["layer"], layer["direction"])
            if k not in keys:
                keys.append(k)
    sat_lines = 0
    for i, key in enumerate(keys):
        color = COLORS[i % len(COLORS)]
        rows = [(r["step"], layer) for r in records for layer in r["layers"]
                if (layer["module"], layer["layer"], layer["direction"]) == key]
        name = _layer_name(rows[0][1])
        xs = [s for s, _ in rows]
        norm_all = [(layer.get("spectral_norm") or {}).get("all") for _, layer in rows]
        radius = [max((v for v in (layer.get("spectral_radius") or {}).values() if v is not None), default=None)
                  for _, layer in rows]
        ax_s.plot(xs, [float("nan") if v is None else v for v in norm_all], color=color, lw=1.6,
                  label=f"{name}: ||W_hh||_2")
        ax_s.plot(xs, [float("nan") if v is None else v for v in radius], color=color, lw=1.4, ls="--",
                  label=f"{name}: max spectral radius of a gate block")
        gates = list((rows[0][1].get("saturation") or {}))
        styles = ("-", "--", ":", "-.")
        for j, g in enumerate(gates):
            ys = [(layer.get("saturation") or {}).get(g) for _, layer in rows]
            ax_t.plot(xs, [float("nan") if v is None else 100.0 * v for v in ys], color=color,
                      ls=styles[j % len(styles)], lw=1.4, label=f"{name}: {g}")
            sat_lines += 1
    ax_s.axhline(1.0, color="0.3", ls=":", lw=1)
    ax_s.set_ylabel("spectral norm / radius")
    ax_s.set_title("recurrent weights W_hh (dotted: 1)")
    ax_s.legend(fontsize=8)
    ax_t.set_ylim(-3, 103)
    ax_t.set_ylabel("saturated gate values (%)")
    ax_t.set_title(f"gate saturation (sigmoid < {SIGMOID_LOW} or > {SIGMOID_HIGH}; |tanh| > {TANH_HIGH})")
    if sat_lines:
        ax_t.legend(fontsize=8, ncol=2 if sat_lines > 4 else 1)
    for ax in (ax_g, ax_c, ax_s, ax_t):
        ax.set_xlabel("training step (updates)")
        ax.grid(True, which="major", alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


_SAT_SPANS = {"sigmoid": ((0.0, SIGMOID_LOW), (SIGMOID_HIGH, 1.0)), "tanh": ((-1.0, -TANH_HIGH), (TANH_HIGH, 1.0))}
_RANGES = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}


def plot_saturation(diag: Diagnostics, path, *, title: str | None = None, name: str = "") -> Path:
    """Histograms of the gate values of each layer (rows) and gate (columns), as a share of the values (%), log
    y; the saturated regions shaded and the saturated fraction in each title. An Elman tanh layer shows its h, an
    Elman ReLU layer its pre-activation z (inactive where z <= 0). ``name`` heads the default title."""
    layers = [layer for layer in diag.layers if layer.gate_samples]
    if not layers:
        raise ValueError("the measurement holds no gate values")
    cols = max(len(layer.gate_samples) for layer in layers)
    fig = _figure(min(WIDTH, max(6.0, 2.9 * cols + 1.0)), 2.7 * len(layers) + 0.6)
    axes = fig.subplots(len(layers), cols, squeeze=False)
    for r, layer in enumerate(layers):
        for c in range(cols):
            ax = axes[r][c]
            gates = list(layer.gate_samples)
            if c >= len(gates):
                ax.set_axis_off()
                continue
            g = gates[c]
            kind = layer.gate_kinds[g]
            v = layer.gate_samples[g].double()
            lo, hi = _RANGES.get(kind, (float(v.min()) if v.numel() else -1.0, float(v.max()) if v.numel() else 1.0))
            if hi <= lo:
                lo, hi = lo - 1.0, hi + 1.0
            counts = torch.histc(v.clamp(lo, hi), bins=50, min=lo, max=hi) if v.numel() else torch.zeros(50)
            share = 100.0 * counts / max(1, v.numel())
            edges = torch.linspace(lo, hi, 51)
            ax.stairs(share.numpy(), edges.numpy(), fill=True, color=COLORS[c % len(COLORS)], alpha=0.8)
            for a, b in _SAT_SPANS.get(kind, ()):
                ax.axvspan(a, b, color="0.5", alpha=0.25, lw=0)
            if kind == "relu":
                ax.axvspan(lo, 0.0, color="0.5", alpha=0.25, lw=0)
            if float(share.max()) > 0:
                ax.set_yscale("log")
                ax.set_ylim(max(float(share[share > 0].min()) / 2, 1e-3), 150)
            frac = layer.saturation.get(g, float("nan"))
            what = "inactive" if kind == "relu" else "saturated"
            gate_name = {"h": "h (tanh)", "relu": "z (ReLU input)"}.get(g, f"{g} ({kind})")
            ax.set_title(f"{layer.label}: {gate_name}\n{100 * frac:.1f}% {what}", fontsize=10)
            ax.set_xlabel("pre-activation z" if kind == "relu" else f"{kind} gate value")
            if c == 0:
                ax.set_ylabel("share of values (%)")
    kinds = {k for layer in layers for k in layer.gate_kinds.values()}
    rules = ([f"sigmoid < {SIGMOID_LOW} or > {SIGMOID_HIGH}"] if "sigmoid" in kinds else []) + \
        ([f"|tanh| > {TANH_HIGH}"] if "tanh" in kinds else []) + (["ReLU input z <= 0"] if "relu" in kinds else [])
    fig.suptitle(title or f"{name + ': ' if name else ''}gate values (shaded: saturated or inactive: {', '.join(rules)})", fontsize=11)
    return _save(fig, path)


def plot_losses(curves: dict, path, *, baseline: float | None = None, baseline_label: str = "baseline",
                ylabel: str = "training loss", title: str | None = None) -> Path:
    """Training loss against the update step, one line per run (``curves``: name -> (steps, losses)); log y when
    the losses are positive; ``baseline`` as a dashed line (e.g. the adding problem's 0.167)."""
    fig = _figure(WIDTH * 0.62, 4.2)
    ax = fig.subplots()
    series = []
    for i, (name, (steps, losses)) in enumerate(curves.items()):
        ys = _positive(losses)
        series.append(ys)
        ax.plot(list(steps), ys, color=COLORS[i % len(COLORS)], lw=1.8, label=name)
    if baseline is not None:
        ax.axhline(baseline, color="0.3", ls="--", lw=1, label=f"{baseline_label} ({baseline:.3g})")
        series.append([baseline])
    _log_axis(ax, series, "loss")
    ax.set_xlabel("training step (updates)")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title or "training loss")
    if curves or baseline is not None:
        ax.legend(fontsize=9)
    return _save(fig, path)


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    cap = html.escape(caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{cap}">'
            f"<figcaption>{cap}</figcaption></figure>")


def write_html(path, title: str, sections: list, *, intro: str = "") -> Path:
    """One self-contained HTML file: a title, an optional intro paragraph, then each section ``(heading, text,
    figures)`` or ``(heading, text, figures, block)`` — ``text`` shown preformatted (a verdict), ``figures`` a list
    of (PNG path, caption) embedded as base64 data URIs, so the file needs nothing beside it; ``block``: HTML put in
    as it is, after the figures (e.g. ``hidden.units_html``: build it from escaped text only)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
             "<style>body{font-family:system-ui,sans-serif;max-width:1280px;margin:2em auto;padding:0 1em;"
             "color:#222}pre{background:#f6f6f6;padding:1em;white-space:pre-wrap;font-size:13px}"
             "img{max-width:100%;height:auto;border:1px solid #ddd}figure{margin:1.5em 0}"
             "figcaption{color:#555;font-size:14px}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    if intro:
        parts.append(f"<p>{html.escape(intro)}</p>")
    for heading, text, figures, *block in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if text:
            parts.append(f"<pre>{html.escape(text)}</pre>")
        for fig_path, caption in figures or ():
            parts.append(_img(fig_path, caption))
        parts.extend(b for b in block if b)
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# -- sequence to sequence -----------------------------------------------------------------------------------------
def _token_label(token: str) -> str:
    """A token as a tick label: a space as ␣ (a character model's space is a real token), others as they are."""
    return {" ": "␣", "\t": "⇥", "": "∅"}.get(token, token)


def plot_attention(weights, source_tokens: list[str], target_tokens: list[str], path, *,
                   title: str | None = None) -> Path:
    """Heatmap of a decoder's attention weights: one row per output token (``target_tokens``, top to bottom, the
    final <eos> included when it was produced), one column per source token (``source_tokens``, left to right);
    ``weights`` (T, S) with rows summing to 1. The colour scale is fixed to [0, 1], so figures compare. The figure
    grows with the sequences (about 0.25 inch a token) up to the report width; long sequences show every k-th
    label."""
    w = torch.as_tensor(weights).detach().double().cpu()
    if w.dim() != 2:
        raise ValueError(f"weights must be a (target steps, source tokens) matrix; got shape {tuple(w.shape)}")
    T, S = w.shape
    if T == 0 or S == 0:
        raise ValueError(f"weights of shape {tuple(w.shape)} hold no attention (a model trained with attention "
                         "'none' has none to show)")
    if len(source_tokens) != S or len(target_tokens) != T:
        raise ValueError(f"weights are {T} x {S} (target x source) but there are {len(target_tokens)} target and "
                         f"{len(source_tokens)} source tokens")
    cell = 0.26  # inches per token: 9-pt labels fit without overlapping
    longest = max(len(_token_label(t)) for t in [*source_tokens, *target_tokens])
    margin = 1.4 + 0.07 * min(longest, 16)  # room for the labels and the axis titles
    fig_w = min(WIDTH, max(4.8, S * cell + margin + 1.3))  # + the colour bar
    fig_h = min(WIDTH, max(3.2, T * cell + margin + (0.4 if title else 0.0)))
    fig = _figure(fig_w, fig_h)
    ax = fig.subplots()
    image = ax.imshow(w.numpy(), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    cb = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    cb.set_label("attention weight")

    def ticks(n: int, size: float) -> list[int]:  # every k-th position where the labels would not fit
        fits = max(1, int(size / 0.14))  # a 9-pt label needs about 0.14 inch across
        k = max(1, -(-n // fits))
        return list(range(0, n, k))

    xs = ticks(S, fig_w - margin - 1.3)
    ys = ticks(T, fig_h - margin)
    vertical = max((len(_token_label(source_tokens[i])) for i in xs), default=1) > 1
    ax.set_xticks(xs, [_token_label(source_tokens[i]) for i in xs], fontsize=9,
                  rotation=90 if vertical else 0)
    ax.set_yticks(ys, [_token_label(target_tokens[i]) for i in ys], fontsize=9)
    ax.xaxis.tick_top()
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("source tokens (input)")
    ax.set_ylabel("output tokens (decoder steps)")
    ax.tick_params(length=0)
    if title:
        ax.set_title(title, fontsize=10, pad=8)
    return _save(fig, path)


def plot_length_curves(curves: dict, path, *, ylabel: str = "exact match (%)", title: str | None = None,
                       xlabel: str = "source length (tokens)") -> Path:
    """Accuracy against input length, one line per run: ``curves`` maps a name (e.g. the attention kind) to
    {length: accuracy in [0, 1]}; drawn in percent, y from 0 to 100, a marker per measured length."""
    if not curves:
        raise ValueError("curves is empty: give at least one {length: accuracy} series")
    fig = _figure(WIDTH * 0.62, 4.2)
    ax = fig.subplots()
    for i, (name, points) in enumerate(curves.items()):
        xs = sorted(points)
        ys = [100.0 * float(points[x]) for x in xs]
        ax.plot(xs, ys, color=COLORS[i % len(COLORS)], lw=1.8, marker="o", ms=3.5, label=str(name))
    ax.set_ylim(-3, 103)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(title or "accuracy by input length")
    ax.legend(fontsize=9)
    return _save(fig, path)
