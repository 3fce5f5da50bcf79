"""The baseline: what a user would write instead of txpipe, in plain pandas.

Same work as the pipeline's batch replay: parse each line as JSON, apply the message
contract's checks, drop redelivered transaction ids, cut 30 s event-time windows and compute
count / sum / avg / min / max per window. Money is float here, as a plain script would have it;
the harness compares it with txpipe's exact sums within a float tolerance.

    python -m benchmarks.baseline_pandas INPUT OUTPUT [--window-size SECONDS]

Writes one JSON object per window to OUTPUT and prints ``read= valid= unique= dead=``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from benchmarks import baseline_args

REQUIRED = ["transaction_id", "amount", "timestamp"]
OPTIONAL = ["user_id", "merchant_id", "category", "country", "payment_method", "currency"]
RFC3339 = r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})"


#: The amount as written, to count its digits: a double keeps only 15-17 of them.
AMOUNT_TEXT = r'"amount"\s*:\s*(-?[0-9][0-9.eE+-]*)'


def load(path: str) -> tuple[pd.DataFrame, int]:
    """Rows of the JSON objects in the file (with each line's text), and how many lines were
    not JSON objects."""
    records, texts, bad = [], [], 0
    with open(path, "rb") as lines:
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(obj, dict):
                records.append(obj)
                texts.append(line)
            else:
                bad += 1
    df = pd.DataFrame.from_records(records, columns=REQUIRED + OPTIONAL)
    df["line"] = pd.Series(texts, index=df.index, dtype=object)
    return df, bad


def significant_digits(df: pd.DataFrame) -> pd.Series:
    """Significant digits of each amount as written (trailing zeros of a fraction do not
    count), where the float would hide digits beyond the 15 the contract allows."""
    text = df.line.str.decode("utf-8", "replace").str.extract(AMOUNT_TEXT, expand=False)
    mantissa = text.str.split("[eE]", n=1, regex=True).str[0].str.lstrip("-")
    whole = mantissa.str.split(".", n=1, regex=False)
    digits = whole.str[0].fillna("") + whole.str[1].fillna("").str.rstrip("0")
    return digits.str.lstrip("0").str.len().fillna(0)


def of_types(column: pd.Series, types: tuple[type, ...], inferred: tuple[str, ...]) -> pd.Series:
    """Null or of one of ``types``; a whole-column check first, row by row only when mixed."""
    if infer_dtype(column, skipna=True) in inferred + ("empty",):
        return pd.Series(True, index=column.index)
    return column.isna() | column.map(type).isin(types)


def is_str(column: pd.Series) -> pd.Series:
    return of_types(column, (str,), ("string",))


def validate(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that satisfy the contract, with ``amount`` as float and ``ts`` as UTC time."""
    ok = df[REQUIRED].notna().all(axis=1)
    ok &= is_str(df.transaction_id) & (df.transaction_id.str.strip().str.len() > 0)
    ok &= df.transaction_id.str.len() <= 256
    ok &= of_types(df.amount, (float, int), ("floating", "integer", "mixed-integer-float"))
    amount = pd.to_numeric(df.amount.where(ok), errors="coerce")
    finite = np.isfinite(amount)
    ok &= finite & (amount > 0) & (amount < 1e15) & (amount.round(9) == amount)
    ok &= significant_digits(df) <= 15
    ok &= is_str(df.timestamp) & df.timestamp.str.fullmatch(RFC3339).eq(True)
    # RFC 3339 allows a lower-case t and z; pandas' ISO 8601 reading does not
    ts = pd.to_datetime(df.timestamp.where(ok).str.upper(), utc=True, format="ISO8601",
                        errors="coerce")
    ok &= ts.notna()
    for name in OPTIONAL:
        ok &= is_str(df[name])
    return df.assign(amount=amount, ts=ts)[ok]


def window_stats(valid: pd.DataFrame, window_seconds: int = 30) -> pd.DataFrame:
    unique = valid.drop_duplicates("transaction_id")
    windows = unique.ts.dt.floor(f"{window_seconds}s")
    stats = unique.groupby(windows).amount.agg(["count", "sum", "mean", "min", "max"])
    stats.index.name = "window_start_time"
    return stats.reset_index()


def main(argv: list[str] | None = None) -> int:
    args = baseline_args.parse("baseline_pandas", argv)
    df, bad = load(args.input)
    valid = validate(df)
    stats = window_stats(valid, args.window_size)
    stats.to_json(args.output, orient="records", lines=True, date_format="iso", date_unit="ms",
                  double_precision=15)
    unique = int(stats["count"].sum())
    print(f"read={len(df) + bad} valid={len(valid)} unique={unique} "
          f"dead={len(df) + bad - len(valid)} windows={len(stats)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
