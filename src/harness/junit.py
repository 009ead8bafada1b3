"""A `compare.diff` as a JUnit XML report: CI systems show drifted turns as failed tests."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from . import compare
from .results import SORT_KEY, concat


def junit_xml(changes: pd.DataFrame, current: pd.DataFrame, baseline: pd.DataFrame,
              suite: str = "harness diff") -> bytes:
    """One test case per (conversation, turn, provider) of either run; changed ones fail."""
    rows = concat([current[SORT_KEY], baseline[SORT_KEY]]).drop_duplicates()
    rows = rows.sort_values(SORT_KEY, kind="stable")
    failed = {(c, int(t), p): i for i, (c, t, p) in
              enumerate(zip(changes["conversation_id"], changes["turn"], changes["provider"],
                            strict=True))}
    root = ET.Element("testsuites")
    element = ET.SubElement(root, "testsuite", name=suite, tests=str(len(rows)),
                            failures=str(len(failed)), errors="0", skipped="0")
    for cid, turn, provider in zip(rows["conversation_id"], rows["turn"], rows["provider"],
                                   strict=True):
        case = ET.SubElement(element, "testcase", classname=f"{provider}.{cid}",
                             name=f"turn {int(turn)}")
        i = failed.get((cid, int(turn), provider))
        if i is not None:
            change = changes.iloc[[i]]
            failure = ET.SubElement(case, "failure", message=f"changed: {change['change'].iloc[0]}",
                                    type="drift")
            failure.text = compare.describe(change, width=2000)
    root.set("tests", element.get("tests", "0"))
    root.set("failures", element.get("failures", "0"))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(changes: pd.DataFrame, current: pd.DataFrame, baseline: pd.DataFrame,
                path: str | Path, suite: str = "harness diff") -> Path:
    """Write `junit_xml` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(junit_xml(changes, current, baseline, suite))
    return path
