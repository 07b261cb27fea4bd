"""The end-of-session table: one line per race, also across pytest-xdist workers; the JSON
report and the GitHub Actions step summary are written from the same rows."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pytest

from pytest_racecheck import html_report
from pytest_racecheck import report as race_report


class SummaryTable:
    """Collects every race's summary from the test reports (also those pytest-xdist workers
    send) and, at the end of the session, prints one table, writes the JSON report and
    appends the table to the GitHub Actions step summary."""

    def __init__(
        self,
        report_path: Path | None = None,
        github_summary: str | None = None,
        html_path: Path | None = None,
    ) -> None:
        self.rows: list[race_report.Row] = []
        self.report_path = report_path
        self.github_summary = github_summary
        self.html_path = html_path

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Each race's summary rides on the report of the phase it ran in, once.
        self.rows.extend(
            (report.nodeid, _verdict(report), p[1])
            for p in report.user_properties
            if p[0] == "racecheck" and isinstance(p[1], dict)
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        shared = race_report.shared_prefix([nodeid for nodeid, _, _ in self.rows])
        table = race_report.table_rows(self.rows, shared)
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
        terminalreporter.write_sep("=", f"racecheck summary {shared}".rstrip())
        for row in table:
            cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
            terminalreporter.write_line("  ".join([*cells, row[-1]]))
        if self.report_path is not None:
            terminalreporter.write_line(f"racecheck report: {self.report_path}")
        if self.html_path is not None:
            terminalreporter.write_line(f"racecheck html: {self.html_path}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        document = race_report.build(self.rows)
        if self.report_path is not None:
            race_report.write(self.report_path, document)
        if self.html_path is not None:
            race_report.write_text(self.html_path, html_report.render(document))
        if self.github_summary and self.rows:
            with open(self.github_summary, "a", encoding="utf-8") as out:
                out.write(race_report.markdown(self.rows) + "\n")


def _verdict(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfail" if report.skipped else "XPASS"
    return report.outcome


def add_html_extras(report: pytest.TestReport, summaries: list[dict[str, Any]]) -> None:
    """With pytest-html: a failed test's report gets each of its failing races' timelines as
    an extra (pytest-html's documented ``report.extras``), so its page shows the picture."""
    if not report.failed:
        return
    from pytest_html import extras  # only called where pytest-html is active

    found = list(getattr(report, "extras", None) or [])
    for number, summary in enumerate(summaries, 1):
        rnd = summary.get("first_failure")
        if rnd:
            dom_id = f"racecheck-{zlib.crc32(report.nodeid.encode()):x}-{report.when}-{number}"
            found.append(extras.html(html_report.picture_extra(rnd, dom_id)))
    report.extras = found  # type: ignore[attr-defined]
