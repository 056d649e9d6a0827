#!/usr/bin/env python3
"""Prints the end of each failed test's output from nextest's JUnit report.

Usage: failures.py JUNIT_XML [LINES]. .ci/run calls it last, so that the
tail of a CI log (often all a report keeps) says why a test failed.
"""
import sys
import xml.etree.ElementTree as ET


def tail(text, lines):
    kept = (text or "").rstrip("\n").splitlines()
    return kept[-lines:]


def main():
    path = sys.argv[1]
    lines = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        print(f"no JUnit report to read ({path}): {e}")
        return
    for case in root.iter("testcase"):
        failures = [c for c in case if c.tag in ("failure", "error", "flakyFailure", "rerunFailure")]
        if not failures:
            continue
        print(f"== failed: {case.get('classname')} {case.get('name')}")
        for failure in failures:
            message = failure.get("message") or ""
            if message:
                print(f"   {failure.tag}: {message}")
        for stream in ("system-out", "system-err"):
            element = case.find(stream)
            if element is None or not element.text:
                continue
            print(f"-- {stream}, last {lines} lines:")
            for line in tail(element.text, lines):
                print(f"   {line}")


if __name__ == "__main__":
    main()
