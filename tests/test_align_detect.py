"""Detectors: the embedded RetinaFace on real faces in made-up photos; SCRFD and RetinaFace decoding on tiny
ONNX graphs built here with the reference output layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from _photos import Placement, correlation, load_face, make_photo
from fqtool.align.detectors import RetinaFaceDetector, ScrfdDetector, load_detector, nms
from fqtool.align.pipeline import Aligner, AlignOptions
from fqtool.errors import FormatError, FqtoolError

#: Faces of tests/data/faces that are frontal and sharp (EQFace's set also holds deliberately bad ones).
GOOD = {"adam": 6, "dominique": 9, "elijah": 10, "celine": 19}

PHOTOS = [
    [Placement(GOOD["adam"], 40, 40, 0.5, -30), Placement(GOOD["dominique"], 220, 60, 1.0, 30),
     Placement(GOOD["elijah"], 400, 200, 2.0, 0)],
    [Placement(GOOD["elijah"], 30, 300, 0.75, 30), Placement(GOOD["adam"], 180, 40, 1.5, -15),
     Placement(GOOD["dominique"], 400, 180, 2.0, -30)],
    [Placement(GOOD["elijah"], 60, 80, 1.25, 15), Placement(GOOD["celine"], 350, 120, 1.75, -20)],
]


@pytest.fixture(scope="module")
def aligner() -> Aligner:
    return Aligner(AlignOptions(faces="all"))


@pytest.mark.parametrize("photo_index", range(len(PHOTOS)))
def test_embedded_detector_finds_and_aligns_every_pasted_face(aligner: Aligner, photo_index: int) -> None:
    placements = PHOTOS[photo_index]
    photo, truths = make_photo(placements, size=(480, 640), seed=photo_index)
    found, crops = aligner.crops(photo)
    assert len(found) == len(placements)
    for placement, truth in zip(placements, truths, strict=True):
        eye_distance = np.linalg.norm(truth[1] - truth[0])
        centres = found.landmarks.mean(axis=1)
        k = int(np.argmin(np.linalg.norm(centres - truth.mean(axis=0), axis=1)))
        assert np.linalg.norm(centres[k] - truth.mean(axis=0)) < 0.3 * eye_distance, placement
        assert correlation(crops[k], load_face(placement.face)) >= 0.9, placement


def test_photo_without_faces_and_tiny_images_give_nothing(aligner: Aligner) -> None:
    blank, _ = make_photo([], size=(240, 320), seed=5)
    assert len(aligner.crops(blank)[0]) == 0
    assert len(aligner.crops(np.zeros((1, 1, 3), np.uint8))[0]) == 0


def _small_faces_photo(seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Twelve faces whose 112-px crops are pasted at 0.16× (eye distance about 6 px, box about 18 px)."""
    rng = np.random.default_rng(seed)
    faces = list(GOOD.values())
    places = [Placement(faces[int(rng.integers(len(faces)))], 40 + 140 * i, 60 + 120 * j, 0.16)
              for i in range(4) for j in range(3)]
    return make_photo(places, size=(480, 640), seed=seed)


def _hits(found, truths) -> int:
    """Pasted faces whose landmark centre falls inside a detected box."""
    centres = [t.mean(axis=0) for t in truths]
    return sum(any(b[0] <= c[0] <= b[2] and b[1] <= c[1] <= b[3] for b in found.boxes) for c in centres)


def test_upscale_finds_faces_too_small_for_the_embedded_detector() -> None:
    """Measured on these three photos: 20 / 36 faces found at 1×, 36 / 36 at 2×, no other boxes. (At 0.25×,
    eye distance 9 px, the embedded detector already finds all 36.)"""
    plain, bigger = Aligner(AlignOptions(faces="all")), Aligner(AlignOptions(faces="all", upscale=2.0))
    hits, boxes = {1: 0, 2: 0}, {1: 0, 2: 0}
    for seed in range(3):
        photo, truths = _small_faces_photo(seed)
        for factor, aligner in ((1, plain), (2, bigger)):
            found = aligner.faces(photo)
            hits[factor] += _hits(found, truths)
            boxes[factor] += len(found)
    assert hits[2] >= hits[1] + 8 and hits[2] >= 33, hits
    assert boxes[2] <= 36 + 2, boxes  # not bought with false detections


def test_upscale_out_of_range_is_one_line() -> None:
    from fqtool.errors import FqtoolError

    with pytest.raises(FqtoolError, match="--upscale must be between 1 and 4"):
        AlignOptions(upscale=0.5).check()


def test_upscale_changes_the_resume_key_only_when_used() -> None:
    """A run journalled before --upscale existed (no such key) still resumes with the default."""
    assert "upscale" not in AlignOptions().journal_key()
    assert AlignOptions(upscale=2.0).journal_key()["upscale"] == 2.0


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 100, 100], [5, 5, 105, 105], [200, 200, 250, 250]], dtype=np.float32)
    keep = nms(boxes, np.array([0.8, 0.9, 0.7]), 0.4)
    assert keep.tolist() == [1, 2]


# ------------------------------------------------------------------------------------- SCRFD decoding


