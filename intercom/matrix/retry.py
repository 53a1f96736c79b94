"""One retry policy for everything the door asks of its homeserver: logging in, syncing and sending.

A failure is classified once (:meth:`Failure.of`): transient (no answer, a 5xx, a 429) or not (a refusal), and
whether it is about the credentials. Every loop then waits as its :class:`Retry` says: a rate limit's
``retry_after_ms`` when given (up to :data:`MAX_RATE_LIMIT_WAIT`), else a backoff doubling from ``first`` to
``longest``, and gives up only where the policy has a bound (a send: attempts and a time budget).

A door has nobody to restart it, so logging in and syncing never give up: a refusal (a 4xx that is not a rate
limit: a proxy's 403 or 404 while the homeserver is being moved, a wrong password the admin may reset) is retried
too, only slowly (:data:`REFUSED`), while the door shows the fault.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any

import aiohttp
from nio import ErrorResponse

#: The longest wait between attempts: the door is back well within 10 s of the homeserver's return.
BACKOFF_MAX = 4.0
#: Upper bound on honouring a 429's ``retry_after_ms``.
MAX_RATE_LIMIT_WAIT = 30.0

#: What a request can fail with that retrying may cure.
TRANSIENT_EXCEPTIONS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


async def request_json(client: Any, method: str, path: str, *, body: Any = None,
                       timeout: float | None = None) -> tuple[int, Any]:
    """One authenticated request through nio's HTTP session, for endpoints nio has no wrapper for (its raw
    ``send()`` adds no Authorization header). Returns the status and the JSON body (None when it is not JSON);
    raises what :data:`TRANSIENT_EXCEPTIONS` names when there is no answer."""
    headers = {"Authorization": f"Bearer {client.access_token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    response = await client.send(method, path, data=None if body is None else json.dumps(body), headers=headers,
                                 timeout=timeout)
    try:
        return response.status, await response.json(content_type=None)
    except ValueError:
        return response.status, None
    finally:
        response.release()


class Failure:
    """Why a request failed, and whether retrying can help."""

    def __init__(self, what: str, *, transient: bool, retry_after: float | None = None, auth: bool = False):
        self.what, self.transient, self.retry_after, self.auth = what, transient, retry_after, auth

    def __str__(self) -> str:
        return self.what

    @classmethod
    def of(cls, result: Any) -> Failure:
        """Classify an exception or nio's error response."""
        if isinstance(result, BaseException):
            return cls(f"{type(result).__name__}: {result}" if str(result) else type(result).__name__, transient=True)
        if isinstance(result, ErrorResponse):
            status = getattr(getattr(result, "transport_response", None), "status", None)
            text = f"HTTP {status} {result}" if status else str(result)
            if status == 429 or result.status_code == "M_LIMIT_EXCEEDED":
                return cls(text, transient=True, retry_after=(result.retry_after_ms or 1000) / 1000)
            if status == 401 or result.status_code in ("M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"):
                return cls(text, transient=False, auth=True)
            return cls(text, transient=status is None or status >= 500)
        return cls(f"unexpected answer {type(result).__name__}", transient=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """How one kind of request is retried."""

    first: float  #: the first wait, doubling after each further failure up to ``longest``
    longest: float = BACKOFF_MAX  #: the longest wait
    free: int = 0  #: failures retried at once before waiting starts
    jitter: bool = True  #: wait 90-100 % of the backoff, so that many doors do not return in step
    attempts: int | None = None  #: give up after this many attempts (None: never)
    budget: float | None = None  #: give up when the next wait would pass this many seconds (None: never)

    def delay(self, failures: int, failure: Failure | None = None) -> float:
        """The wait after failure number ``failures`` (1-based)."""
        if failure is not None and failure.retry_after is not None:
            return min(failure.retry_after, MAX_RATE_LIMIT_WAIT)
        if failures <= self.free:
            return 0.0
        wait = min(self.longest, self.first * 2 ** min(failures - self.free - 1, 32))
        return wait * random.uniform(0.9, 1.0) if self.jitter else wait

    def gives_up(self, attempts: int, spent: float, delay: float) -> bool:
        """Whether to stop after ``attempts`` attempts, ``spent`` seconds, with ``delay`` the next wait."""
        return ((self.attempts is not None and attempts >= self.attempts)
                or (self.budget is not None and spent + delay > self.budget))


#: Start-up (log in, the first sync): until it works, waiting 0.5 s, doubling to 4 s.
START = Retry(first=0.5)
#: The sync loop: one lost request (a long-poll cut by a proxy, a stale pooled connection) at once, then as START.
SYNC = Retry(first=0.5, free=1)
#: Logging in or syncing while the homeserver refuses (not a network failure): from 30 s, doubling to 10 min.
REFUSED = Retry(first=30.0, longest=600.0)
#: Making a resident's room (beside the sync loop): from 2 s, doubling to 5 min, until it works; a 429's
#: ``retry_after_ms`` is honoured. A refusal is retried on the same curve: the homeserver may have made the room
#: before refusing (an invite it could not deliver), and the door leaves such an empty room after the next sync.
MAKE_ROOM = Retry(first=2.0, longest=300.0)
#: A send: at most 10 attempts within 20 s, waiting 0.25 s, doubling, with one transaction ID throughout.
SEND = Retry(first=0.25, jitter=False, attempts=10, budget=20.0)


def backoff(failures: int) -> float:
    """The sync loop's wait after failure number ``failures``: 0 for the first, then doubling."""
    return SYNC.delay(failures)


async def sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)  # one place, so tests can stand in for the clock
