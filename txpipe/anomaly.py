"""Anomaly detection on the window statistics, with Beam's own ``apache_beam.ml.anomaly``.

Every window row becomes one point per metric (``total_transactions``, ``total_amount_sum``)
of a *series*: the whole stream, or one value of the ``--breakdown`` dimension. Beam's
``AnomalyDetection`` keys its detector state by series, scores each point against that
series' history, then learns it. A point scored at or above the threshold is an anomaly row
(:data:`txpipe.schema.ANOMALIES`).

Choices, and why:

- **Which pane.** Only the ON_TIME pane of a window is scored: it is the first complete count
  (the watermark has passed the window) and each window has exactly one. EARLY panes are
  partial (a half-full window looks like a drop-out) and LATE panes would make the detector
  learn the same window twice. A replay emits ON_TIME panes only. Late data that arrives after
  the on-time pane changes the window row, not its score.
- **Global window for the history.** Beam keeps state per key *and window*: scored inside
  their 30 s windows, series would start from nothing every window. The points are re-windowed
  into the global window first, so a series' tracker spans the whole run.
- **Default detector: IQR** (Beam's ``IQR``, a sliding quartile tracker per series; score =
  distance beyond the interquartile range, in IQRs). Window amounts have a long tail — the
  simulator's 1-in-10,000 999,999.99 test amount alone multiplies a window's sum — and a
  z-score's mean and standard deviation absorb such windows, after which a real burst no longer
  stands out. Quartiles ignore them. Measured on seeded streams with injected anomalies
  (``benchmarks/anomaly.py``, whole stream), IQR kept precision and recall at 1.0 where ZScore
  found fewer than half of them, and RobustZScore (median / MAD) flagged far more of the small
  categories' noise than IQR did.
- **Threshold** (:data:`DEFAULT_THRESHOLDS`): about six standard deviations of a normal series
  for every detector — 6 for the z-scores, 4 IQRs beyond the quartiles for IQR (Q3 + 4 IQR ≈
  mean + 6 sigma). Beam's defaults (Tukey's 1.5 IQRs ≈ 2.7 sigma, 3 sigma) suit one look at one
  series; here every window scores two metrics of up to a dozen series, and window sums of
  long-tailed amounts are not normal: per category, at 3 IQRs about one finding in five was
  false, at 4 about one in nine (4 h at 20 tx/s, seed 7; docs/anomalies.md).
- **History and warm-up.** Each series' tracker keeps its last ``history`` points (120 windows
  = one hour of 30 s windows: enough for stable quartiles, short enough to follow a daily
  rhythm). Beam's trackers answer from the first point they hold — quartiles of two numbers —
  so :class:`WarmedUp` keeps a series silent (score NaN, Beam's "not ready", label
  ``warming_up``) until it has learned ``warmup`` points.
- **Order.** A detector scores a point against the points it learned *before* it. In streaming,
  on-time panes arrive in event-time order as the watermark passes them. On a replay Beam gives
  a stateful DoFn its elements in no set order: the history is then a sample of the series'
  other windows, which suits a stationary stream. (The benchmark replays; the demo and
  tests/test_anomaly_detection.py stream.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.ml.anomaly.base import (
    DEFAULT_MISSING_LABEL,
    DEFAULT_NORMAL_LABEL,
    DEFAULT_OUTLIER_LABEL,
    AnomalyDetector,
)
from apache_beam.ml.anomaly.detectors import IQR, RobustZScore, ZScore
from apache_beam.ml.anomaly.specifiable import specifiable
from apache_beam.ml.anomaly.thresholds import FixedThreshold
from apache_beam.ml.anomaly.transforms import AnomalyDetection
from apache_beam.ml.anomaly.univariate.mad import MadTracker
from apache_beam.ml.anomaly.univariate.mean import IncSlidingMeanTracker
from apache_beam.ml.anomaly.univariate.median import MedianTracker
from apache_beam.ml.anomaly.univariate.quantile import BufferedSlidingQuantileTracker
from apache_beam.ml.anomaly.univariate.stdev import IncSlidingStdevTracker
from apache_beam.transforms import window
from apache_beam.utils.plugin import BeamPlugin

from txpipe import metrics
from txpipe.config import Detector, Settings
from txpipe.contract import UTC, from_micros, to_micros

#: The window-table columns scored, for every series.
METRICS = ("total_transactions", "total_amount_sum")
#: Score from which a point is an anomaly, per detector (see the module docstring).
DEFAULT_THRESHOLDS = {Detector.IQR: 4.0, Detector.ROBUST_ZSCORE: 6.0, Detector.ZSCORE: 6.0}
LABELS = {DEFAULT_NORMAL_LABEL: "normal", DEFAULT_OUTLIER_LABEL: "outlier",
          DEFAULT_MISSING_LABEL: "warming_up"}
ON_TIME = "ON_TIME"


@specifiable
class WarmedUp(AnomalyDetector):
    """Any Beam detector, kept silent until it has learned ``warmup`` points of its series.

    Silent means a NaN score, which Beam's threshold functions label as missing ("the model is
    not ready"); the point is still learned.
    """

    def __init__(self, detector: AnomalyDetector, warmup: int, **kwargs):
        kwargs.setdefault("model_id", detector._model_id)
        kwargs.setdefault("features", detector._features)
        kwargs.setdefault("threshold_criterion", detector._threshold_criterion)
        super().__init__(**kwargs)
        self._detector = detector
        self._warmup = warmup
        self._learned = 0

    def learn_one(self, x: beam.Row) -> None:
        self._detector.learn_one(x)
        self._learned += 1

    def score_one(self, x: beam.Row) -> float | None:
        if self._learned < self._warmup:
            return float("nan")
        return self._detector.score_one(x)


class _WorkerImport(BeamPlugin):
    """Dataflow imports every BeamPlugin's module on its workers at start-up: Beam's detector
    registry then knows :class:`WarmedUp` when a worker rebuilds the detector from its spec."""


@dataclass(frozen=True)
class AnomalySpec:
    """Which detector, from which score, on how much history — validated once."""

    detector: Detector = Detector.IQR
    threshold: float | None = None
    history: int = 120
    warmup: int = 20

    def __post_init__(self):
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError("anomaly threshold must be > 0")
        if not 1 <= self.warmup <= self.history:
            raise ValueError("anomaly warm-up must be in [1, history]")

    @classmethod
    def from_settings(cls, settings: Settings) -> AnomalySpec:
        return cls(settings.anomaly_detector, settings.anomaly_threshold,
                   settings.anomaly_history, settings.anomaly_warmup)

    @property
    def cutoff(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.detector]

    def build(self) -> AnomalyDetector:
        """Beam's detector with sliding trackers of ``history`` points, behind a warm-up."""
        n, features, threshold = self.history, ["value"], FixedThreshold(self.cutoff)
        if self.detector is Detector.IQR:
            inner = IQR(q1_tracker=BufferedSlidingQuantileTracker(n, 0.25), features=features,
                        threshold_criterion=threshold)
        elif self.detector is Detector.ROBUST_ZSCORE:
            inner = RobustZScore(
                mad_tracker=MadTracker(MedianTracker(BufferedSlidingQuantileTracker(n, 0.5)),
                                       MedianTracker(BufferedSlidingQuantileTracker(n, 0.5))),
                features=features, threshold_criterion=threshold)
        else:
            inner = ZScore(sub_stat_tracker=IncSlidingMeanTracker(n),
                           stdev_tracker=IncSlidingStdevTracker(n), features=features,
                           threshold_criterion=threshold)
        return WarmedUp(inner, self.warmup)

    def describe(self) -> str:
        return (f"{self.detector.value} detector, threshold {self.cutoff:g}, sliding history "
                f"{self.history} windows, warm-up {self.warmup} windows")


