"""The retry policy: how many attempts a stage gets and how long each retry waits, from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from variant_pipeline.config import Settings


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_s: float

    def delay_after(self, attempt: int) -> float:
        """Exponential backoff: backoff_s after the first failure, doubling after each further one."""
        return self.backoff_s * (2 ** max(0, attempt - 1))


def retry_policy(settings: Settings) -> RetryPolicy:
    """VP_MAX_ATTEMPTS and VP_RETRY_BACKOFF_S."""
    return RetryPolicy(max_attempts=settings.max_attempts, backoff_s=settings.retry_backoff_s)


def failure_message(reason: str, attempt: int, policy: RetryPolicy, will_retry: bool) -> str:
    """The error stored on the row: the reason, and whether (and when) another attempt follows."""
    if will_retry:
        return (f"attempt {attempt} of {policy.max_attempts} failed: {reason} "
                f"(retrying in {policy.delay_after(attempt):g} s)")
    if attempt > 1:
        return f"failed after {attempt} attempts: {reason}"
    return reason
