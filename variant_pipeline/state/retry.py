"""The retry policy: how many attempts a stage gets and how long each retry waits, from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from variant_pipeline.config import Settings


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_s: float

    def delay_after(self, attempt: int, outcome: str = "failed") -> float:
        """Exponential backoff: backoff_s after the first failure, doubling after each further one.

        A lost attempt (its worker killed or frozen, its database session gone) says nothing about
        the stage, so its retry is due at once: the recovery sensor that records the loss restarts
        it in the same tick. It still counts as an attempt, so a stage that kills its worker every
        time (out of memory, say) fails after ``max_attempts``.
        """
        if outcome == "lost":
            return 0.0
        return self.backoff_s * (2 ** max(0, attempt - 1))


def retry_policy(settings: Settings) -> RetryPolicy:
    """VP_MAX_ATTEMPTS and VP_RETRY_BACKOFF_S."""
    return RetryPolicy(max_attempts=settings.max_attempts, backoff_s=settings.retry_backoff_s)


@dataclass(frozen=True)
class AfterFailure:
    """What a failed (or lost) attempt leads to: another attempt after ``delay_s``, or ``failed``."""

    will_retry: bool
    delay_s: float  # 0 when the row fails, or when the retry is due at once
    message: str  # the error stored on the row


def after_failure(policy: RetryPolicy, attempt: int, reason: str, *, retryable: bool,
                  outcome: str = "failed") -> AfterFailure:
    """Attempt ``attempt`` ended ``outcome`` with ``reason``: retry while attempts remain and the
    failure may be retried (bad input may not), else fail the row. The stored error says which,
    and when the next attempt is due."""
    if retryable and attempt < policy.max_attempts:
        delay = policy.delay_after(attempt, outcome)
        return AfterFailure(True, delay, f"attempt {attempt} of {policy.max_attempts} failed: {reason} "
                                         + (f"(retrying in {delay:g} s)" if delay else "(retrying now)"))
    return AfterFailure(False, 0.0, f"failed after {attempt} attempts: {reason}" if attempt > 1 else reason)
