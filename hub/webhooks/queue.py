"""The webhook queue contract and its in-process implementation.

Delivery is at least once: ``lease`` hands a due job to one worker for a while; a job neither acked
nor retried in that time (its worker died) becomes due again for any worker.

A *held* job (``WebhookJob.held``) is queued with a due time in the future and can be withdrawn with
``cancel`` until a worker first leases it: that is how ``channel_vacated`` and ``member_removed`` wait
out Pusher's 3 s window in the durable queue, so the node that decided them may die meanwhile.

A job given up after the retry window is buried: kept as a dead letter for a configured time (at most
MAX_DEAD_LETTERS per app, the oldest going first), listed newest first, and replayable into the queue.
The queue also keeps each app's last MAX_FAILURES failed attempts, with the receiver's answer.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace

import msgpack

HOLD_SEPARATOR = "\x00"


@dataclass(frozen=True, slots=True)
class WebhookJob:
    """One webhook request to make: where, what, and since when it has been tried.

    A held job's id is ``<hold>\\x00<random>``: the queue finds a hold's jobs by that prefix, without
    an index of its own to keep in step.
    """

    id: str
    app_id: str
    url: str
    body: bytes
    created_at: float
    attempts: int = 0

    @staticmethod
    def new(app_id: str, url: str, body: bytes, created_at: float) -> WebhookJob:
        """A fresh job with a random id."""
        return WebhookJob(secrets.token_hex(8), app_id, url, body, created_at)

    @staticmethod
    def held(hold: str, app_id: str, url: str, body: bytes, created_at: float) -> WebhookJob:
        """A fresh job that ``WebhookQueue.cancel(hold)`` withdraws until it is first leased."""
        if "\x00" in hold:
            raise ValueError("a hold name cannot contain NUL")
        return WebhookJob(f"{hold}{HOLD_SEPARATOR}{secrets.token_hex(8)}", app_id, url, body, created_at)

    @property
    def hold(self) -> str | None:
        """The hold this job was queued under, or None."""
        hold, separator, _ = self.id.partition(HOLD_SEPARATOR)
        return hold if separator else None

    def next_attempt(self) -> WebhookJob:
        """The same job after one more failed attempt."""
        return replace(self, attempts=self.attempts + 1)

    def pack(self) -> bytes:
        """msgpack bytes for a durable queue."""
        packed: bytes = msgpack.packb(
            [self.id, self.app_id, self.url, self.body, self.created_at, self.attempts], use_bin_type=True
        )
        return packed

    @staticmethod
    def unpack(raw: bytes) -> WebhookJob:
        """Decode ``pack``'s bytes."""
        job_id, app_id, url, body, created_at, attempts = msgpack.unpackb(raw, raw=False)
        return WebhookJob(job_id, app_id, url, body, created_at, attempts)


MAX_DEAD_LETTERS = 10_000
MAX_FAILURES = 50


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A job given up after the retry window, its last failure, and until when it is kept."""

    job: WebhookJob
    error: str
    died_at: float
    expires_at: float

    def pack(self) -> bytes:
        """msgpack bytes for a durable store."""
        packed: bytes = msgpack.packb([self.job.pack(), self.error, self.died_at, self.expires_at], use_bin_type=True)
        return packed

    @staticmethod
    def unpack(raw: bytes) -> DeadLetter:
        """Decode ``pack``'s bytes."""
        job, error, died_at, expires_at = msgpack.unpackb(raw, raw=False)
        return DeadLetter(WebhookJob.unpack(job), error, died_at, expires_at)


@dataclass(frozen=True, slots=True)
class WebhookFailure:
    """One failed delivery attempt and what the receiver answered (or why there was no answer)."""

    app_id: str
    job_id: str
    url: str
    at: float
    attempts: int
    error: str
    gave_up: bool

    def pack(self) -> bytes:
        """msgpack bytes for a durable store."""
        fields = [self.app_id, self.job_id, self.url, self.at, self.attempts, self.error, self.gave_up]
        packed: bytes = msgpack.packb(fields, use_bin_type=True)
        return packed

    @staticmethod
    def unpack(raw: bytes) -> WebhookFailure:
        """Decode ``pack``'s bytes."""
        return WebhookFailure(*msgpack.unpackb(raw, raw=False))


Refresh = Callable[[WebhookJob], WebhookJob]
"""Turns a dead letter's job into the fresh job a replay queues."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Jobs waiting (due or not) and the age of the oldest one."""

    depth: int
    oldest_age: float


