"""img_gen on the tiny diffusers pipelines: seeds, sizes, and exact product-pixel preservation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from variant_pipeline.models.image_gen import ImageGenerator
from variant_pipeline.work.img_gen import (
    ImgGenRequest,
    Placement,
    compose_product,
    generate_variants,
    variant_seed,
)


@pytest.fixture(scope="module")
def generator(tiny_models) -> ImageGenerator:
    return ImageGenerator.create(str(tiny_models["text2img_model"]), str(tiny_models["inpaint_model"]), "cpu", "float32")


def _product_rgba() -> Image.Image:
    """A textured product with a transparent border (a cut-out)."""
    rng = np.random.RandomState(7)
    px = np.zeros((40, 30, 4), np.uint8)
    px[..., :3] = rng.randint(0, 256, (40, 30, 3))
    px[5:35, 4:26, 3] = 255
    px[2:5, 4:26, 3] = 60  # faint fringe: below the threshold, painted over
    return Image.fromarray(px, "RGBA")


def test_variant_seed():
    assert [variant_seed(50, 50, o) for o in (1, 2, 3)] == [50, 100, 150]
    with pytest.raises(ValueError):
        variant_seed(50, 50, 0)


def test_text_to_image_seeds_distinct_and_reproducible(generator):
    req = ImgGenRequest("job-1", "a bowl of kimchi stew on a wooden table", n_variants=3,
                        width=64, height=48, steps=2)
    first = generate_variants(generator, req)
    assert [v.seed for v in first] == [50, 100, 150] and [v.creation_order for v in first] == [1, 2, 3]
    assert all(v.mode == "text2img" and v.image.size == (64, 48) for v in first)
    assert first[0].prompt == req.prompt and "watermark" in first[0].negative_prompt
    assert first[1].metadata() == {"creation_order": 2, "seed": 100, "mode": "text2img", "prompt": req.prompt,
                                   "negative_prompt": req.negative_prompt, "product_box": None}
    arrays = [np.asarray(v.image) for v in first]
    assert not np.array_equal(arrays[0], arrays[1]) and not np.array_equal(arrays[1], arrays[2])
    again = generate_variants(generator, req)
    assert all(np.array_equal(a, np.asarray(v.image)) for a, v in zip(arrays, again, strict=True))
    # A later variant generated alone (creation_order 2) gets the same seed as in the batch.
    second = generate_variants(generator, ImgGenRequest("job-1", req.prompt, n_variants=1, first_order=2,
                                                         width=64, height=48, steps=2))[0]
    assert second.seed == 100
    assert np.abs(np.asarray(second.image).astype(int) - arrays[1].astype(int)).max() <= 2  # batch numerics


def test_inpaint_keeps_alpha_product_pixels_exactly(generator):
    product = _product_rgba()
    req = ImgGenRequest("job-2", "kimchi stew", product_image=product, n_variants=2, width=64, height=64,
                        steps=2, placement=Placement(center_x=0.5, center_y=0.5, size=None))
    variants = generate_variants(generator, req)
    src = np.asarray(product)
    keep = src[..., 3] >= 128
    for v in variants:
        assert v.mode == "inpaint" and v.image.size == (64, 64) and "kimchi stew" in v.prompt
        out = np.asarray(v.image)
        # Product pasted at its own size, centred: (64-30)/2 = 17, (64-40)/2 = 12.
        region = out[12:52, 17:47]
        assert np.array_equal(region[keep], src[..., :3][keep])
        mask = np.asarray(v.product_mask) > 0
        assert mask.sum() == keep.sum()
        assert v.product_box.to_px(64, 64) == (17 + 4, 12 + 5, 17 + 26, 12 + 35)
    # The background was generated: it differs between the two seeds.
    bg = ~(np.asarray(variants[0].product_mask) > 0)
    assert not np.array_equal(np.asarray(variants[0].image)[bg], np.asarray(variants[1].image)[bg])


def test_inpaint_opaque_photo_with_scaling_and_non_square_canvas(generator):
    rng = np.random.RandomState(3)
    photo = Image.fromarray(rng.randint(0, 256, (50, 100, 3), dtype=np.uint8))  # 100x50, no alpha
    placement = Placement(center_x=0.4, center_y=0.6, size=0.5)
    req = ImgGenRequest("job-3", "fried chicken", product_image=photo, n_variants=1, width=96, height=64,
                        steps=2, placement=placement)
    v = generate_variants(generator, req)[0]
    canvas, keep, box = compose_product(photo, 96, 64, placement)
    keep_px = np.asarray(keep) > 0
    assert keep_px.sum() == 48 * 24  # long side = 0.5 * 96
    assert np.array_equal(np.asarray(v.image)[keep_px], np.asarray(canvas)[keep_px])
    assert v.product_box == box and v.image.size == (96, 64)


def test_bad_requests(generator):
    with pytest.raises(ValueError, match="empty prompt"):
        generate_variants(generator, ImgGenRequest("j", "  "))
    with pytest.raises(ValueError, match="does not fit"):
        compose_product(Image.new("RGB", (80, 80)), 64, 64, Placement(size=None))
    with pytest.raises(ValueError, match="placement size"):
        Placement(size=1.5)
