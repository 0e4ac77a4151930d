"""The nightly report: one static HTML page per night, readable with no server.

Per camera: the night's masters with their verdicts, quality and previews,
the frames rejected with their reasons, the combine attempts lost or failed (a
cluster worker that died, a failed try), and level and read noise of the
camera's masters over the last 60 nights. Images are embedded (data: URIs),
so the page can be mailed or copied anywhere whole. ``biaswatch report``
(cli/report.py) writes it on demand; the service writes
``state_dir/reports/<night>.html`` after each camera's night-end check, on a
thread of its own.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import os
from pathlib import Path

import structlog
from matplotlib.dates import DateFormatter, DayLocator
from matplotlib.figure import Figure

from biaswatch import __version__
from biaswatch.catalog.open import open_reading
from biaswatch.catalog.rows import MasterRow
from biaswatch.catalog.store import Catalog
from biaswatch.config import Config
from biaswatch.names import shown
from biaswatch.rules.qc import MasterQC

log = structlog.get_logger(__name__)

TREND_NIGHTS = 60  # the "last 60 nights": two months of nightly biases

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: left; }
.rejected { color: #a00; } .accepted { color: #070; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def report_path(config: Config, night: dt.date) -> Path:
    """Where the service keeps a night's report."""
    return config.service.state_dir / "reports" / f"{night.isoformat()}.html"


def write_night_report(config: Config, night: dt.date, now: dt.datetime) -> None:
    """The service's report of a night into state_dir/reports; a failure is only logged."""
    try:
        path = write_report(config, night, report_path(config, night), now)
    except Exception:  # a report is a convenience: it never stops anything
        log.exception("report.failed", night=night.isoformat())
        return
    log.info("report.written", night=night.isoformat(), path=str(path))


def write_report(config: Config, night: dt.date, out: Path, now: dt.datetime) -> Path:
    """Build the night's page from the catalog and write it (whole, or not at all)."""
    database = config.service.state_dir / "catalog.sqlite"
    # Read-only: the report command may run as a user who may not write the state
    # directory, and must not create a catalog where there is none.
    catalog = open_reading(database)
    if catalog is None:
        raise FileNotFoundError(f"no catalog yet at {database}")
    try:
        sections = [_camera(catalog, camera.name, night) for camera in config.cameras]
    finally:
        catalog.close()
    stamp = now.strftime("%Y-%m-%d %H:%M UTC")
    page = (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>biaswatch, night {night}</title><style>{_STYLE}</style></head><body>"
        f"<h1>biaswatch: night {night}</h1>"
        f"<p>Written {stamp} by biaswatch {html.escape(__version__)}.</p>"
        + "".join(sections)
        + "</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _camera(catalog: Catalog, camera: str, night: dt.date) -> str:
    masters = catalog.masters(camera)
    tonight = [m for m in masters if m.night == night.isoformat()]
    since = (night - dt.timedelta(days=TREND_NIGHTS)).isoformat()
    trend = [m for m in masters if since < m.night <= night.isoformat()]
    rejected = catalog.rejected_in_night(camera, night.isoformat())
    parts = [f"<h2>Camera {html.escape(camera)}</h2>"]
    if tonight:
        parts.append(_masters_table(tonight))
        parts += [_preview(m) for m in tonight]
    else:
        parts.append("<p class='rejected'>No master this night.</p>")
    parts.append(f"<h3>Rejected frames ({len(rejected)})</h3>")
    if rejected:
        rows = "".join(
            f"<tr><td>{html.escape(shown(Path(p).name))}</td><td>{html.escape(r)}</td></tr>"
            for p, r in rejected
        )
        parts.append(f"<table><tr><th>file</th><th>reason</th></tr>{rows}</table>")
    parts.append(_attempts(catalog, camera, night))
    parts.append(f"<h3>Last {TREND_NIGHTS} nights</h3>")
    parts.append(_trend(camera, trend) if trend else "<p>No masters yet.</p>")
    return "".join(parts)


def _attempts(catalog: Catalog, camera: str, night: dt.date) -> str:
    """Combine runs that gave no master (a worker lost, a failed try), when there were any."""
    trouble = [
        a
        for a in catalog.attempts(night=night.isoformat())
        if a["camera"] == camera and a["outcome"] in ("lost", "failed")
    ]
    if not trouble:
        return ""
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(a[key] or ''))}</td>"
            for key in ("set_id", "task", "worker", "outcome", "reason")
        )
        + "</tr>"
        for a in trouble
    )
    head = "".join(f"<th>{h}</th>" for h in ("set", "task", "worker", "outcome", "reason"))
    return (
        f"<h3>Combine attempts lost or failed ({len(trouble)})</h3>"
        f"<table><tr>{head}</tr>{rows}</table>"
    )