class WebhookQueue(ABC):
    """Where webhook jobs wait until a worker delivers them."""

    @abstractmethod
    async def push(self, job: WebhookJob, due: float) -> None:
        """Add a job, to be delivered at ``due`` (Unix seconds)."""

    @abstractmethod
    async def lease(self, now: float, limit: int, lease_seconds: float) -> list[WebhookJob]:
        """Up to ``limit`` due jobs, each hidden from other workers for ``lease_seconds``."""

    @abstractmethod
    async def ack(self, job: WebhookJob) -> None:
        """Remove a job for good (delivered, or given up)."""

    @abstractmethod
    async def retry(self, job: WebhookJob, due: float) -> None:
        """Store the job's new attempt count and make it due again at ``due``."""

    @abstractmethod
    async def cancel(self, hold: str) -> int:
        """Withdraw every job queued under ``hold`` that no worker has leased yet; return how many.

        Atomic with ``lease``: a held job is either cancelled or delivered, never both.
        """

    @abstractmethod
    async def stats(self, now: float) -> QueueStats:
        """Depth and oldest age, for metrics."""

    @abstractmethod
    async def expedite(self, url: str, now: float) -> int:
        """Make every waiting (not leased) job for ``url`` due now; return how many.

        Called when a failing receiver answers again, so its backlog need not wait out each job's
        backoff.
        """

    @abstractmethod
    async def app_stats(self, app_id: str, now: float) -> QueueStats:
        """Depth and oldest age of one app's waiting jobs (a held job counts once it has been tried)."""

    @abstractmethod
    async def bury(self, job: WebhookJob, error: str, now: float, keep_seconds: float) -> None:
        """Remove a job given up after the retry window, keeping it as a dead letter for ``keep_seconds``.

        ``keep_seconds`` <= 0 removes it like ``ack``. Past MAX_DEAD_LETTERS per app the oldest go.
        """

    @abstractmethod
    async def dead_letters(self, app_id: str, now: float, limit: int) -> tuple[list[DeadLetter], int]:
        """Up to ``limit`` of the app's unexpired dead letters, newest first, and how many there are."""

    @abstractmethod
    async def replay(self, app_id: str, job_id: str, refresh: Refresh, now: float) -> bool:
        """Replace a dead letter by ``refresh(its job)``, queued due ``now``; False if there is none.

        Atomic: of concurrent replays of one dead letter exactly one returns True.
        """

    @abstractmethod
    async def record_failure(self, failure: WebhookFailure) -> None:
        """Remember a failed attempt (the app's last MAX_FAILURES are kept)."""

    @abstractmethod
    async def failures(self, app_id: str, limit: int) -> list[WebhookFailure]:
        """The app's most recent failed attempts, newest first."""


class MemoryWebhookQueue(WebhookQueue):
    """In-process queue for ``hub serve``: survives nothing but the process, which is all it serves."""

    def __init__(self) -> None:
        self._jobs: dict[str, tuple[WebhookJob, float]] = {}
        self._leased: set[str] = set()
        self._held: dict[str, set[str]] = {}
        self._dead: dict[str, dict[str, DeadLetter]] = {}  # app id -> job id -> letter, oldest first
        self._failures: dict[str, list[WebhookFailure]] = {}

    async def push(self, job: WebhookJob, due: float) -> None:
        self._jobs[job.id] = (job, due)
        if job.hold is not None:
            self._held.setdefault(job.hold, set()).add(job.id)

    async def lease(self, now: float, limit: int, lease_seconds: float) -> list[WebhookJob]:
        due = sorted((d, j.id) for j, d in self._jobs.values() if d <= now)[:limit]
        leased = []
        for _, job_id in due:
            job, _ = self._jobs[job_id]
            self._jobs[job_id] = (job, now + lease_seconds)
            self._leased.add(job_id)
            self._unhold(job)
            leased.append(job)
        return leased

    def _unhold(self, job: WebhookJob) -> None:
        if job.hold is not None and job.hold in self._held:
            self._held[job.hold].discard(job.id)
            if not self._held[job.hold]:
                del self._held[job.hold]

    async def cancel(self, hold: str) -> int:
        ids = self._held.pop(hold, set())
        cancelled = [job_id for job_id in ids if job_id not in self._leased and job_id in self._jobs]
        for job_id in cancelled:
            del self._jobs[job_id]
        return len(cancelled)

    async def ack(self, job: WebhookJob) -> None:
        self._jobs.pop(job.id, None)
        self._leased.discard(job.id)

    async def retry(self, job: WebhookJob, due: float) -> None:
        self._jobs[job.id] = (job, due)
        self._leased.discard(job.id)

    async def expedite(self, url: str, now: float) -> int:
        waiting = [j for j, due in self._jobs.values() if j.url == url and due > now and j.id not in self._leased]
        for job in waiting:
            self._jobs[job.id] = (job, now)
        return len(waiting)

    async def stats(self, now: float) -> QueueStats:
        if not self._jobs:
            return QueueStats(0, 0.0)
        oldest = min(job.created_at for job, _ in self._jobs.values())
        return QueueStats(len(self._jobs), max(0.0, now - oldest))

    async def app_stats(self, app_id: str, now: float) -> QueueStats:
        created = [
            job.created_at
            for job, _ in self._jobs.values()
            if job.app_id == app_id and (job.hold is None or job.attempts > 0)
        ]
        if not created:
            return QueueStats(0, 0.0)
        return QueueStats(len(created), max(0.0, now - min(created)))

    async def bury(self, job: WebhookJob, error: str, now: float, keep_seconds: float) -> None:
        await self.ack(job)
        if keep_seconds <= 0:
            return
        letters = self._dead.setdefault(job.app_id, {})
        letters.pop(job.id, None)
        letters[job.id] = DeadLetter(job, error, now, now + keep_seconds)
        while len(letters) > MAX_DEAD_LETTERS:
            del letters[next(iter(letters))]

    def _live_letters(self, app_id: str, now: float) -> dict[str, DeadLetter]:
        letters = self._dead.get(app_id, {})
        for job_id in [i for i, letter in letters.items() if letter.expires_at <= now]:
            del letters[job_id]
        return letters

    async def dead_letters(self, app_id: str, now: float, limit: int) -> tuple[list[DeadLetter], int]:
        letters = self._live_letters(app_id, now)
        newest = sorted(letters.values(), key=lambda letter: letter.died_at, reverse=True)
        return newest[:limit], len(letters)

    async def replay(self, app_id: str, job_id: str, refresh: Refresh, now: float) -> bool:
        letter = self._live_letters(app_id, now).pop(job_id, None)
        if letter is None:
            return False
        await self.push(refresh(letter.job), now)
        return True

    async def record_failure(self, failure: WebhookFailure) -> None:
        kept = self._failures.setdefault(failure.app_id, [])
        kept.insert(0, failure)
        del kept[MAX_FAILURES:]

    async def failures(self, app_id: str, limit: int) -> list[WebhookFailure]:
        return self._failures.get(app_id, [])[:limit]