def _const_graph(path: Path, input_shape: list, outputs: list[tuple[str, np.ndarray]]) -> Path:
    """A graph whose outputs are fixed tensors (input unused except for its shape contract)."""
    nodes, infos = [], []
    for name, value in outputs:
        tensor = helper.make_tensor(name + "_value", TensorProto.FLOAT, value.shape, value.ravel().tolist())
        nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info(
        "input.1", TensorProto.FLOAT, input_shape)], infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _scrfd_outputs(strides, anchors, size, faces, batched):
    """insightface SCRFD outputs: scores per stride, then boxes (distances / stride), then kps offsets."""
    scores, boxes, kps = [], [], []
    for stride in strides:
        rows = (size // stride) ** 2 * anchors
        scores.append(np.zeros((rows, 1), np.float32))
        boxes.append(np.zeros((rows, 4), np.float32))
        kps.append(np.zeros((rows, 10), np.float32))
    for stride, row, col, anchor, score, dist, offsets in faces:
        level = strides.index(stride)
        index = (row * (size // stride) + col) * anchors + anchor
        scores[level][index] = score
        boxes[level][index] = np.asarray(dist) / stride
        kps[level][index] = np.asarray(offsets).ravel() / stride
    tensors = scores + boxes + kps
    if batched:
        tensors = [t[None] for t in tensors]
    return [(f"out{i}", t) for i, t in enumerate(tensors)]


@pytest.mark.parametrize(("strides", "anchors", "batched"),
                         [((8, 16, 32), 2, False), ((8, 16, 32, 64, 128), 1, True)])
def test_scrfd_decoding_matches_the_layout(tmp_path: Path, strides, anchors, batched) -> None:
    size = 256
    offsets = np.array([[-20, -10], [20, -10], [0, 5], [-15, 25], [15, 25]], dtype=np.float32)
    faces = [
        # stride, row, col, anchor, score, (left, top, right, bottom), landmark offsets from the centre
        (16, 5, 6, anchors - 1, 0.9, (30, 40, 30, 50), offsets),
        (16, 5, 7, 0, 0.8, (30, 40, 30, 50), offsets),  # the same face one cell over: removed by NMS
        (8, 20, 20, 0, 0.3, (10, 10, 10, 10), offsets / 4),  # below the threshold
    ]
    path = _const_graph(tmp_path / "det.onnx", [1, 3, size, size],
                        _scrfd_outputs(list(strides), anchors, size, faces, batched))
    detector = load_detector(path, max_side=size)
    assert isinstance(detector, ScrfdDetector)
    # a 512×384 photo is scaled by 1/2 into the 256×256 canvas: image coordinates are twice the canvas'
    found = detector.detect(np.zeros((384, 512, 3), np.uint8))
    assert len(found) == 1
    centre = np.array([6 * 16, 5 * 16], np.float32)
    np.testing.assert_allclose(found.boxes[0], 2 * np.r_[centre - [30, 40], centre + [30, 50]], atol=1e-4)
    np.testing.assert_allclose(found.landmarks[0], 2 * (centre + offsets), atol=1e-4)
    assert found.scores[0] == pytest.approx(0.9)
    with pytest.raises(FqtoolError, match="fixed 256×256 input"):
        detector.check_upscale(2.0)


def test_retinaface_decoding_matches_prior_boxes(tmp_path: Path) -> None:
    height, width = 64, 96
    rows = sum(-(-height // s) * -(-width // s) * 2 for s in (8, 16, 32))
    loc = np.zeros((1, rows, 4), np.float32)
    conf = np.tile(np.array([1.0, 0.0], np.float32), (1, rows, 1))
    marks = np.zeros((1, rows, 10), np.float32)
    # prior 2·(row 1 · 12 + col 2) + 1 at stride 8: centre (20, 12), size 32
    index = 2 * (1 * 12 + 2) + 1
    conf[0, index] = [0.05, 0.95]
    loc[0, index] = [0.5, -0.5, np.log(2) / 0.2, 0.0]  # centre moves by (+1.6, −1.6) px, width × 2
    marks[0, index] = np.tile([1.0, 0.0], 5)  # every point 3.2 px right of the centre
    path = _const_graph(tmp_path / "retina.onnx", [1, 3, height, width],
                        [("loc", loc), ("conf", conf), ("landmarks", marks)])
    detector = load_detector(path, max_side=width)
    assert isinstance(detector, RetinaFaceDetector)
    found = detector.detect(np.zeros((height, width, 3), np.uint8))
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes[0], [21.6 - 32, 10.4 - 16, 21.6 + 32, 10.4 + 16], atol=1e-4)
    np.testing.assert_allclose(found.landmarks[0], np.tile([[23.2, 12.0]], (5, 1)), atol=1e-4)


def test_a_graph_with_another_layout_is_refused(tmp_path: Path) -> None:
    path = _const_graph(tmp_path / "odd.onnx", [1, 3, 32, 32], [("a", np.zeros((4, 1), np.float32)),
                                                                 ("b", np.zeros((4, 1), np.float32))])
    with pytest.raises(FormatError, match="odd.onnx: 2 outputs"):
        load_detector(path)
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(FormatError, match="junk.onnx"):
        load_detector(tmp_path / "junk.onnx")


def test_embedded_detector_loads_without_importing_opencv_or_the_package() -> None:
    import subprocess
    import sys

    code = ("import sys, numpy as np; from fqtool.align.detectors import load_detector; "
            "d = load_detector(); d.detect(np.zeros((64, 64, 3), np.uint8)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('cv2', 'retinaface')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
