"""Every registered model family serves on both backends, and a family is one row.

The ``ray`` backend runs on a real local Ray head (loopback) serving the tiny bundle. A toy family,
defined here (its row, its loader, its tiny builder, nothing else), is registered for one test
and serves on both backends: in the run's process and from its own Ray Serve deployment.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.fixtures.ray import replica_stats_by_family
from variant_pipeline.config import Settings, load_settings
from variant_pipeline.models import registry
from variant_pipeline.models.serve_client import ServedModel
from variant_pipeline.resources import ModelResource, default_resources
from variant_pipeline.work.text_model import ChatMessage

# --- the toy family: a row, a loader and a tiny builder ---------------------------------------


class ToyModel:
    """Appends a suffix to each text; named after the words in its tiny 'weights' file."""

    def __init__(self, path: str) -> None:
        self.name = f"toy:{Path(path).read_text()}"

    def echo(self, texts: list[str], suffix: str = "!") -> list[str]:
        return [f"{text}{suffix}" for text in texts]


def load_toy(settings: Settings) -> ToyModel:
    return ToyModel(TOY.setting(settings))


def build_tiny_toy(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("tiny")
    return path


TOY = registry.ModelFamily(
    name="toy",
    description="A test family: echoes texts.",
    location=lambda s: TOY.setting(s),
    load=load_toy,
    tiny=(registry.TinyModel("toy_model", "toy/words.txt", build_tiny_toy),),
    kinds=frozenset({"python"}),
    accelerator=False,
    served=registry.Serving(methods={"echo": registry.BatchedMethod(items=("texts",))}, attributes=("name",),
                            batch=(4, 0.05)),
)


@pytest.fixture
def toy_family(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The toy row registered for this test, its tiny model built where its setting points."""
    monkeypatch.setattr(registry, "FAMILIES", (*registry.FAMILIES, TOY))
    assert TOY.build_tiny is not None
    built = TOY.build_tiny(tmp_path)["toy_model"]
    monkeypatch.setenv("VP_TOY_MODEL", str(built))  # its location setting, declared by the row alone
    return built


def test_a_toy_family_is_one_row_and_serves_on_both_backends(toy_family: Path, use_ray_backend,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from ray import serve

    from variant_pipeline.models.serving import app_name, deploy

    monkeypatch.setenv("VP_MODEL_BACKEND", "local")
    local = default_resources()["toy"].get()
    assert isinstance(local, ToyModel)
    assert local.echo(["a"]) == ["a!"] and local.name == "toy:tiny"
    assert ModelResource(family="toy").location() == str(toy_family)

    monkeypatch.setenv("VP_MODEL_BACKEND", "ray")
    monkeypatch.setenv("VP_SERVE_BATCH", "toy=2:0.1")  # the served families' options know it too
    assert deploy(load_settings(), families=("toy",)) == {"toy": app_name("toy")}
    try:
        served = default_resources()["toy"].get()
        assert isinstance(served, ServedModel)  # the generic client, from the row
        assert served.echo(["a", "b"]) == ["a!", "b!"]
        assert served.echo(("c",), suffix="?") == ["c?"]  # positional and keyword, as the model takes them
        assert served.echo([]) == []
        assert served.name == "toy:tiny"  # an attribute the row serves, read from the replica
        assert [c.items for c in served.calls] == [2, 1]  # the replica's record of each call
        [stats] = replica_stats_by_family()["toy"]
        assert (stats["max_batch_size"], stats["batch_wait_s"]) == (2, 0.1)
        with pytest.raises(AttributeError, match="the served toy model has no 'shout'"):
            served.shout(["a"])
    finally:
        serve.delete(app_name("toy"))


# --- every registered family on the ray backend -------------------------------------------------

_IMAGE = Image.new("RGB", (64, 64), (200, 120, 40))
_MASK = Image.new("L", (64, 64), 255)

# One small call per family with the arguments the stages pass (the replicas load only what the
# pipeline itself loads: the image generator's inpainting pipeline). A family without one here
# is still checked for its deployment, its methods and its attributes.
SAMPLE_CALLS: dict[str, tuple[Callable[[Any], list[Any]], int]] = {
    "vlm": (lambda m: m.generate([_IMAGE], ["Describe the image."], max_new_tokens=2), 1),
    "detector": (lambda m: m.predict([_IMAGE, _IMAGE], 0.25, 0.45), 2),
    "image_generator": (lambda m: m.inpaint([_IMAGE], [_MASK], ["a cup"], None, [1], 1), 1),
    "text_model": (lambda m: [m.complete([ChatMessage("user", "Hi")], temperature=0.0, max_tokens=2)], 1),
}


def test_every_served_family_is_deployed_and_answers_on_the_ray_backend(use_ray_backend) -> None:
    from ray import serve

    from variant_pipeline.models.serving import app_name, served_families

    settings = load_settings()
    wanted = served_families(settings)
    assert set(wanted) == {f.name for f in registry.FAMILIES if f.served is not None}  # the local text LM
    apps = serve.status().applications
    assert set(replica_stats_by_family()) == set(wanted)
    for name in wanted:
        fam = registry.family(name)
        assert fam.served is not None
        assert apps[app_name(name)].status.value == "RUNNING", name
        client = ModelResource(family=name).get()
        assert isinstance(client, ServedModel), name
        for method in (*fam.served.methods, *fam.served.adapters):
            assert callable(getattr(client, method)), (name, method)
        for attribute in fam.served.attributes:
            assert getattr(client, attribute) is not None, (name, attribute)
        if name in SAMPLE_CALLS:
            call, items = SAMPLE_CALLS[name]
            assert len(call(client)) == items, name
            assert client.calls and client.calls[-1].replica_loads <= 1, name
