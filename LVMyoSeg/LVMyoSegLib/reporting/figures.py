"""Pictures for reports and checks (matplotlib, Agg canvas, no pyplot global state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..analysis.cardiac_function import CardiacFunction
from ..analysis.evaluation import POSITION_METRICS
from ..cine import Cine
from ..errors import InputError
from ..files import atomic_path
from ..preprocessing.preprocess import CropTransform


def save_figure(fig: Figure, path: Path | str, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"Cannot write {path}: folder {path.parent} does not exist; create it first.")
    FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", pil_kwargs={"compress_level": 1})  # fast zlib level
    return path


def _windowed(frame: np.ndarray) -> np.ndarray:
    """``frame`` scaled to 0..1 between its 1st and 99.5th percentiles (clipped)."""
    lo, hi = np.percentile(frame, (1, 99.5))
    return np.clip((frame - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)


def _myocardium_contours(labels: np.ndarray) -> list[np.ndarray]:
    """Outlines of the myocardium label in a 2D label array, as ``[N, 2]`` (x, y) pixel coordinates."""
    from skimage.measure import find_contours

    from ..labels import MYOCARDIUM

    mask = np.pad(labels == MYOCARDIUM, 1).astype(float)  # closed outlines at the border too
    return [c[:, ::-1] - 1 for c in find_contours(mask, 0.5)]


class _Montage:
    """Equal-sized grey panels tiled into one image on one axes (far cheaper to lay out
    and draw than one axes per panel); :meth:`at` maps panel pixel coordinates to the axes'."""

    def __init__(self, panels: dict[tuple[int, int], np.ndarray], rows: int, cols: int,
                 inches_per_panel: float, title: str | None = None) -> None:
        h, w = next(iter(panels.values())).shape
        scale = inches_per_panel / max(h, w)  # inches per pixel
        self.h, self.w = h, w
        self.gap = g = math.ceil(0.2 / scale)  # 0.2 inch between panels: room for an 8-point title
        mosaic = np.ones((rows * (h + g), cols * (w + g) - g), dtype=np.float32)
        for (r, c), panel in panels.items():
            x0, y0 = self.at(r, c)
            mosaic[y0: y0 + h, x0: x0 + w] = _windowed(panel)
        top = 0.4 if title else 0.0  # inches for the title
        self.fig = Figure(figsize=(mosaic.shape[1] * scale + 0.3, mosaic.shape[0] * scale + 0.1 + top))
        self.ax = self.fig.add_axes((0.01, 0.01, 0.98, 0.98 - top / self.fig.get_figheight()))
        if title:
            self.fig.suptitle(title, fontsize=9)
        self.ax.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        self.ax.set_axis_off()

    def at(self, r: int, c: int) -> tuple[int, int]:
        """(x, y) offset of panel (r, c)'s pixel (0, 0) in the mosaic."""
        return c * (self.w + self.gap), self.gap + r * (self.h + self.gap)

    def clip_to(self, artist, r: int, c: int) -> None:
        """Draw ``artist`` only inside panel (r, c)."""
        x0, y0 = self.at(r, c)
        artist.set_clip_path(Rectangle((x0 - 0.5, y0 - 0.5), self.w, self.h, transform=self.ax.transData))

    def title(self, r: int, c: int, text: str) -> None:
        x, y = self.at(r, c)
        self.ax.text(x + self.w / 2, y - 0.5 - 0.15 * self.gap, text, ha="center", va="bottom", fontsize=8)


