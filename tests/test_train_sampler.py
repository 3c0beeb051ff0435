"""The crop sampler: determinism, the share of positives, exclusion of labelled pixels, crops centred on
the requested pixel (a planted marker) and augmentation that keeps the centre."""
from __future__ import annotations

import pytest
import torch

from streampick.train.data import NEGATIVE, POSITIVE, UNLABELLED
from streampick.train.sampler import CropSampler

WIDTH = 15
C = WIDTH // 2


def images_and_labels(shapes=((40, 50), (36, 36)), seed=0):
    g = torch.Generator().manual_seed(seed)
    images = [torch.randn(*s, generator=g) for s in shapes]
    labels = [torch.zeros(s, dtype=torch.uint8) for s in shapes]
    labels[0][10:14, 10:14] = POSITIVE
    labels[1][5:8, 20:23] = POSITIVE
    labels[1][30:33, 2:5] = NEGATIVE
    return images, labels


def test_same_seed_same_batches_other_seed_other_batches():
    images, labels = images_and_labels()
    a, b, c = (CropSampler(images, labels, WIDTH, seed=s) for s in (3, 3, 4))
    for _ in range(3):
        x, y, z = a.sample(64), b.sample(64), c.sample(64)
        assert torch.equal(x.crops, y.crops) and torch.equal(x.kind, y.kind) and torch.equal(x.centres, y.centres)
    assert not torch.equal(x.centres, z.centres)


def test_positive_share_and_unlabelled_draws_avoid_labelled_pixels():
    images, labels = images_and_labels()
    sampler = CropSampler(images, labels, WIDTH, positive_fraction=1 / 16, negative_fraction=0.05, seed=1)
    batch = sampler.sample(8192)
    share = (batch.kind == POSITIVE).float().mean().item()
    assert share == pytest.approx(1 / 16, abs=0.012)  # ~4.5 standard deviations
    assert (batch.kind == NEGATIVE).float().mean().item() == pytest.approx(0.05, abs=0.012)
    m, y, x = batch.centres.T
    at_centre = torch.stack([labels[i][j, k] for i, j, k in zip(m.tolist(), y.tolist(), x.tolist())])
    assert (at_centre[batch.kind == POSITIVE] == POSITIVE).all()
    assert (at_centre[batch.kind == NEGATIVE] == NEGATIVE).all()
    assert (at_centre[batch.kind == UNLABELLED] == UNLABELLED).all()
    # Micrographs are drawn uniformly, whatever their size; every pixel stays inside its own micrograph.
    unl = batch.kind == UNLABELLED
    assert (m[unl] == 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
    assert (y[m == 1] < 36).all() and (x[m == 1] < 36).all()


def test_without_exclusion_unlabelled_draws_may_land_on_labels():
    images = [torch.zeros(20, 20)]
    labels = [torch.full((20, 20), POSITIVE, dtype=torch.uint8)]
    labels[0][:10] = UNLABELLED  # half the micrograph is labelled
    batch = CropSampler(images, labels, WIDTH, positive_fraction=0.0, exclude_labelled=False).sample(2000)
    on_label = (labels[0][batch.centres[:, 1], batch.centres[:, 2]] == POSITIVE).float().mean().item()
    assert on_label == pytest.approx(0.5, abs=0.05)
    assert (batch.kind == UNLABELLED).all()


def test_crop_is_centred_on_the_requested_pixel_with_zero_padding():
    image = torch.zeros(30, 40)
    for y, x in [(0, 0), (12, 33), (29, 39), (5, 17)]:
        image.zero_()
        image[y, x] = 7.0
        image[y, min(x + 1, 39)] += 1.0 if x < 39 else 0.0  # a neighbour to the right shows orientation
        sampler = CropSampler([image], [torch.full((30, 40), POSITIVE, dtype=torch.uint8)], WIDTH, augment=False)
        crop = sampler.crops(torch.tensor([[0, y, x]]))[0, 0]
        assert crop.shape == (WIDTH, WIDTH)
        assert crop[C, C] == 7.0
        if x < 39:
            assert crop[C, C + 1] == 1.0
        padded = torch.nn.functional.pad(image, (C, C, C, C))
        assert torch.equal(crop, padded[y:y + WIDTH, x:x + WIDTH])


def test_augmentation_keeps_the_centre_and_only_turns_and_flips():
    images, labels = images_and_labels()
    plain = CropSampler(images, labels, WIDTH, augment=False)
    turned = CropSampler(images, labels, WIDTH, augment=True, seed=5)
    batch = turned.sample(256)
    reference = plain.crops(batch.centres)
    m, y, x = batch.centres.T
    centre_values = torch.stack([images[i][j, k] for i, j, k in zip(m.tolist(), y.tolist(), x.tolist())])
    assert torch.equal(batch.crops[:, 0, C, C], centre_values)
    seen = set()
    for got, ref in zip(batch.crops[:, 0], reference[:, 0]):
        variants = [torch.rot90(v, k) for v in (ref, ref.flip(-1)) for k in range(4)]
        matches = [i for i, v in enumerate(variants) if torch.equal(got, v)]
        assert matches, "an augmented crop is not a rotation/flip of the plain crop"
        seen.add(matches[0])
    assert len(seen) == 8  # all 8 symmetries occur


def test_small_angle_rotation_keeps_the_centre_pixel():
    images, labels = images_and_labels()
    sampler = CropSampler(images, labels, WIDTH, augment=True, max_angle=20.0, seed=2)
    batch = sampler.sample(128)
    assert batch.crops.shape == (128, 1, WIDTH, WIDTH)
    m, y, x = batch.centres.T
    centre_values = torch.stack([images[i][j, k] for i, j, k in zip(m.tolist(), y.tolist(), x.tolist())])
    torch.testing.assert_close(batch.crops[:, 0, C, C], centre_values, atol=1e-5, rtol=0)
    plain = CropSampler(images, labels, WIDTH, augment=False).crops(batch.centres)
    assert not torch.allclose(batch.crops, plain)  # the rotation did something off-centre
    # A vanishing angle reproduces the plain crop: the larger crop is resampled 1:1 about its centre.
    still = CropSampler(images, labels, WIDTH, augment=False, max_angle=1e-9, seed=2)
    torch.testing.assert_close(still.crops(batch.centres), plain, atol=1e-4, rtol=0)


def test_bad_inputs_are_refused():
    images, labels = images_and_labels()
    with pytest.raises(ValueError, match="odd"):
        CropSampler(images, labels, 14)
    with pytest.raises(ValueError, match="no labelled positive"):
        CropSampler(images, [torch.zeros_like(m) for m in labels], WIDTH)