def series_points(row: dict):
    """An ON_TIME window row -> ``(series key, point)`` per metric; other panes -> nothing."""
    if row["pane_timing"] != ON_TIME:
        return
    dimension = row.get("dimension")
    value = row.get("dimension_value") if dimension else None
    for metric in METRICS:
        exact = row[metric]
        yield (metric, dimension, value), beam.Row(
            value=float(exact), exact=str(exact),
            start_us=to_micros(row["window_start_time"]), end_us=to_micros(row["window_end_time"]))


def scored_row(keyed_result) -> dict:
    """Beam's ``(key, AnomalyResult)`` -> a row of every column of schema.ANOMALIES."""
    (metric, dimension, value), result = keyed_result
    point = result.example
    (prediction,) = result.predictions
    score = prediction.score
    return {
        "window_start_time": from_micros(point.start_us),
        "window_end_time": from_micros(point.end_us),
        "dimension": dimension,
        "dimension_value": value,
        "metric": metric,
        "value": Decimal(point.exact),
        "score": None if score is None or math.isnan(score) else float(score),
        "threshold": prediction.threshold,
        "detector": prediction.model_id,
        "label": LABELS.get(prediction.label, str(prediction.label)),
        "processed_at": datetime.now(UTC),
    }


class ScoreWindows(beam.PTransform):
    """Window rows (any number of PCollections: whole stream, per dimension) -> one scored row
    per series, metric and window, whatever its label (the notebook plots them all)."""

    def __init__(self, spec: AnomalySpec | None = None):
        super().__init__()
        self.spec = spec or AnomalySpec()

    def expand(self, rows):
        inputs = rows if isinstance(rows, (tuple, list)) else (rows,)
        # Typed as (key, point) pairs: AnomalyDetection then keeps a detector state per key.
        points = [pcoll | f"Points{i}" >> beam.FlatMap(series_points).with_output_types(
                      tuple[tuple[str, str | None, str | None], Any])
                  for i, pcoll in enumerate(inputs)]
        return (
            points
            | "AllSeries" >> beam.Flatten()
            # State is per key and window: one global window lets a series' history span them.
            | "SeriesHistory" >> beam.WindowInto(window.GlobalWindows())
            | "AnomalyDetection" >> AnomalyDetection(self.spec.build())
            | "ScoredRows" >> beam.Map(scored_row)
        )


class _Outliers(beam.DoFn):
    def __init__(self):
        self._found = Metrics.counter(metrics.NAMESPACE, metrics.ANOMALIES)

    def process(self, row: dict):
        if row["label"] == "outlier":
            self._found.inc()
            yield row


class DetectAnomalies(beam.PTransform):
    """Window rows -> anomaly rows (schema.ANOMALIES): the scored points labelled outlier."""

    def __init__(self, spec: AnomalySpec | None = None):
        super().__init__()
        self.spec = spec or AnomalySpec()

    @classmethod
    def from_settings(cls, settings: Settings) -> DetectAnomalies:
        return cls(AnomalySpec.from_settings(settings))

    def expand(self, rows):
        return (
            rows
            | "Score" >> ScoreWindows(self.spec)
            | "Outliers" >> beam.ParDo(_Outliers())
        )
