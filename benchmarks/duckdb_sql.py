"""The same work in DuckDB SQL: read_json, try_cast, a row_number() dedupe, time_bucket.

    python -m benchmarks.duckdb_sql INPUT OUTPUT [--window-size SECONDS]

Amounts as DECIMAL(38, 9) (exact, as txpipe's), timestamps as TIMESTAMPTZ; lines that are not
JSON objects, or whose fields do not cast, are left out. Writes one JSON object per window to
OUTPUT and prints ``read= valid= unique= dead=``.
"""

from __future__ import annotations

import sys

import duckdb

from benchmarks import baseline_args

QUERY = """
CREATE TEMP TABLE valid AS
SELECT transaction_id, try_cast(amount AS DECIMAL(38, 9)) AS amount,
       try_cast("timestamp" AS TIMESTAMPTZ) AS ts
FROM read_json(?, format = 'newline_delimited', ignore_errors = true,
               columns = {transaction_id: 'VARCHAR', amount: 'VARCHAR', "timestamp": 'VARCHAR'});
DELETE FROM valid WHERE transaction_id IS NULL OR amount IS NULL OR amount <= 0 OR ts IS NULL;
CREATE TEMP TABLE stats AS
SELECT time_bucket(to_seconds(?::BIGINT), ts, TIMESTAMPTZ '1970-01-01 00:00:00+00')
           AS window_start_time,
       count(*) AS count, sum(amount) AS sum, avg(amount) AS mean,
       min(amount) AS min, max(amount) AS max
FROM (SELECT *, row_number() OVER (PARTITION BY transaction_id) AS copy FROM valid)
WHERE copy = 1
GROUP BY window_start_time ORDER BY window_start_time;
"""


def main(argv: list[str] | None = None) -> int:
    args = baseline_args.parse("duckdb_sql", argv)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    statements = [s for s in QUERY.split(";") if s.strip()]
    con.execute(statements[0], [args.input])
    con.execute(statements[1])
    con.execute(statements[2], [args.window_size])
    con.execute(f"COPY stats TO '{args.output}' (FORMAT json)")
    with open(args.input, "rb") as f:
        read = sum(1 for _ in f)
    valid = con.execute("SELECT count(*) FROM valid").fetchone()[0]
    unique, windows = con.execute("SELECT sum(count), count(*) FROM stats").fetchone()
    print(f"read={read} valid={valid} unique={int(unique or 0)} dead={read - valid} "
          f"windows={windows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
