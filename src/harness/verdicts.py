"""Judge verdict tables on disk: `harness score --pairwise A,B --out F.EXT` writes
`F.pairwise-A-B.EXT` (the columns of `harness.judge.PAIR_COLUMNS`); found, read and checked here.
"""

from __future__ import annotations

import glob
import io
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from .results import check_format

REQUIRED = ("conversation_id", "turn", "provider_a", "provider_b", "winner")
OUTCOMES = ("tie", "inconsistent", "error")  # besides provider_a and provider_b


def beside(results_path: str | Path) -> list[Path]:
    """The verdict tables `harness score --pairwise ... --out results_path` wrote beside it."""
    path = Path(results_path)
    pattern = glob.escape(path.stem) + ".pairwise-*" + glob.escape(path.suffix)
    return sorted(p for p in path.parent.glob(pattern) if p.is_file())


def columns(path: str | Path) -> list[str]:
    """The column names of a table file, read without reading its rows."""
    path = Path(path)
    suffix = check_format(path)
    try:
        if suffix == ".parquet":
            return list(pq.read_schema(path).names)
        with path.open(encoding="utf-8") as f:
            first = f.readline()
        if suffix == ".csv":
            return pd.read_csv(io.StringIO(first), nrows=0).columns.tolist()
        record = json.loads(first) if first.strip() else {}
        return list(record) if isinstance(record, dict) else []
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except Exception as exc:  # pyarrow's, pandas' and json's errors have no common base
        raise ValueError(f"{path}: not a table: {str(exc).splitlines()[0]}") from None


def is_verdict_table(path: str | Path) -> bool:
    """Whether `path` holds judge verdicts (its columns), not results."""
    return set(REQUIRED) <= set(columns(path))


def load(path: str | Path) -> pd.DataFrame:
    """A verdict table, checked: the required columns, and every winner one of provider_a,
    provider_b, tie, inconsistent or error (else one ValueError naming the file and row)."""
    path = Path(path)
    names = columns(path)
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ValueError(f"{path}: not a judge verdict table: no column {missing[0]!r} (expected "
                         f"{', '.join(REQUIRED)}, as harness score --pairwise A,B --out writes)")
    suffix = path.suffix.lower()
    strings = {c: "string" for c in names if c != "turn"}
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        else:
            frame = pd.read_json(path, orient="records", lines=True, dtype=False)
        frame = frame.astype(strings)
        frame["turn"] = pd.to_numeric(frame["turn"], errors="raise").astype("Int64")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a judge verdict table: {str(exc).splitlines()[0]}") from None
    named = frame[["conversation_id", "provider_a", "provider_b"]].notna().all(axis=1)
    if not named.all():
        raise ValueError(f"{path}: row {_first_false(named)}: conversation_id, provider_a and "
                         "provider_b must be filled in")
    winner = frame["winner"]
    valid = (winner.eq(frame["provider_a"]) | winner.eq(frame["provider_b"])
             | winner.isin(OUTCOMES)).fillna(False)
    if not valid.all():
        row = frame.iloc[_first_false(valid) - 1]
        raise ValueError(f"{path}: row {_first_false(valid)}: winner {_text(row['winner'])} is "
                         f"not provider_a {_text(row['provider_a'])}, provider_b "
                         f"{_text(row['provider_b'])}, tie, inconsistent or error")
    return frame


def _first_false(flags: pd.Series) -> int:
    """The 1-based row number of the first False."""
    return int((~flags.to_numpy(dtype=bool)).argmax()) + 1


def _text(value: object) -> str:
    return "missing" if pd.isna(value) else repr(str(value))


def judges(frame: pd.DataFrame) -> str:
    """The judge(s) named in a verdict table, or "" when it names none."""
    if "judge" not in frame.columns:
        return ""
    return ", ".join(str(j) for j in frame["judge"].dropna().unique())