def preprocessing_figure(cine: Cine, transform: CropTransform, path: Path | str) -> Path:
    """PNG montage: per slice, the mid-cycle frame with the LV centre and the crop box drawn.

    Green box and cross: the slice found its own circle; orange: it relies on the
    study-level LV axis (``fallback``). A small white circle marks that slice's
    own detected circle centre when there is one.
    """
    n_z = cine.n_slices
    t_mid = cine.n_phases // 2
    cols = math.ceil(math.sqrt(n_z))
    rows = math.ceil(n_z / cols)
    grid = [(z // cols, z % cols) for z in range(n_z)]
    m = _Montage({grid[z]: cine.frames[t_mid, z] for z in range(n_z)}, rows, cols, inches_per_panel=2.5,
                 title=f"LV localisation, phase {t_mid}: {Path(cine.source).name or 'cine'}")
    loc = transform.localisation
    size = (transform.crop_size * transform.step_ji)  # box extent in input pixels (rows, cols)
    for z in range(n_z):
        x0, y0 = m.at(*grid[z])
        fallback = bool(loc.fallback[z]) if loc is not None else False
        colour = "orange" if fallback else "lime"
        corner = transform.origin_ji[z] - 0.5 * transform.step_ji  # pixel edge, not centre
        box = m.ax.add_patch(Rectangle((x0 + corner[1], y0 + corner[0]), size[1], size[0], fill=False,
                                       edgecolor=colour, linewidth=1.2))
        m.clip_to(box, *grid[z])
        cj, ci = transform.centres_ji[z]
        m.ax.plot([x0 + ci], [y0 + cj], marker="+", color=colour, markersize=10, mew=1.5)
        if loc is not None and np.isfinite(loc.detected_ji[z]).all():
            m.ax.plot([x0 + loc.detected_ji[z, 1]], [y0 + loc.detected_ji[z, 0]], marker="o", mfc="none",
                      color="white", markersize=5)
        m.title(*grid[z], f"slice {z}{' (axis fallback)' if fallback else ''}")
    return save_figure(m.fig, path)


def overlay_montage(cine: Cine, label_map: np.ndarray, frames: list[int], path: Path | str,
                    expert: np.ndarray | None = None) -> Path:
    """PNG montage: one row per slice, one column per frame in ``frames`` (e.g. ED, ES), with
    the automatic myocardium contour (red) and, when given, the expert one (green, dashed).

    All panels show the same region: the labelled part of the study with a margin.
    """
    n_z = cine.n_slices
    any_label = (label_map > 0).any(axis=(0, 1))
    rows, cols = np.nonzero(any_label)
    if len(rows):
        pad = 15
        r0, r1 = max(rows.min() - pad, 0), min(rows.max() + pad, any_label.shape[0] - 1)
        c0, c1 = max(cols.min() - pad, 0), min(cols.max() + pad, any_label.shape[1] - 1)
    else:
        r0, r1, c0, c1 = 0, any_label.shape[0] - 1, 0, any_label.shape[1] - 1
    window = (slice(r0, r1 + 1), slice(c0, c1 + 1))
    m = _Montage({(z, k): cine.frames[t, z][window] for z in range(n_z) for k, t in enumerate(frames)},
                 n_z, len(frames), inches_per_panel=2.0)
    layers = [(label_map, "red", "-")] + ([(expert, "lime", "--")] if expert is not None else [])
    for labels, colour, style in layers:
        lines = []  # every contour of this layer in one artist: fast even for a ragged mask
        for z in range(n_z):
            for k, t in enumerate(frames):
                offset = np.array(m.at(z, k))
                lines += [c + offset for c in _myocardium_contours(labels[t, z][window])]
        m.ax.add_collection(LineCollection(lines, colors=colour, linestyles=style, linewidths=1.0))
    for z in range(n_z):
        for k, t in enumerate(frames):
            m.title(z, k, f"slice {z + 1}, frame {t + 1}")
    return save_figure(m.fig, path)


def consecutive_frames_figure(cine: Cine, expert: np.ndarray, predictions: dict[str, np.ndarray],
                              examples: list[tuple[int, int]], path: Path | str,
                              titles: dict[str, str] | None = None) -> Path:
    """The paper's Fig. 3 layout: for each example (t, z) and each model, the previous,
    current and next frame of slice z with the automatic myocardium contour (red, dashed)
    and, on the current (expert-labelled) frame, the expert contour (green, solid).

    ``predictions`` maps a model name to its label map ``[T, Z, Y, X]``.
    """
    titles = titles or {}
    names = list(predictions)
    n_rows = len(examples) * len(names)
    fig = Figure(figsize=(7.5, 2.5 * n_rows))
    n_t = cine.n_phases
    row = 0
    for t, z in examples:
        rows, cols = np.nonzero(expert[t, z] > 0)
        pad = 12
        r0, r1 = max(rows.min() - pad, 0), min(rows.max() + pad, expert.shape[2] - 1)
        c0, c1 = max(cols.min() - pad, 0), min(cols.max() + pad, expert.shape[3] - 1)
        for name in names:
            for k, dt in enumerate((-1, 0, 1)):
                tt = (t + dt) % n_t  # the cycle is periodic
                ax = fig.add_subplot(n_rows, 3, row * 3 + k + 1)
                ax.imshow(_windowed(cine.frames[tt, z, r0:r1 + 1, c0:c1 + 1]), cmap="gray", vmin=0, vmax=1)
                layers = [(predictions[name], "red", "--")]
                if dt == 0:
                    layers.insert(0, (expert, "lime", "-"))
                for labels, colour, style in layers:
                    for contour in _myocardium_contours(labels[tt, z, r0:r1 + 1, c0:c1 + 1]):
                        ax.plot(contour[:, 0], contour[:, 1], color=colour, linestyle=style, linewidth=1.1)
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_title(f"{titles.get(name, name)}: frame {tt + 1}, slice {z + 1}", fontsize=7)
            row += 1
    fig.tight_layout()
    return save_figure(fig, path)


def bland_altman_figure(rows: list[dict], stats: dict[str, dict], path: Path | str) -> Path:
    """Bland–Altman plots (automatic − expert against their mean) for EDV, ESV, EF and LV mass:
    the product's own figures (filled, with their mean and limits of agreement) and the
    expert's-slices figures (open circles) beside them; withheld values are left out."""
    fig = Figure(figsize=(14, 3.6))
    for k, (key, label) in enumerate((("edv_ml", "EDV (mL)"), ("esv_ml", "ESV (mL)"),
                                      ("ef_percent", "EF (%)"), ("lv_mass_g", "LV mass (g)"))):
        ax = fig.add_subplot(1, 4, k + 1)
        for which, style in (("expert_slices", {"facecolors": "none", "edgecolors": "0.5"}),
                             ("own", {"color": "tab:blue"})):
            pts = [(r["case"], r["expert"][key], r[which][key]) for r in rows
                   if r["expert"][key] is not None and r[which][key] is not None]
            if not pts:
                continue
            e = np.array([p[1] for p in pts])
            a = np.array([p[2] for p in pts])
            ax.scatter((a + e) / 2, a - e, label="product" if which == "own" else "expert's slices",
                       **style)
            if which == "own":
                for (case, *_), x, y in zip(pts, (a + e) / 2, a - e):
                    ax.annotate(case, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        s = stats["own"][key]
        if s["mean_diff"] is not None:
            ax.axhline(s["mean_diff"], color="tab:blue", lw=1)
            for v in (s["loa_low"], s["loa_high"]):
                if v is not None:
                    ax.axhline(v, color="tab:blue", linestyle="--", lw=0.8)
        ax.axhline(0, color="lightgray", linewidth=0.8)
        ax.set_xlabel(f"mean of expert and automatic {label}")
        ax.set_ylabel(f"automatic − expert {label}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def loo_scores_figure(fold_summaries: dict[str, dict[str, dict]], titles: dict[str, str],
                      path: Path | str) -> Path:
    """Per held-out case, myocardium DSC and HD (mean and sd over its slices) of each model of a
    leave-one-out run ("before"/"after" of a fine-tuning run, or the variants), as grouped bars.

    ``fold_summaries``: case id -> model name -> :func:`LVMyoSegLib.analysis.evaluation.case_summary`.
    """
    cases = list(fold_summaries)
    if not cases:
        raise InputError("No finished fold to plot.")
    names = list(titles)
    fig = Figure(figsize=(max(6.0, 1.6 * len(cases) + 2.0), 3.6))
    width = 0.8 / len(names)
    x = np.arange(len(cases))
    for k, (key, label) in enumerate(POSITION_METRICS[:2]):  # DSC, HD
        ax = fig.add_subplot(1, 2, k + 1)
        for i, name in enumerate(names):
            stats = [fold_summaries[c][name][key] for c in cases]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, [s["mean"] for s in stats], width,
                   yerr=[s["sd"] if np.isfinite(s["sd"]) else 0.0 for s in stats],
                   capsize=2, label=titles[name])
        ax.set_xticks(x, cases, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel(f"myocardium {label}")
        if key == "dsc":
            ax.set_ylim(0.0, 1.0)
        ax.legend(fontsize=7)
    fig.suptitle("Held-out cases: mean (sd) over the expert-labelled slices", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_volume_curve(result: CardiacFunction, path: Path | str) -> Path:
    """PNG of the blood-pool (and myocardial) volume per frame, ED and ES marked."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    times = result.trigger_times_ms
    x = np.asarray(times) if times is not None else np.arange(result.blood_volume_ml.size)
    ok = np.isfinite(result.blood_volume_ml)
    ax.plot(x[ok], result.blood_volume_ml[ok], "o-", label="LV blood pool")
    ax.plot(x[ok], result.myocardium_volume_ml[ok], "s--", color="0.5", label="myocardium")
    for f, name, c in ((result.ed_frame, "ED", "tab:red"), (result.es_frame, "ES", "tab:green")):
        ax.axvline(x[f], color=c, lw=1)
        ax.annotate(f"{name} {result.blood_volume_ml[f]:.1f} mL", (x[f], result.blood_volume_ml[f]),
                    textcoords="offset points", xytext=(4, 6), color=c)
    ax.set_xlabel("trigger time (ms)" if times is not None else "frame")
    ax.set_ylabel("volume (mL)")
    ef = result.ef_percent
    ax.set_title(f"LV volume curve — EF {ef:.1f} %" if math.isfinite(ef) else "LV volume curve")
    ax.legend(loc="best")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def plot_thickness(result: CardiacFunction, path: Path | str, frame: int | None = None
                   ) -> Path:
    """PNG of ED (or ``frame``) wall thickness: AHA bull's-eye, else a slice x sector map.

    A frame without any measured slice gives a PNG that says so (outputs stay complete).
    """
    frame = result.ed_frame if frame is None else frame
    rows = [s for s in result.thickness if s.frame == frame]
    fig = Figure(figsize=(5.6, 5.0))
    if not rows:
        ax = fig.add_subplot(1, 1, 1)
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"No wall thickness on frame {frame}:\nno myocardium ring with a cavity.",
                ha="center", va="center")
    elif result.thickness_reference == "aha":
        ax = fig.add_subplot(1, 1, 1, projection="polar")
        seg: dict[int, list[float]] = {}
        for s in rows:
            for sec in s.sectors:
                if math.isfinite(sec.mean_mm):
                    seg.setdefault(sec.aha_segment, []).append(sec.mean_mm)
        means = {k: float(np.mean(v)) for k, v in seg.items()}
        from matplotlib import colormaps
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        lo, hi = min(means.values(), default=0.0), max(means.values(), default=1.0)
        norm = Normalize(lo - 0.5, hi + 0.5) if hi - lo < 1.0 else Normalize(lo, hi)
        cmap = colormaps["viridis"]
        ring_r = {"basal": (2.0, 3.0), "mid": (1.0, 2.0), "apical": (0.0, 1.0)}
        for s in rows:
            r0, r1 = ring_r[s.level]
            for sec in s.sectors:
                # plot angle: anterior at the top, septum on the left (120 deg + relative angle)
                a0 = math.radians(120.0 + sec.angle_start_deg)
                w = math.radians(sec.angle_end_deg - sec.angle_start_deg)
                val = means.get(sec.aha_segment, float("nan"))
                col = cmap(norm(val)) if math.isfinite(val) else (0.85, 0.85, 0.85, 1)
                ax.bar(a0, r1 - r0, width=w, bottom=r0, align="edge", color=col, edgecolor="w")
                txt = f"{sec.aha_segment}" + (f"\n{val:.1f}" if math.isfinite(val) else "")
                ax.text(a0 + w / 2, (r0 + r1) / 2, txt, ha="center", va="center", fontsize=7)
        ax.set_axis_off()
        fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label="mm", shrink=0.7)
        ax.set_title(f"Wall thickness (mm), AHA segments, frame {frame}")
    else:
        ax = fig.add_subplot(1, 1, 1)
        img = np.array([[sec.mean_mm for sec in s.sectors] for s in rows])
        im = ax.imshow(img, aspect="auto", cmap="viridis")
        ax.set_yticks(range(len(rows)), [f"slice {s.slice}" for s in rows])
        ax.set_xticks(range(img.shape[1]), [str(k + 1) for k in range(img.shape[1])])
        ax.set_xlabel("sector (relative numbering, no RV insertion point)")
        for (i, j), v in np.ndenumerate(img):
            if math.isfinite(v):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(im, ax=ax, label="mm")
        ax.set_title(f"Wall thickness (mm), frame {frame}")
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
