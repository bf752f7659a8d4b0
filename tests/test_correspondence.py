"""Correspondence (Fig. 8, Table 1): faces with known parts, the masks, Delta, and the table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zfnet.data.synthetic import FACE_PARTS, render_face
from zfnet.models import zfnet
from zfnet.viz.correspondence import MASKS, PAPER_TABLE1, correspondence, delta, face_set, table1


def test_delta_is_the_mean_pairwise_normalised_hamming_distance_of_signs():
    eps = torch.tensor([[1.0, -2.0, 0.0, 3.0], [2.0, -1.0, 0.0, -1.0], [-1.0, 0.0, 0.0, 1.0]])
    # pairs (0,1): 1 of 4 signs differ; (0,2): 2 of 4; (1,2): 3 of 4
    assert delta(eps) == pytest.approx((1 + 2 + 3) / 3 / 4)
    assert delta(eps[[0, 0, 0]]) == 0.0


def test_face_parts_are_where_the_face_is_drawn():
    image, box, parts = render_face(np.random.default_rng(3), (90, 80))
    pixels = np.asarray(image, dtype=np.float32)
    assert set(parts) == set(FACE_PARTS)
    left, right, nose = parts["left_eye"], parts["right_eye"], parts["nose"]
    assert left[2] < right[0] and max(left[3], right[3]) < nose[3]  # eyes side by side, nose below them
    for x0, y0, x1, y1 in parts.values():
        assert box[0] <= x0 < x1 <= box[2] and box[1] <= y0 < y1 <= box[3]
    x0, y0, x1, y1 = (round(v) for v in left)
    eye = pixels[y0:y1, x0:x1].reshape(-1, 3)
    assert np.linalg.norm(eye.std(0)) > 20  # the eye (hole + pupil) is not flat face colour


def test_face_sets_mask_the_part_in_every_image_and_the_table_has_the_papers_shape(tmp_path):
    mean = torch.full((3, 64, 64), 120.0)
    faces = face_set((0, 0), 3, mean, 1 / 64, 56)
    assert faces.images.shape == (3, 3, 56, 56) and set(faces.masks) == set(MASKS)
    areas = {m: faces.masks[m].sum((1, 2)) for m in MASKS}
    assert all((a > 10).all() and (a < 300).all() for a in areas.values())
    eye_rows = faces.masks["left_eye"].any(2).float().argmax(1)
    nose_rows = faces.masks["nose"].any(2).float().argmax(1)
    assert (eye_rows < nose_rows).all()
    torch.manual_seed(0)
    model = zfnet(4, widths=[6, 8, 8, 8, 6], fc_sizes=(16, 16), input_size=56).eval()
    result = correspondence(model, mean, 1 / 64, 56, sets=2, per_set=3)
    assert result["layers"] == {"layer5": "conv5", "layer7": "fc7"}
    for m in MASKS:
        assert len(result["deltas"][m]["layer5"]) == 2
        assert 0.0 <= result["table"][m]["layer7"][0] <= 1.0
    csv_path, md_path = table1(result, tmp_path)
    assert len(csv_path.read_text().splitlines()) == 1 + len(PAPER_TABLE1)
    assert "| right eye |" in md_path.read_text() and "0.067 +- 0.007" in md_path.read_text()