def _masters_table(masters: list[MasterRow]) -> str:
    head = (
        "<tr><th>master</th><th>verdict</th><th>frames</th><th>level</th><th>read noise</th>"
        "<th>noise (expected)</th><th>hot columns</th><th>why</th></tr>"
    )
    rows = []
    for m in masters:
        q = m.qc
        numbers = (
            "<td></td>" * 4
            if q is None
            else f"<td>{q.level:.2f}</td><td>{q.read_noise:.2f}</td>"
            f"<td>{q.noise:.2f} ({q.expected_noise:.2f})</td><td>{q.hot_columns}</td>"
        )
        why = html.escape(f"{m.judgement or ''}" + (f" ({m.judged_by})" if m.judged_by else ""))
        rows.append(
            f"<tr><td>{html.escape(Path(m.path).name)}</td>"
            f"<td class='{m.state}'>{m.state}</td><td>{m.ncombine}</td>{numbers}<td>{why}</td></tr>"
        )
        rows += [_segment_row(name, qc) for name, qc in m.segments]
    return f"<table>{head}{''.join(rows)}</table>"


def _segment_row(name: str, q: MasterQC) -> str:
    """One segment (image HDU or amplifier) of the master above, indented under it."""
    return (
        f"<tr class='segment'><td>&nbsp;&nbsp;segment {html.escape(name)}</td><td></td><td></td>"
        f"<td>{q.level:.2f}</td><td>{q.read_noise:.2f}</td>"
        f"<td>{q.noise:.2f} ({q.expected_noise:.2f})</td><td>{q.hot_columns}</td><td></td></tr>"
    )


def _preview(master: MasterRow) -> str:
    png = Path(master.path).with_suffix(".png")
    if not png.exists():
        return f"<p>No preview for {html.escape(png.name)}.</p>"
    return _img(png.read_bytes(), f"preview of {Path(master.path).name}")


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'></p>"


def _trend(camera: str, masters: list[MasterRow]) -> str:
    """Level and read noise per master, accepted in black, rejected in red."""
    figure = Figure(figsize=(10.0, 5.0))
    level_ax, noise_ax = figure.subplots(2, 1, sharex=True)
    for state, colour in (("accepted", "black"), ("rejected", "red")):
        chosen = [m for m in masters if m.state == state and m.qc is not None]
        nights = [dt.date.fromisoformat(m.night) for m in chosen]
        level_ax.plot(nights, [m.qc.level for m in chosen if m.qc], "o", color=colour, label=state)
        noise_ax.plot(nights, [m.qc.read_noise for m in chosen if m.qc], "o", color=colour)
    level_ax.set_ylabel("level (ADU)")
    noise_ax.set_ylabel("read noise (ADU)")
    level_ax.legend(loc="best", fontsize="small")
    level_ax.set_title(f"{camera}: masters of the last {TREND_NIGHTS} nights")
    # Whole nights on the axis, at most ~10 labels, whatever the span.
    span = (dt.date.fromisoformat(masters[-1].night) - dt.date.fromisoformat(masters[0].night)).days
    # matplotlib.dates is not typed: its two constructors are called as documented.
    locator = DayLocator(interval=max(1, span // 10 + 1))  # type: ignore[no-untyped-call]
    noise_ax.xaxis.set_major_locator(locator)
    noise_ax.xaxis.set_major_formatter(DateFormatter("%Y-%m-%d"))  # type: ignore[no-untyped-call]
    figure.autofmt_xdate()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return _img(buffer.getvalue(), f"{camera} level and read noise trend")
