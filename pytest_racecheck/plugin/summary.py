"""The end-of-session table: one line per race, also across pytest-xdist workers; the JSON
report and the GitHub Actions step summary are written from the same rows."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import pytest

from pytest_racecheck.results import html as html_report
from pytest_racecheck.results import report as race_report


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
        self.html_written = False
        self.report_written = False
        self.problems: list[str] = []
        """Writes that failed at the end, one line each: shown, never raised (a report that
        cannot be written must not hide the summary or turn a passing run into a crash)."""

    def add_interrupted(self, test_id: str, summary: dict[str, Any]) -> None:
        """A race that Ctrl-C ended: its test gets no report from pytest, so the race fixture
        hands it here (in the process that prints the table; an xdist worker has none)."""
        self.rows.append((test_id, "interrupted", summary))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # Each race's summary rides on the report of the phase it ran in, once.
        self.rows.extend(
            (report.nodeid, _verdict(report), p[1])
            for p in report.user_properties
            if p[0] == "racecheck" and isinstance(p[1], dict)
        )

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.rows:
            self._table(terminalreporter)
        for problem in self.problems:
            terminalreporter.write_line(f"racecheck: {problem}", yellow=True, bold=True)

    def _table(self, terminalreporter: Any) -> None:
        shared = race_report.shared_prefix([nodeid for nodeid, _, _ in self.rows])
        table = race_report.table_rows(self.rows, shared)
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
        terminalreporter.write_sep("=", f"racecheck summary {shared}".rstrip())
        for row in table:
            cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
            terminalreporter.write_line("  ".join([*cells, row[-1]]))
        for test_id, verdict, race in self.rows:  # what the failing rounds' statements show
            named = (race.get("first_failure") or {}).get("anomaly") or {}
            if verdict != "passed" and named.get("name") not in (None, "unclassified"):
                where = test_id[len(shared) :]
                line = f"anomaly in {where}: {named['name']} ({named['adya']})"
                if named.get("hermitage"):
                    line += f"; Hermitage {named['hermitage']}, prevented by "
                    line += named["prevented_by"]
                terminalreporter.write_line(line)
        for test_id, verdict, race in self.rows:  # refusals, apart from wrong results
            refused = (race.get("isolation") or {}).get("refused") or {}
            if verdict != "passed" and refused:
                kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(refused.items()))
                terminalreporter.write_line(
                    f"refused by the database in {test_id[len(shared) :]}: {kinds}: the code "
                    "needs a retry loop"
                )
        if self.report_path is not None and self.report_written:
            terminalreporter.write_line(f"racecheck report: {self.report_path}")
        if self.html_path is not None and self.html_written:
            terminalreporter.write_line(f"racecheck html: {self.html_path}")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # Written here, shown by pytest_terminal_summary, which pytest calls after this.
        document = race_report.build(self.rows)
        if self.report_path is not None:
            try:
                race_report.write(self.report_path, document)
                self.report_written = True
            except OSError as exc:
                self.problems.append(f"could not write the report {self.report_path}: {_why(exc)}")
        if self.html_path is not None:
            try:
                race_report.write_text(self.html_path, html_report.render(document))
                self.html_written = True
            except OSError as exc:
                self.problems.append(f"could not write the page {self.html_path}: {_why(exc)}")
        if self.github_summary and self.rows:
            try:
                with open(self.github_summary, "a", encoding="utf-8") as out:
                    out.write(race_report.markdown(self.rows) + "\n")
            except OSError as exc:
                self.problems.append(
                    f"could not append to the GitHub step summary {self.github_summary}: "
                    f"{_why(exc)}"
                )


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) if exc.filename is None else f"{exc.strerror}: {exc.filename}"


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
