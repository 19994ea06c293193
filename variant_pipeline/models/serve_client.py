"""The run's side of the ``ray`` model backend: a client with the model object's own methods.

A stage calls ``vlm.generate(images, prompts, ...)`` whether the VLM is in its process or in a
Ray Serve replica; here each call becomes one request to the family's application, which may
serve it in one model call with other runs' requests. The client's methods are those its
registry row serves (``Serving.methods``, ``attributes``, ``adapters``): a family needs no client
code of its own. This module imports ray only (never torch or a model library), so a run worker
stays near Dagster's own memory.

Each call waits at most until the stage's deadline and is cancelled in Serve when it passes. A
replica that dies, or a cluster that is down, raises ``ModelServerError``: a transient failure,
which the stage's retry protocol re-runs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any

from variant_pipeline.config import Settings
from variant_pipeline.models.ray_head import (
    ModelServerError,
    ModelServerUnavailable,
    cluster_address,
    connect,
)
from variant_pipeline.models.registry import Serving, family
from variant_pipeline.models.serving import CallInfo, ModelCall, Reply, app_name


class ModelCallTimeout(ModelServerError, TimeoutError):
    """The call passed the stage's time limit and was cancelled in Serve."""


class ServedModel:
    """One family's application on the cluster; records what each of its calls went through."""

    def __init__(self, family_name: str, settings: Settings, deadline: float | None = None) -> None:
        served = family(family_name).served
        if served is None:
            raise ValueError(f"model family {family_name!r} is not served (its row's `served` is None)")
        self.family = family_name
        self.serving: Serving = served
        self.settings = settings
        self.deadline = deadline  # time.monotonic() by which every call must have returned
        self.calls: list[CallInfo] = []
        self._handle: Any = None
        self._attributes: dict[str, Any] = {}

    def handle(self) -> Any:
        if self._handle is None:
            from ray import serve
            from ray.serve.exceptions import RayServeException

            address = connect(self.settings)
            try:
                self._handle = serve.get_app_handle(app_name(self.family))
            except RayServeException as exc:
                raise ModelServerUnavailable(
                    f"the Ray cluster at {address} serves no {app_name(self.family)} application "
                    f"(`variant-pipeline serve start` deploys it): {exc}") from exc
        return self._handle

    def _remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def _wait(self, response: Any, what: str) -> Any:
        import ray.exceptions

        try:
            return response.result(timeout_s=self._remaining())
        except TimeoutError as exc:
            response.cancel()  # the replica drops it if it has not started; no thread is left here
            raise ModelCallTimeout(f"{self.family}.{what} passed the stage's time limit; cancelled in Serve") from exc
        except ray.exceptions.RayError as exc:
            address = cluster_address(self.settings)
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelServerError(f"{self.family}.{what} on the Ray cluster at {address} failed: "
                                   f"{type(exc).__name__}: {first_line}") from exc

    def call(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        call = ModelCall(method, {k: _plain(v) for k, v in kwargs.items()}, tuple(_plain(a) for a in args))
        reply: Reply = self._wait(self.handle().remote(call), method)
        if reply.error is not None:
            raise reply.error
        if reply.info is not None:
            self.calls.append(reply.info)
        return reply.result

    def attribute(self, name: str) -> Any:
        if name not in self._attributes:
            self._attributes[name] = self._wait(self.handle().attribute.remote(name), name)
        return self._attributes[name]

    def __getattr__(self, name: str) -> Any:
        """The row's served methods, adapters and attributes, as the model object has them."""
        serving = self.__dict__.get("serving")
        if serving is None or name.startswith("_"):
            raise AttributeError(name)
        if name in serving.methods:
            return functools.partial(self.call, name)
        if name in serving.adapters:
            return functools.partial(serving.adapters[name], self)
        if name in serving.attributes:
            return self.attribute(name)
        raise AttributeError(f"the served {self.family} model has no {name!r}")


def _plain(value: Any) -> Any:
    """Sequences travel as lists (a tuple or a view may not pickle, or group, as its list does)."""
    return list(value) if isinstance(value, Sequence) and not isinstance(value, str | bytes | list) else value


def served(family: str, settings: Settings, deadline: float | None = None) -> ServedModel:
    return ServedModel(family, settings, deadline)
