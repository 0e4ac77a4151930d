"""watch/overflow.py: watchdog's overflow warning, and only it, reaches the callback."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from biaswatch.watch.overflow import OVERFLOW_MESSAGE, WATCHDOG_LOGGER, listen_for_overflows

# What watchdog 7.1 logs on IN_Q_OVERFLOW, word for word (inotify_c.py, handle_event).
WATCHDOG_WARNING = "Inotify queue overflowed; filesystem events were lost"


@pytest.fixture(autouse=True)
def _restore_loggers() -> Iterator[None]:
    """Put back the levels and handlers the tests and listen_for_overflows change."""
    watchdog, root = logging.getLogger(WATCHDOG_LOGGER), logging.getLogger()
    levels = (watchdog.level, root.level)
    handlers = list(watchdog.handlers)
    yield
    watchdog.setLevel(levels[0])
    root.setLevel(levels[1])
    watchdog.handlers[:] = handlers


@pytest.fixture(name="calls")
def _calls() -> list[None]:
    """The calls the callback has received, one entry each."""
    return []


class TestListenForOverflows:
    def test_message_matches_watchdog(self) -> None:
        """The message listened for is how watchdog's warning begins."""
        assert WATCHDOG_WARNING.startswith(OVERFLOW_MESSAGE)

    def test_overflow_warning_calls_once(self, calls: list[None]) -> None:
        """watchdog's overflow warning on its inotify_c logger calls the callback once."""
        listen_for_overflows(lambda: calls.append(None))

        logging.getLogger(WATCHDOG_LOGGER).warning(WATCHDOG_WARNING)

        assert calls == [None]

    def test_each_overflow_calls_again(self, calls: list[None]) -> None:
        """Every overflow warning is a call: the service, not the listener, debounces."""
        listen_for_overflows(lambda: calls.append(None))

        for _ in range(3):
            logging.getLogger(WATCHDOG_LOGGER).warning(WATCHDOG_WARNING)

        assert len(calls) == 3

    @pytest.mark.parametrize(
        "message",
        [
            "Unable to rebuild recursive inotify watches below '/data'",
            "Error reading inotify events",
            "inotify queue overflowed",  # not watchdog's capitalisation
        ],
    )
    def test_other_messages_do_not_call(self, calls: list[None], message: str) -> None:
        """Other warnings and errors on watchdog's inotify_c logger do not call."""
        listen_for_overflows(lambda: calls.append(None))

        logging.getLogger(WATCHDOG_LOGGER).warning(message)
        logging.getLogger(WATCHDOG_LOGGER).error(message)

        assert calls == []

    @pytest.mark.parametrize(
        "name",
        [
            # watchdog's emitter logs its own overflow line as it re-adds the watches
            # (inotify.py, on_queue_overflow): the same overflow, not a second one.
            "watchdog.observers.inotify",
            "watchdog",
            "biaswatch.service",
            "",
        ],
    )
    def test_other_loggers_do_not_call(self, calls: list[None], name: str) -> None:
        """The overflow message on any logger but watchdog's inotify_c does not call."""
        listen_for_overflows(lambda: calls.append(None))

        logging.getLogger(name).warning(WATCHDOG_WARNING)

        assert calls == []

    def test_remover_stops_calls(self, calls: list[None]) -> None:
        """After the returned remover runs, overflow warnings no longer call."""
        remove = listen_for_overflows(lambda: calls.append(None))
        logging.getLogger(WATCHDOG_LOGGER).warning(WATCHDOG_WARNING)

        remove()
        logging.getLogger(WATCHDOG_LOGGER).warning(WATCHDOG_WARNING)

        assert calls == [None]

    def test_fires_when_root_logs_only_errors(self, calls: list[None]) -> None:
        """With the root logger at ERROR, the listener lowers watchdog's logger and still hears."""
        logging.getLogger().setLevel(logging.ERROR)
        watchdog = logging.getLogger(WATCHDOG_LOGGER)
        watchdog.setLevel(logging.NOTSET)  # inherits ERROR from the root
        assert watchdog.getEffectiveLevel() == logging.ERROR

        listen_for_overflows(lambda: calls.append(None))
        watchdog.warning(WATCHDOG_WARNING)

        assert watchdog.level == logging.WARNING
        assert calls == [None]
