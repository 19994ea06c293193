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


def failure_message(reason: str, attempt: int, policy: RetryPolicy, will_retry: bool,
                    outcome: str = "failed") -> str:
    """The error stored on the row: the reason, and whether (and when) another attempt follows."""
    if will_retry:
        delay = policy.delay_after(attempt, outcome)
        return (f"attempt {attempt} of {policy.max_attempts} failed: {reason} "
                + (f"(retrying in {delay:g} s)" if delay else "(retrying now)"))
    if attempt > 1:
        return f"failed after {attempt} attempts: {reason}"
    return reason
