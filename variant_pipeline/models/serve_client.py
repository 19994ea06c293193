"""The run's side of the ``ray`` model backend: clients with the model objects' own methods.

A stage calls ``vlm.generate(images, prompts, ...)`` whether the VLM is in its process or in a
Ray Serve replica; here each call becomes one request to the family's application, which may
serve it in one model call with other runs' requests. This module imports ray, PIL and numpy only
(never torch or a model library), so a run worker stays near Dagster's own memory.

Each call waits at most until the stage's deadline and is cancelled in Serve when it passes. A
replica that dies, or a cluster that is down, raises ``ModelServerError``: a transient failure,
which the stage's retry protocol re-runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from PIL import Image

from variant_pipeline.config import Settings
from variant_pipeline.models.ray_head import (
    ModelServerError,
    ModelServerUnavailable,
    cluster_address,
    connect,
)
from variant_pipeline.models.serving import CallInfo, ModelCall, Reply, app_name
from variant_pipeline.work.text_model import ChatMessage, ChatRequest, Completion
from variant_pipeline.work.types import RawDetection


class ModelCallTimeout(ModelServerError, TimeoutError):
    """The call passed the stage's time limit and was cancelled in Serve."""


class ServedModel:
    """One family's application on the cluster; records what each of its calls went through."""

    def __init__(self, family: str, settings: Settings, deadline: float | None = None) -> None:
        self.family = family
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

    def call(self, method: str, **kwargs: Any) -> list[Any]:
        reply: Reply = self._wait(self.handle().remote(ModelCall(method, kwargs)), method)
        if reply.error is not None:
            raise reply.error
        self.calls.append(reply.info)
        return reply.result

    def attribute(self, name: str) -> Any:
        if name not in self._attributes:
            self._attributes[name] = self._wait(self.handle().attribute.remote(name), name)
        return self._attributes[name]


class ServedVlm(ServedModel):
    def generate(self, images: Sequence[Image.Image], prompts: Sequence[str], *, do_sample: bool = False,
                 temperature: float = 0.7, max_new_tokens: int = 256, min_new_tokens: int = 0,
                 seed: int | Sequence[int] | None = None) -> list[str]:
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        if not images:
            return []
        return self.call("generate", images=list(images), prompts=list(prompts), do_sample=do_sample,
                         temperature=temperature, max_new_tokens=max_new_tokens,
                         min_new_tokens=min_new_tokens, seed=seed if isinstance(seed, int | None) else list(seed))


class ServedDetector(ServedModel):
    @property
    def class_names(self) -> dict[int, str]:
        return self.attribute("class_names")

    def predict(self, images: Sequence[Image.Image], conf: float = 0.25, iou: float = 0.45, *,
                imgsz: int | None = None, max_det: int = 300) -> list[list[RawDetection]]:
        if not images:
            return []
        return self.call("predict", images=list(images), conf=conf, iou=iou, imgsz=imgsz, max_det=max_det)


class ServedImageGenerator(ServedModel):
    def text_to_image(self, prompts: Sequence[str], negative: Sequence[str] | str | None, seeds: Sequence[int],
                      width: int, height: int, steps: int, *, guidance_scale: float = 7.5) -> list[Image.Image]:
        if not prompts:
            return []
        return self.call("text_to_image", prompts=list(prompts), negative=_listed(negative), seeds=list(seeds),
                         width=width, height=height, steps=steps, guidance_scale=guidance_scale)

    def inpaint(self, images: Sequence[Image.Image], masks: Sequence[Image.Image], prompts: Sequence[str],
                negative: Sequence[str] | str | None, seeds: Sequence[int], steps: int, *,
                guidance_scale: float = 7.5, strength: float = 1.0) -> list[Image.Image]:
        if not images:
            return []
        return self.call("inpaint", images=list(images), masks=list(masks), prompts=list(prompts),
                         negative=_listed(negative), seeds=list(seeds), steps=steps,
                         guidance_scale=guidance_scale, strength=strength)


class ServedTextModel(ServedModel):
    @property
    def name(self) -> str:
        return self.attribute("name")

    @property
    def provider(self) -> str:
        return self.attribute("provider")

    def complete(self, messages: Sequence[ChatMessage], *, temperature: float, max_tokens: int,
                 json_mode: bool = False, seed: int | None = None) -> Completion:
        return self.complete_batch([ChatRequest(tuple(messages), temperature, max_tokens, json_mode, seed)])[0]

    def complete_batch(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        if not requests:
            return []
        return self.call("complete_batch", requests=list(requests))


def _listed(value: Sequence[str] | str | None) -> list[str] | str | None:
    return value if isinstance(value, str | None) else list(value)


CLIENTS: dict[str, type[ServedModel]] = {
    "vlm": ServedVlm, "detector": ServedDetector, "image_generator": ServedImageGenerator,
    "text_model": ServedTextModel,
}


def served(family: str, settings: Settings, deadline: float | None = None) -> ServedModel:
    return CLIENTS[family](family, settings, deadline)
