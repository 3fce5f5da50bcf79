"""The script a user would write instead of txpipe: plain pandas, no contract beyond what
fails on its own (json.loads, float amounts, datetime.fromisoformat), drop_duplicates, groupby.

    python -m benchmarks.plain_pandas INPUT OUTPUT [--window-size SECONDS]

Writes one JSON object per window to OUTPUT and prints ``read= valid= unique= dead=``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime

import pandas as pd

from benchmarks import baseline_args


def main(argv: list[str] | None = None) -> int:
    args = baseline_args.parse("plain_pandas", argv)
    ids, amounts, seconds, read = [], [], [], 0
    with open(args.input, "rb") as lines:
        for line in lines:
            read += 1
            try:
                obj = json.loads(line)
                tx_id, amount = obj["transaction_id"], float(obj["amount"])
                moment = datetime.fromisoformat(obj["timestamp"])
            except (ValueError, TypeError, KeyError):
                continue
            if isinstance(tx_id, str) and amount > 0 and moment.tzinfo is not None:
                ids.append(tx_id)
                amounts.append(amount)
                seconds.append(moment.timestamp())
    df = pd.DataFrame({"transaction_id": ids, "amount": amounts,
                       "ts": pd.to_datetime(seconds, unit="s", utc=True)})
    unique = df.drop_duplicates("transaction_id")
    stats = unique.groupby(unique.ts.dt.floor(f"{args.window_size}s")).amount.agg(
        ["count", "sum", "mean", "min", "max"])
    stats.index.name = "window_start_time"
    stats.reset_index().to_json(args.output, orient="records", lines=True, date_format="iso",
                                date_unit="ms", double_precision=15)
    print(f"read={read} valid={len(df)} unique={len(unique)} dead={read - len(df)} "
          f"windows={len(stats)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
