"""``OnnxFaceModel``: an fqtool-exported ``.onnx`` in ONNX Runtime, with FaceModel's small interface.

``prepare(RGB uint8 N×3×H×W) -> input`` and ``__call__(input) -> (embedding, quality)`` as torch
tensors, so :func:`fqtool.eval.embed.embed_images` (and ``score``, ``verify``, ``erc-curve`` through
``load_model``) use it exactly like a torch model. Preprocessing, quality method and calibration are
read from the graph's metadata, or given (``preprocess=``, ``--preprocess``: it overrides the metadata).
An ``.onnx`` with neither is assumed to take arcface_torch input (RGB, ``(x/255 - 0.5) / 0.5``, NCHW
float) and its quality is the embedding norm; that is said in one :class:`OnnxMetadataWarning`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F

from fqtool.errors import BadInputError, FormatError, FqtoolError, FqtoolWarning
from fqtool.models._state import first_line
from fqtool.models.face_model import ModelInfo, QualityCalibration, resolve_quality_method
from fqtool.models.preprocess import ARCFACE, Preprocess
from fqtool.quality_methods import HEAD_METHODS, MODEL_METHODS
from fqtool.runtime import parse_device

#: Graph input layouts recorded in the ``input_layout`` metadata of fqtool's exports.
LAYOUT_NCHW = "nchw-float"
LAYOUT_NHWC = "nhwc-uint8"
#: A foreign (TensorFlow-style) graph: normalised float input in NHWC order (``--preprocess layout=nhwc``).
LAYOUT_NHWC_FLOAT = "nhwc-float"
#: The flattened feature-map output of a split export's ``_backbone`` graph (the quality graph's input).
FEATURES_NAME = "features_map"

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"


class OnnxMetadataWarning(FqtoolWarning):
    """An ``.onnx`` without fqtool metadata: preprocessing and quality method are assumed."""


class OnnxProviderWarning(FqtoolWarning):
    """CUDA was asked for but the installed onnxruntime cannot use it; the CPU runs the model."""


def ort_cuda_available() -> bool:
    """Both this onnxruntime build has the CUDA provider and there is a CUDA device (checked via torch)."""
    return CUDA_EP in ort.get_available_providers() and torch.cuda.is_available()


def select_providers(device: str = "auto") -> list:
    """ONNX Runtime providers for ``auto|cpu|cuda|cuda:N``; CUDA is only asked for when it really works.

    (Asking for it otherwise makes onnxruntime print errors and fall back to the CPU anyway.) ``cuda``
    without a CUDA device is an error, as for torch models; ``cuda`` with a CPU-only onnxruntime runs on
    the CPU with one :class:`OnnxProviderWarning`.
    """
    name = (device or "auto").strip().lower()
    if name == "auto":
        return [(CUDA_EP, {"device_id": 0}), CPU_EP] if ort_cuda_available() else [CPU_EP]
    resolved = parse_device(name)  # no set_device: ONNX Runtime takes the index as device_id
    if resolved.type == "cpu":
        return [CPU_EP]
    if CUDA_EP not in ort.get_available_providers():
        warnings.warn(
            f"device {device!r}: this onnxruntime has no {CUDA_EP}, running the ONNX model on the CPU "
            "(pip uninstall -y onnxruntime && pip install onnxruntime-gpu; see docs/export.md)",
            OnnxProviderWarning,
            stacklevel=3,
        )
        return [CPU_EP]
    return [(CUDA_EP, {"device_id": resolved.index or 0}), CPU_EP]


def _json(meta: dict[str, str], key: str, default):
    text = meta.get(key)
    if not text:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return default


class OnnxFaceModel:
    """An exported face model in ONNX Runtime; see the module docstring."""

    def __init__(self, path: str | Path, device: str = "auto", preprocess: Preprocess | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise BadInputError("no such ONNX file", self.path)
        self.providers = select_providers(device)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own (non-exported) exception types
            raise FormatError(f"not a loadable ONNX model ({first_line(exc)})", self.path) from None
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self._inputs = self.session.get_inputs()
        self._outputs = [o.name for o in self.session.get_outputs()]
        if len(self._inputs) != 1:
            raise FormatError(f"expected a graph with one input, found {len(self._inputs)}", self.path)
        self.input_name = self._inputs[0].name
        self.declared = preprocess is not None  # the preprocessing was given, not read or assumed
        if "fqtool_version" in self.metadata:
            self._read_metadata()
            if preprocess is not None:
                self._override(preprocess)
        else:
            self._assume_defaults(preprocess)
        self.quality_method = self.graph_quality_method
        self.device = torch.device("cpu")  # where outputs are returned

    # ------------------------------------------------------------------------------------ metadata
    def _read_metadata(self) -> None:
        meta = self.metadata
        if meta.get("graph") == "quality":
            raise BadInputError(
                "is the quality half of a split export; load the full graph (or the _backbone graph)",
                self.path,
            )
        calibration = _json(meta, "calibration", None)
        try:
            preprocess = Preprocess.from_dict(_json(meta, "preprocessing", {}))
            calibration = QualityCalibration.from_dict(calibration) if calibration else None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise FormatError(f"damaged fqtool metadata ({exc})", self.path) from None
        self.info = ModelInfo(
            arch=meta.get("arch", "unknown"),
            arch_kwargs=_json(meta, "arch_kwargs", {}),
            preprocess=preprocess,
            family=meta.get("family", "fqtool"),
            calibration=calibration,
            trained_on_synthetic=meta.get("trained_on_synthetic") == "true",
        )
        self.input_layout = meta.get("input_layout", LAYOUT_NCHW)
        self.embedding_name = "embedding" if "embedding" in self._outputs else self._outputs[0]
        self.quality_name = "quality" if "quality" in self._outputs else None
        method = meta.get("quality_method", "norm")
        if method not in MODEL_METHODS:
            known = ", ".join(MODEL_METHODS)
            raise FormatError(f"damaged fqtool metadata (quality_method {method!r}; known: {known})",
                              self.path)
        self.graph_quality_method = method if self.quality_name else "norm"
        self.embedding_size = self._recorded_width(meta.get("embedding_size"))

    def _override(self, given: Preprocess) -> None:
        """``--preprocess`` on an fqtool graph; one with built-in normalisation cannot take another."""
        own = self.info.preprocess
        built_in = (own.color, own.mean, own.std, own.size)
        if self.input_layout == LAYOUT_NHWC and (given.color, given.mean, given.std, given.size) != built_in:
            raise FqtoolError("has its preprocessing built into the graph (exported with "
                              "--include-preprocessing); --preprocess cannot change it", self.path)
        self.info.preprocess = given

    def _recorded_width(self, recorded: str | None) -> int:
        """The metadata's ``embedding_size``, checked against the graph's output where that is fixed."""
        width = self._output_width()
        if not recorded:
            return width
        try:
            size = int(recorded)
        except ValueError:
            raise FormatError(f"damaged fqtool metadata (embedding_size {recorded!r})", self.path) from None
        if size <= 0 or (width and size != width):
            raise FormatError(f"damaged fqtool metadata (embedding_size {size}, the graph outputs {width})",
                              self.path)
        return size

    def _assume_defaults(self, given: Preprocess | None = None) -> None:
        """A foreign graph: its input layout from its shape (or ``given.layout``), preprocessing ``given``
        or arcface_torch's (said in one warning)."""
        shape, kind = self._inputs[0].shape, self._inputs[0].type
        if len(shape) != 4:
            raise FormatError(f"input {self.input_name!r} has shape {shape}; expected 4-D images", self.path)
        nhwc = shape[3] == 3 and (shape[1] != 3 or (given is not None and given.layout == "nhwc"))
        if kind == "tensor(uint8)" and shape[3] == 3:
            self.input_layout, dims = LAYOUT_NHWC, shape[1:3]
        elif kind == "tensor(float)" and nhwc:
            self.input_layout, dims = LAYOUT_NHWC_FLOAT, shape[1:3]
        elif kind == "tensor(float)" and shape[1] == 3:
            self.input_layout, dims = LAYOUT_NCHW, shape[2:4]
        else:
            raise FormatError(
                f"input {self.input_name!r} is {kind} {shape}; expected float N×3×H×W", self.path
            )
        size = tuple(int(d) if isinstance(d, int) else 112 for d in dims)
        preprocess = given or Preprocess(size=size, color=ARCFACE.color, mean=ARCFACE.mean, std=ARCFACE.std)
        fixed = [int(d) for d in dims if isinstance(d, int)]
        if given is not None and len(fixed) == 2 and tuple(fixed) != tuple(given.size):
            raise FqtoolError(f"--preprocess size {given.size[0]}x{given.size[1]} does not fit the graph's "
                              f"input {fixed[0]}x{fixed[1]}", self.path)
        self.info = ModelInfo(arch="unknown", preprocess=preprocess, family="unknown")
        self.embedding_name = "embedding" if "embedding" in self._outputs else self._outputs[0]
        self.quality_name = "quality" if "quality" in self._outputs else None
        self.graph_quality_method = "head" if self.quality_name else "norm"
        self.embedding_size = self._output_width()
        if given is None:
            quality = "its quality output" if self.quality_name else "the embedding norm as quality"
            warnings.warn(
                f"{self.path}: no fqtool metadata; assuming arcface_torch input (RGB, (x/255-0.5)/0.5, "
                f"{size[0]}x{size[1]}) and {quality}; if the model expects other input, pass --preprocess "
                "(e.g. --preprocess facenet) or stamp it once with `fqtool convert-weights IN.onnx OUT.onnx "
                "--preprocess SPEC`",
                OnnxMetadataWarning,
                stacklevel=3,
            )

    def _output_width(self) -> int:
        for output in self.session.get_outputs():
            if output.name == self.embedding_name:
                width = output.shape[-1] if output.shape else None
                return int(width) if isinstance(width, int) else 0
        return 0

    # ----------------------------------------------------------------------------- FaceModel interface
    @property
    def preprocess(self) -> Preprocess:
        return self.info.preprocess

    @property
    def calibration(self) -> QualityCalibration | None:
        return self.info.calibration

    @property
    def active_providers(self) -> list[str]:
        return list(self.session.get_providers())

    def eval(self) -> OnnxFaceModel:
        return self

    def to(self, *args, **kwargs) -> OnnxFaceModel:
        """Outputs always come back as CPU tensors; the device is chosen at construction (``device=``)."""
        return self

    def set_quality_method(self, method: str) -> None:
        """``norm`` always works (computed from the embedding); ``head``/``crfiqa`` need a graph exported
        with that head."""
        head = self.graph_quality_method if self.graph_quality_method in HEAD_METHODS else None
        self.quality_method = resolve_quality_method(method, head, where=str(self.path))

    def prepare(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """RGB uint8 N×3×H×W → this graph's input.

        Plain graphs: the normalised float tensor (as ``FaceModel.prepare``). Graphs with built-in
        preprocessing: uint8 N×3×H×W at the model's size in channels-last memory, i.e. NHWC bytes
        (``flip(-1)`` still flips the width, and ``__call__`` hands it over without a copy).
        """
        images = torch.as_tensor(images).cpu()
        if self.input_layout in (LAYOUT_NCHW, LAYOUT_NHWC_FLOAT):
            return self.preprocess(images).contiguous()
        if tuple(images.shape[-2:]) != tuple(self.preprocess.size):
            images = (
                F.interpolate(
                    images.float(),
                    size=self.preprocess.size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
                .round()
                .clamp(0, 255)
            )
        return images.to(torch.uint8).contiguous(memory_format=torch.channels_last)

    def _to_feed(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        x = x.detach().cpu()
        if self.input_layout == LAYOUT_NCHW:
            return x.float().contiguous().numpy()
        if self.input_layout == LAYOUT_NHWC_FLOAT:
            return x.float().permute(0, 2, 3, 1).contiguous().numpy()
        if x.ndim == 4 and x.shape[1] == 3 and x.shape[-1] != 3:
            x = x.permute(0, 2, 3, 1)  # NCHW view (e.g. from prepare) → NHWC
        return x.to(torch.uint8).contiguous().numpy()

    def __call__(self, x: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input (see :meth:`prepare`) → ``(embedding N×D, quality N)`` float32 CPU tensors."""
        from_head = self.quality_method in HEAD_METHODS
        names = [self.embedding_name] + ([self.quality_name] if from_head else [])
        outputs = self._run(names, self._to_feed(x))
        embedding = torch.from_numpy(np.asarray(outputs[0], np.float32))
        if embedding.ndim != 2:
            raise FormatError(f"output {self.embedding_name!r} has shape {tuple(embedding.shape)}; expected "
                              "N×D embeddings", self.path)
        if from_head:
            quality = torch.from_numpy(np.asarray(outputs[1], np.float32)).reshape(-1)
        else:
            quality = torch.linalg.vector_norm(embedding, dim=1)
        return embedding, quality

    forward = __call__

    def features(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """The flattened feature map (``_backbone`` graphs of a split export only)."""
        if FEATURES_NAME not in self._outputs:
            raise FqtoolError(f"{self.path} has no {FEATURES_NAME!r} output (only split _backbone graphs do)")
        return self._run([FEATURES_NAME], self._to_feed(x))[0]

    # h6 (issue 25.11): foreign graphs with a fixed batch size, and graphs that fail or return other row
    # counts, end in one line naming the file instead of an onnxruntime traceback.
    def _run(self, names: list[str], feed: np.ndarray) -> list[np.ndarray]:
        batch = self._inputs[0].shape[0] if self._inputs[0].shape else None
        if not len(feed):
            return self.session.run(names, {self.input_name: feed})
        step = batch if isinstance(batch, int) and batch > 0 else len(feed)
        parts = []
        for start in range(0, len(feed), max(step, 1)):
            chunk = feed[start:start + step]
            rows = len(chunk)
            if rows < step:  # the last chunk of a fixed-batch graph is padded, the padding dropped
                chunk = np.concatenate([chunk, np.zeros((step - rows, *chunk.shape[1:]), chunk.dtype)])
            try:
                out = self.session.run(names, {self.input_name: chunk})
            except Exception as exc:  # onnxruntime's own exception types
                raise FormatError(f"the ONNX graph failed on a batch of {len(chunk)} ({first_line(exc)})",
                                  self.path) from None
            for name, value in zip(names, out, strict=True):
                if np.ndim(value) == 0 or len(value) != len(chunk):
                    raise FormatError(f"output {name!r} has {len(np.atleast_1d(value))} rows for "
                                      f"{len(chunk)} images; expected one row per image", self.path)
            parts.append([np.asarray(value)[:rows] for value in out])
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(names))]

    def __repr__(self) -> str:
        return (
            f"OnnxFaceModel({str(self.path)!r}, arch={self.info.arch!r}, layout={self.input_layout}, "
            f"quality={self.quality_method}, providers={self.active_providers})"
        )
