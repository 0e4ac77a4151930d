"""POST a JSON body to a URL: the notices' and alarms' ``url`` target (stdlib urllib only).

One request, no retry here (the caller keeps the schedule), a bounded read of the
answer. Any status from 200 to 299 is success; anything else, a refused connection or
no answer in ``timeout`` raises :class:`PostFailed` with one line saying why. urllib's
``timeout`` bounds each socket operation (connect, each read), not the whole exchange
(docs.python.org/3/library/urllib.request.html#urllib.request.urlopen); the body is a
few hundred bytes, so the bound is close to the total.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping

# The most of an answer's body read (and thrown away): a receiver's "ok", or the start
# of an error page to quote in the log.
_ANSWER_BYTES = 4096
# How much of an error answer the log line quotes.
_QUOTED = 200


class PostFailed(Exception):
    """The POST did not get a 2xx answer; the message says why, in one line."""


def post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
    """POST ``body`` (JSON) to ``url`` with ``headers``; returns the 2xx status.

    Raises:
        PostFailed: another status, no connection, or no answer within ``timeout``.
    """
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            answer.read(_ANSWER_BYTES)
            status = int(answer.status)
    except urllib.error.HTTPError as exc:  # a status urllib does not follow: 4xx, 5xx
        text = exc.read(_ANSWER_BYTES).decode("utf-8", errors="replace").strip()
        quoted = f": {text[:_QUOTED]}" if text else ""
        raise PostFailed(f"HTTP {exc.code} {exc.reason}{quoted}") from None
    except urllib.error.URLError as exc:
        raise PostFailed(f"no connection: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:  # a read timed out, the connection reset
        raise PostFailed(f"no answer: {exc!r}") from None
    if not 200 <= status < 300:  # 2xx: HTTP's success class (RFC 9110, section 15.3)
        raise PostFailed(f"HTTP {status}: not a success")
    return status
