"""The model layer implements the Protocols that stage work declares.

Stage work never imports ``models/`` (the layer rules say so); it names what it needs as a
Protocol beside the work. No type checker runs in the test command, so this test compares each
model class with its Protocol member by member: present, and a method accepts every argument
the Protocol's callers may pass.
"""

from __future__ import annotations

import inspect

import pytest

from variant_pipeline.models.detector import Detector
from variant_pipeline.models.image_gen import ImageGenerator
from variant_pipeline.models.ocr import TesseractOcr
from variant_pipeline.models.text import LocalCausalLMBackend, OpenAIChatBackend
from variant_pipeline.models.vlm import VlmBackend
from variant_pipeline.work.detect import ObjectDetector
from variant_pipeline.work.img_gen import DiffusionModel
from variant_pipeline.work.ocr import OcrEngine
from variant_pipeline.work.text_model import TextModel
from variant_pipeline.work.vlm import VlmGenerate

IMPLEMENTATIONS = [
    (ObjectDetector, Detector),
    (DiffusionModel, ImageGenerator),
    (VlmGenerate, VlmBackend),
    (TextModel, OpenAIChatBackend),
    (TextModel, LocalCausalLMBackend),
    (OcrEngine, TesseractOcr),
]


def protocol_members(protocol: type) -> list[str]:
    declared = {name for name in vars(protocol) if not name.startswith("_")}
    return sorted(declared | set(getattr(protocol, "__annotations__", {})))


def accepts(implementation: inspect.Signature, protocol: inspect.Signature) -> list[str]:
    """What a caller of the Protocol's method could pass that the implementation refuses."""
    have = implementation.parameters
    problems = []
    for name, wanted in protocol.parameters.items():
        if name == "self":
            continue
        got = have.get(name)
        if got is None:
            problems.append(f"no parameter {name!r}")
        elif got.kind != wanted.kind:
            problems.append(f"{name!r} is {got.kind.description}, the Protocol has {wanted.kind.description}")
        elif wanted.default is not inspect.Parameter.empty and got.default is inspect.Parameter.empty:
            problems.append(f"{name!r} has no default")
    for name, extra in have.items():
        if (name != "self" and name not in protocol.parameters and extra.default is inspect.Parameter.empty
                and extra.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)):
            problems.append(f"{name!r} is required but the Protocol's callers never pass it")
    return problems


@pytest.mark.parametrize(("protocol", "implementation"), IMPLEMENTATIONS,
                         ids=[f"{i.__name__}-{p.__name__}" for p, i in IMPLEMENTATIONS])
def test_each_model_class_implements_the_protocol_its_stage_work_declares(protocol: type,
                                                                          implementation: type) -> None:
    for name in protocol_members(protocol):
        wanted = inspect.getattr_static(protocol, name, None)
        got = inspect.getattr_static(implementation, name, None)
        assert got is not None, f"{implementation.__name__} has no {name!r} ({protocol.__name__} needs it)"
        if inspect.isfunction(wanted):
            assert inspect.isfunction(got), f"{implementation.__name__}.{name} is not a method"
            problems = accepts(inspect.signature(got), inspect.signature(wanted))
            assert not problems, f"{implementation.__name__}.{name}: {'; '.join(problems)}"
        elif isinstance(wanted, property):
            assert not inspect.isfunction(got), f"{implementation.__name__}.{name} must be read, not called"
