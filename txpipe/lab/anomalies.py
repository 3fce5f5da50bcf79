"""Notebook helpers for anomaly detection (notebook 07): collecting a pipeline's rows into
pandas, the scores-against-threshold picture, and a live chart of the local warehouse.

The Beam code itself stays in the notebook's cells; these only move rows and draw.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from txpipe.lab.scenarios import Bucket  # noqa: F401  (one definition; notebook 07 uses lab.Bucket)

SCENARIO_COLOURS = {"volume_spike": "#dd8452", "amount_burst": "#8172b3", "drop_out": "#55a868"}


def plot_scores(scored: pd.DataFrame, truth, title: str = "IQR scores, whole stream"):
    """One panel per metric: each window's score (log scale) against the threshold; outliers
    red; the windows the simulator injected an anomaly into shaded by scenario; windows holding
    a 999,999.99 test amount marked ▲; the warm-up (no score) greyed."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    metrics = list(dict.fromkeys(scored["metric"]))
    fig, axes = plt.subplots(len(metrics), 1, figsize=(11, 3.2 * len(metrics)), sharex=True)
    axes = [axes] if len(metrics) == 1 else list(axes)
    half = pd.Timedelta(seconds=truth.window_size / 2)
    for ax, metric in zip(axes, metrics, strict=True):
        rows = scored[scored["metric"] == metric].sort_values("window_start_time")
        x = rows["window_start_time"] + half
        score = rows["score"].astype(float).clip(lower=0.01)
        warm = rows["label"] == "warming_up"
        if warm.any():
            ax.axvspan(rows.loc[warm, "window_start_time"].min(),
                       rows.loc[warm, "window_end_time"].max(), color="#eeeeee", lw=0)
        for labelled in truth.anomalies:
            ax.axvspan(labelled.start, labelled.end, color=SCENARIO_COLOURS.get(
                labelled.scenario, "#c44e52"), alpha=0.35, lw=0)
        ax.plot(x, score, color="#4c72b0", lw=0.8, marker="o", ms=2.5)
        out = rows["label"] == "outlier"
        ax.scatter(x[out], score[out], color="#c44e52", zorder=3, s=28, label="anomaly")
        extreme = {e.start for e in truth.extreme_amounts}
        marks = rows["window_start_time"].isin(extreme)
        ax.scatter(x[marks], score[marks], marker="^", color="black", s=30, zorder=4)
        ax.axhline(rows["threshold"].iloc[0], color="#c44e52", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_ylabel(f"score\n{metric}")
    legend = [Patch(color=c, alpha=0.35, label=f"injected: {s}")
              for s, c in SCENARIO_COLOURS.items()]
    legend += [Patch(color="#eeeeee", label="warm-up (not scored)"),
               plt.Line2D([], [], color="#c44e52", ls="--", label="threshold"),
               plt.Line2D([], [], color="#c44e52", marker="o", ls="", label="anomaly found"),
               plt.Line2D([], [], color="black", marker="^", ls="", label="999,999.99 in window")]
    fig.legend(handles=legend, loc="lower center", fontsize=8, ncol=4, frameon=False)
    axes[0].set_title(title)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def quality_table(quality) -> pd.DataFrame:
    """A DetectionQuality as a small table: per scenario found / injected, then the totals."""
    rows = [{"scenario": s, "injected": total, "found": found}
            for s, (found, total) in sorted(quality.by_scenario.items())]
    table = pd.DataFrame(rows).set_index("scenario")
    table.loc["all"] = [quality.injected, quality.found]
    return table


# --- the live chart ---------------------------------------------------------------------------


class LiveChart:
    """Redraws windows and anomalies from a DuckDB warehouse in one notebook output, in place."""

    def __init__(self, warehouse: str, settings):
        self.warehouse = warehouse
        self.settings = settings
        self.handle = None

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        import duckdb

        from txpipe.schema import windows_with_anomalies_sql
        from txpipe.sinks.duckdb import connect

        # The same configuration as the pipeline's writer in this process (DuckDB refuses a
        # read-only connection beside a read-write one); a write in progress: next time.
        try:
            con = connect(self.warehouse, retry_seconds=2)
        except duckdb.Error:
            return pd.DataFrame(), pd.DataFrame()
        try:
            view = con.sql(windows_with_anomalies_sql(
                f'"{self.settings.bigquery_table_id}"',
                f'"{self.settings.bigquery_anomaly_table_id}"')).df()
            found = con.sql(f'SELECT * FROM "{self.settings.bigquery_anomaly_table_id}"').df()
        except duckdb.Error:  # tables not written yet
            return pd.DataFrame(), pd.DataFrame()
        finally:
            con.close()
        return view.sort_values("window_start_time"), found

    def draw(self, title: str = ""):
        import matplotlib.pyplot as plt
        from IPython.display import display

        view, found = self.read()
        fig, ax = plt.subplots(figsize=(10, 3.2))
        if not view.empty:
            ax.bar(view["window_start_time"], view["total_transactions"].astype(int),
                   width=(view["window_end_time"] - view["window_start_time"]).dt.total_seconds()
                   .to_numpy() / 86_400 * 0.8, align="edge", color="#4c72b0")
            hit = view[view["anomalies"] > 0]
            ax.bar(hit["window_start_time"], hit["total_transactions"].astype(int),
                   width=(hit["window_end_time"] - hit["window_start_time"]).dt.total_seconds()
                   .to_numpy() / 86_400 * 0.8, align="edge", color="#c44e52",
                   label="window with an anomaly")
            if not hit.empty:
                ax.legend(loc="upper left")
        ax.set_ylabel("transactions")
        ax.set_title(title or f"{len(view)} windows, {len(found)} anomalies "
                              f"({datetime.now():%H:%M:%S})")
        fig.tight_layout()
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)
        return view, found
