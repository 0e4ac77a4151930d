"""Notices from the real service to a loopback HTTP receiver and a command (issue 15, item 7)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from test_faults import wait_until_dead

from biaswatch import __version__
from biaswatch.system.faults import CRASH_AT
from biaswatch.testing.helpers import run_cli, wait_until, write_config, write_frames
from biaswatch.testing.service import catalog_rows, running_service

PUBLISHED = ["master.published", "latest.moved", "latest.moved"]
REJECTED = ["master.verdict", "latest.moved", "latest.moved"]


class Receiver:
    """What the loopback HTTP receiver got: each POST's headers and JSON body, in order."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures  # answer 500 this many times before 200
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.answered_500 = 0
        self.hang = 0.0  # seconds each POST waits before it is read: a hung receiver
        self.asked = 0  # POSTs begun
        self.lock = threading.Lock()
        self.url = ""


@contextmanager
def receiving(failures: int = 0) -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 in a thread of the test, recording POSTs."""
    receiver = Receiver(failures)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            with receiver.lock:
                receiver.asked += 1
            time.sleep(receiver.hang)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with receiver.lock:
                if receiver.failures > 0:
                    receiver.failures -= 1
                    receiver.answered_500 += 1
                    status = 500
                else:
                    receiver.bodies.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                    status = 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/notices"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def appending_command(tmp_path: Path) -> tuple[list[str], Path]:
    """A command appending its stdin and BIASWATCH_NOTICE as one line to a file; (argv, file)."""
    out = tmp_path / "command-notices.jsonl"
    script = tmp_path / "append.py"
    script.write_text(
        "import json, os, sys\n"
        "body = json.loads(sys.stdin.read())\n"
        "body['env_event'] = os.environ['BIASWATCH_NOTICE']\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    f.write(json.dumps(body) + '\\n')\n",
        encoding="utf-8",
    )
    return [sys.executable, str(script), str(out)], out


def command_lines(out: Path) -> list[dict[str, Any]]:
    """The notices the command received, in order."""
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def notify_config(
    tmp_path: Path,
    url: str,
    command: list[str] | None = None,
    max_tries: int = 8,
    timeout: float = 5,
) -> Path:
    """The harness config with a [notify] table (quick retries) and 3 frames a set."""
    table = f"[notify]\nurl = {json.dumps(url)}\nretry_seconds = 0.2\ntimeout_seconds = {timeout}\n"
    table += f"max_tries = {max_tries}\n"
    if command is not None:
        table += f"command = {json.dumps(command)}\n"
    return write_config(tmp_path, extra=table, expected_frames=3)


def events_of(notices: list[dict[str, Any]]) -> list[str]:
    """The event names of received notices."""
    return [n["event"] for n in notices]


def assert_once_each_in_order(notices: list[dict[str, Any]]) -> None:
    """Notice ids are unique and increasing: none twice, none out of order."""
    ids = [n["notice"] for n in notices]
    assert ids == sorted(set(ids)), ids


def test_publish_and_reject_reach_the_url_and_the_command_in_order_once(tmp_path: Path) -> None:
    """A published master, then `biaswatch reject`, reach both targets in order, once each."""
    command, out = appending_command(tmp_path)
    with receiving() as receiver:
        config = notify_config(tmp_path, receiver.url, command)
        with running_service(config) as service:
            write_frames(config, "cryo", 3, interval=0.0)
            (published,) = service.wait_event("master.published", timeout=120)
            wait_until(lambda: len(receiver.bodies) >= 3 and len(command_lines(out)) >= 3, 30)
            run_cli("reject", "--config", config, published["path"], "--why", "test", check=True)
            wait_until(lambda: len(receiver.bodies) >= 6 and len(command_lines(out)) >= 6, 30)
            service.wait_event("notice.sent", count=12, timeout=10)
            assert service.stop()[0] == 0
        notices, lines = receiver.bodies, command_lines(out)
    assert events_of(notices) == events_of(lines) == PUBLISHED + REJECTED
    assert_once_each_in_order(notices)
    assert [n["notice"] for n in lines] == [n["notice"] for n in notices]
    assert [line["env_event"] for line in lines] == PUBLISHED + REJECTED
    first, verdict, removed = notices[0], notices[3], notices[4]
    assert (first["camera"], first["state"], first["path"]) == (
        "cryo",
        "accepted",
        published["path"],
    )
    assert (verdict["previous_state"], verdict["state"], verdict["reason"]) == (
        "accepted",
        "rejected",
        "test",
    )
    assert removed["path"] is None and removed["previous"] == published["path"]
    headers = receiver.headers[0]
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"biaswatch/{__version__}"
    assert headers["Idempotency-Key"] == str(first["notice"])


def test_a_sigkill_between_publish_and_send_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """Killed right after the master's commit, then restarted: each notice arrives exactly once.

    The latest.moved notices come from the start-up repair of the links the crash left.
    """
    command, out = appending_command(tmp_path)
    with receiving() as receiver:
        config = notify_config(tmp_path, receiver.url, command)
        with running_service(config, env={CRASH_AT: "after_commit"}) as service:
            write_frames(config, "cryo", 3, interval=0.0)
            assert wait_until_dead(service) == -signal.SIGKILL
        with running_service(config) as service:
            wait_until(lambda: len(receiver.bodies) >= 3 and len(command_lines(out)) >= 3, 60)
            service.wait_event("master.latest_repaired", timeout=10)
            service.wait_event("notice.sent", count=6, timeout=10)
            assert service.stop()[0] == 0
        notices, lines = receiver.bodies, command_lines(out)
    assert events_of(notices) == events_of(lines) == PUBLISHED
    assert_once_each_in_order(notices)
    assert [n["notice"] for n in notices] == [n["notice"] for n in lines] == [1, 2, 3]


def test_a_receiver_answering_500_gets_the_notice_once_after_retries(tmp_path: Path) -> None:
    """Three 500 answers, then 200: the notice is retried with back-off and arrives once."""
    with receiving(failures=3) as receiver:
        config = notify_config(tmp_path, receiver.url)
        with running_service(config) as service:
            write_frames(config, "cryo", 3, interval=0.0)
            wait_until(lambda: len(receiver.bodies) >= 3, 120, "three notices received")
            retries = service.wait_event("notice.retry", count=3, timeout=10)
            assert service.stop()[0] == 0
        notices = receiver.bodies
    assert receiver.answered_500 == 3
    assert events_of(notices) == PUBLISHED
    assert_once_each_in_order(notices)
    assert [r["tries"] for r in retries[:3]] == [1, 2, 3]
    assert all("HTTP 500" in r["error"] for r in retries[:3])


def test_an_alarm_reaches_the_alerts_url(tmp_path: Path) -> None:
    """[alerts] url: an alarm is POSTed to the loopback receiver as JSON."""
    with receiving() as receiver:
        extra = f"[alerts]\nurl = {json.dumps(receiver.url)}\n"
        config = write_config(
            tmp_path, extra=extra, service={"combine_retry_seconds": 0.2}, expected_frames=3
        )
        (tmp_path / "masters").mkdir()
        (tmp_path / "masters" / "cryo").write_text("not a directory")  # every try fails
        with running_service(config) as service:
            write_frames(config, "cryo", 3, interval=0.0)
            service.wait_event("alarm.set_failed", timeout=120)
            service.wait_event("alert.sent", timeout=30)
            assert service.stop()[0] == 0
        alarms = receiver.bodies
    assert [a["alarm"] for a in alarms] == ["alarm.set_failed"]
    assert alarms[0]["camera"] == "cryo"
    assert receiver.headers[0]["X-Biaswatch-Event"] == "alarm.set_failed"


def test_notices_wait_in_the_catalog_while_the_service_is_stopped(tmp_path: Path) -> None:
    """Pending notices survive a stop; a reject made meanwhile is sent, after them, at start."""
    with receiving(failures=10**6) as receiver:
        config = notify_config(tmp_path, receiver.url, max_tries=100)
        with running_service(config) as service:
            write_frames(config, "cryo", 3, interval=0.0)
            (published,) = service.wait_event("master.published", timeout=120)
            service.wait_event("notice.retry", count=2, timeout=30)
            status, seconds = service.stop()
        assert status == 0 and seconds < 10
        rows = catalog_rows(config, "SELECT url_state, url_tries, url_next FROM notices")
        assert [r["url_state"] for r in rows] == ["pending"] * 3
        assert rows[0]["url_tries"] >= 2 and rows[0]["url_next"] is not None
        run_cli("reject", "--config", config, published["path"], "--why", "test", check=True)
        with receiver.lock:
            receiver.failures = 0
        with running_service(config) as service:
            wait_until(lambda: len(receiver.bodies) >= 6, 60, "six notices received")
            service.wait_event("notice.sent", count=6, timeout=10)
            assert service.stop()[0] == 0
        notices = receiver.bodies
    assert events_of(notices) == PUBLISHED + REJECTED
    assert_once_each_in_order(notices)


def test_a_hung_receiver_delays_the_stop_by_at_most_timeout_seconds(tmp_path: Path) -> None:
    """A receiver that never answers holds the stop at most timeout_seconds; all stay pending."""
    with receiving() as receiver:
        receiver.hang = 60.0
        config = notify_config(tmp_path, receiver.url, timeout=2)
        with running_service(config) as service:
            write_frames(config, "cryo", 3, interval=0.0)
            service.wait_event("master.published", timeout=120)
            wait_until(lambda: receiver.asked >= 1, 30, "the first POST begun")
            status, seconds = service.stop(timeout=20)
        assert status == 0
        # timeout_seconds, plus the service's own stop (its fork server, the catalog).
        assert seconds < 2 + 5, seconds
        rows = catalog_rows(config, "SELECT url_state FROM notices")
        assert [r["url_state"] for r in rows] == ["pending"] * 3
