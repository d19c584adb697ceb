"""A run's peak memory as a function of its input's size, fitted to what was measured.

Input sizes travel as bucket strings "<unit>:<size>" ("px:921600", "s:12.5", "chars:1200",
"symbols:340"): `size_key` builds them, `parse_key` reads them back; anything else ("0.25MP",
"any", a test's own label) is an opaque key from before sizes were exact, used only where no
measured size of the unit exists.

Per model, device kind and unit the store keeps the largest clean peak per distinct size (at most
MAX_POINTS), and `predict` fits peak = a + b * size to them by least squares with a, b >= 0
(memory is mostly weights' scratch plus activations that grow with the input), over their
monotone envelope (`envelope`: a larger input never gets less than a smaller one needed). The prediction is
the fit times (1 + margin), the margin being the largest relative amount by which a measured
point lies above the fit, and never below MIN_MARGIN: every measured size is then predicted at or
above its peak. With one size only: that peak for smaller inputs, the peak scaled by size / size0
for larger ones (an upper bound whenever the truth is affine with a >= 0), plus MIN_MARGIN. (Moving
the one peak along the slope of the model's other calls instead, first calls after a load against
later ones, was measured in bench estimate: 6 of 10 such predictions fell short; not kept.)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MIN_MARGIN = 0.05
MAX_POINTS = 48
# Relative residuals are taken against at least this much: below a MiB a run's RSS growth is
# allocator noise, and a fit near zero would turn a few KiB into a margin of several times.
RESIDUAL_FLOOR = 1 << 20


def size_key(unit: str, size: float) -> str:
    """The bucket string for an input of `size` in `unit`: 'px:921600', 's:12.5'."""
    if not unit.isalpha():
        raise ValueError(f"a size unit is letters only, not {unit!r}")
    size = max(float(size), 0.0)
    text = str(int(size)) if size.is_integer() else f"{round(size, 3):.3f}".rstrip("0").rstrip(".")
    return f"{unit}:{text}"


def seconds_bucket(seconds: float) -> str:
    """Input size of audio: its length in seconds ('s:12.5'); the engine fits memory to it."""
    return size_key("s", round(seconds, 2))


def parse_key(key: str | None) -> tuple[str, float] | None:
    """(unit, size) of a size key, None for a legacy bucket ('0.25MP', 'any') or None."""
    if not key or ":" not in key:
        return None
    unit, _, number = key.partition(":")
    try:
        size = float(number)
    except ValueError:
        return None
    return (unit, size) if unit.isalpha() and math.isfinite(size) and size >= 0 else None


@dataclass(frozen=True)
class Prediction:
    bytes: int           # what admission reserves: the fit plus its margin
    fit_bytes: int       # the fit alone (or the one peak it scales)
    margin: float        # relative: bytes = fit_bytes * (1 + margin)
    basis: str           # 'fit' (2+ sizes), 'one size', 'bucket' (legacy key), 'largest', 'estimate';
                         # 'first fit' / 'first one size' for a first call after a load
    points: int = 0      # measured sizes behind it
    crowded: bool = False  # only peaks measured while other calls ran were there to use


@dataclass(frozen=True)
class Fit:
    intercept: float
    slope: float
    margin: float

    def at(self, size: float) -> float:
        return self.intercept + self.slope * size


def fit(points: list[tuple[float, int]]) -> Fit:
    """Least squares peak = a + b * size with a, b >= 0 over 2+ distinct sizes, and its margin."""
    n = len(points)
    sizes = [float(s) for s, _ in points]
    peaks = [float(p) for _, p in points]
    mean_s, mean_p = sum(sizes) / n, sum(peaks) / n
    sxx = sum((s - mean_s) ** 2 for s in sizes)
    sxy = sum((s - mean_s) * (p - mean_p) for s, p in zip(sizes, peaks))
    slope = sxy / sxx if sxx > 0 else 0.0
    intercept = mean_p - slope * mean_s
    if slope < 0:           # memory that shrinks with the input is noise: a constant
        slope, intercept = 0.0, mean_p
    elif intercept < 0:     # a run never gives memory back below zero input: through the origin
        intercept = 0.0
        slope = sum(s * p for s, p in zip(sizes, peaks)) / max(sum(s * s for s in sizes), 1e-12)
    over = [(p - (intercept + slope * s)) / max(intercept + slope * s, RESIDUAL_FLOOR)
            for s, p in points]
    return Fit(intercept, slope, max([MIN_MARGIN, *over]))


def envelope(points: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Each peak raised to the largest at any smaller size: a run does not need less memory for a
    larger input, so a point below a smaller size's peak is a reading of an allocator that still
    held memory from an earlier, larger run (ONNX Runtime's arena, glibc's heap), not the need."""
    out, top = [], 0
    for size, peak in sorted(points):
        top = max(top, peak)
        out.append((size, top))
    return out


def predict(points: list[tuple[float, int]], size: float, crowded: bool = False) -> Prediction:
    """The peak for an input of `size` from measured (size, peak) points (distinct sizes)."""
    points = envelope(points)
    if len(points) == 1:
        (size0, peak0), = points
        fitted = peak0 if size <= size0 or size0 <= 0 else peak0 * size / size0
        return Prediction(math.ceil(fitted * (1 + MIN_MARGIN)), math.ceil(fitted), MIN_MARGIN,
                          "one size", 1, crowded)
    line = fit(points)
    fitted = max(line.at(size), 0.0)
    return Prediction(math.ceil(fitted * (1 + line.margin)), math.ceil(fitted), round(line.margin, 4),
                      "fit", len(points), crowded)


def closest_pair(sizes: list[float]) -> tuple[float, float]:
    """The two sizes closest in ratio: where a bound on points loses the least (see FootprintStore)."""
    ordered = sorted(sizes)
    _, small, large = min((math.log((b + 1) / (a + 1)), a, b) for a, b in zip(ordered, ordered[1:]))
    return small, large
