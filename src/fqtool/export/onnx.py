"""Export a :class:`~fqtool.models.FaceModel` to ONNX (dynamo exporter, opset 18) and check it.

One graph with a dynamic batch axis: input ``input`` → outputs ``embedding`` (raw, not normalised: its
norm is the MagFace quality) and ``quality`` (the head's score, or the norm). With
``include_preprocessing`` the input is RGB uint8 NHWC at the model's size and the graph does colour
order and mean/std itself. ``split`` also writes EQFace-style ``<stem>_backbone.onnx`` (input →
embedding, ``features_map``) and ``<stem>_quality.onnx`` (``features_map`` → quality). Everything the
runtime needs (preprocessing, quality method, calibration...) travels in the model's ``metadata_props``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from fqtool._version import __version__
from fqtool.errors import FqtoolError, OutputError
from fqtool.export import parity
from fqtool.fsutil import FILE_MODE, atomic_path
from fqtool.models.checkpoint import ensure_finite
from fqtool.models.face_model import FaceModel
from fqtool.models.onnx_model import FEATURES_NAME, LAYOUT_NCHW, LAYOUT_NHWC
from fqtool.models.preprocess import Preprocess

INPUT_NAME = "input"
MIN_OPSET = 18
_EXAMPLE_BATCH = 2  # not 1: torch.export would specialise the batch axis to 1


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote: the graph files (main graph first), their metadata and the check."""

    paths: list[Path]
    metadata: dict[str, str]
    parity: parity.ParityReport | None
    seconds: float = 0.0
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def output(self) -> Path:
        return self.paths[0]

    def to_dict(self) -> dict:
        return {
            "paths": [str(p) for p in self.paths],
            "metadata": dict(self.metadata),
            "parity": self.parity.to_dict() if self.parity else None,
            "seconds": self.seconds,
        }


class _Preprocessing(nn.Module):
    """RGB uint8 NHWC → the network's normalised NCHW float input (by :meth:`Preprocess.normalize`, the
    same code torch models run), then ``inner``."""

    def __init__(self, inner: nn.Module, preprocess: Preprocess) -> None:
        super().__init__()
        self.inner = inner
        self.preprocess = preprocess
        mean, std = preprocess.pixel_stats()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor):
        x = x.permute(0, 3, 1, 2).float()
        return self.inner(self.preprocess.normalize(x, (self.mean, self.std)))


class _Half(nn.Module):
    """The conv trunk in fp16; ``fc``/``features``, the quality head, inputs and outputs stay fp32."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor):
        return self.inner(x.half())


class _Backbone(nn.Module):
    """Split graph 1: input → (embedding, flattened feature map)."""

    def __init__(self, model: FaceModel) -> None:
        super().__init__()
        self.backbone = model.backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, flat = self.backbone.forward_features(x)
        return embedding.float(), flat.float()


class _Quality(nn.Module):
    """Split graph 2: flattened feature map → quality."""

    def __init__(self, model: FaceModel) -> None:
        super().__init__()
        self.head = model.quality_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.float())


@dataclass
class _Graph:
    name: str
    module: nn.Module
    example: torch.Tensor
    output_names: list[str]
    input_name: str = INPUT_NAME


def _fp32_copy(model: FaceModel) -> FaceModel:
    return copy.deepcopy(model).float().cpu().eval()


#: Kept in fp32 by ``--fp16``: the embedding layers (and the EQFace head, which is all Linear/BN1d).
_FP32_MODULES = (nn.Linear, nn.BatchNorm1d)


def _cast_to_own_dtype(module: nn.Module, args: tuple) -> tuple | None:
    """Forward pre-hook: a floating input follows the dtype of the module's own parameters."""
    param = next(module.parameters(recurse=False), None)
    if param is None or not args or not torch.is_tensor(args[0]) or not args[0].is_floating_point():
        return None
    return (args[0].to(param.dtype), *args[1:])


def _half_backbone(model: FaceModel) -> FaceModel:
    """A copy whose backbone runs in fp16 except the embedding layers (Linear, BatchNorm1d)."""
    half = copy.deepcopy(model)
    half.backbone.half()
    for module in half.backbone.modules():
        if isinstance(module, _FP32_MODULES):
            module.float()
        if next(module.parameters(recurse=False), None) is not None:
            module.register_forward_pre_hook(_cast_to_own_dtype)
    return half.eval()


def _example_input(model: FaceModel, include_preprocessing: bool) -> torch.Tensor:
    h, w = model.preprocess.size
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (_EXAMPLE_BATCH, 3, h, w), dtype=torch.uint8, generator=generator)
    if include_preprocessing:
        return images.permute(0, 2, 3, 1).contiguous()
    return model.prepare(images)


def _graphs(model: FaceModel, include_preprocessing: bool, fp16: bool, split: bool) -> list[_Graph]:
    """The modules to export: the full graph, plus backbone/quality halves with ``split``."""
    core = _half_backbone(model) if fp16 else model

    def wrap(module: nn.Module) -> nn.Module:
        module = _Half(module) if fp16 else module
        return _Preprocessing(module, model.preprocess) if include_preprocessing else module

    example = _example_input(model, include_preprocessing)
    graphs = [_Graph("full", wrap(core).eval(), example, ["embedding", "quality"])]
    if split:
        backbone = wrap(_Backbone(core)).eval()
        graphs.append(_Graph("backbone", backbone, example, ["embedding", FEATURES_NAME]))
        with torch.no_grad():
            flat = backbone(example)[1]
        graphs.append(_Graph("quality", _Quality(core).eval(), flat, ["quality"], FEATURES_NAME))
    return graphs


def _to_proto(graph: _Graph, opset: int) -> onnx.ModelProto:
    """torch.onnx.export (dynamo, no warnings) with a dynamic batch axis, at exactly ``opset``."""
    try:
        with _quiet_logger("onnxscript.version_converter"):
            program = _export(graph, opset)
    except Exception as exc:  # the exporter raises many types; name the model part that failed
        raise FqtoolError(
            f"ONNX export of the {graph.name} graph failed: {str(exc).splitlines()[0]}"
        ) from exc
    written = default_opset(program.model_proto)
    if written != opset:  # the exporter falls back to its own opset when it cannot convert
        raise FqtoolError(f"--opset {opset}: the exporter cannot convert the {graph.name} graph to it "
                          f"(it stays at opset {written}); use --opset {written}")
    return program.model_proto


def default_opset(proto: onnx.ModelProto) -> int | None:
    """The version of the default ONNX domain a model imports."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Hide a library logger's warnings (the version converter logs a traceback, then falls back)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _export(graph: _Graph, opset: int):
    return torch.onnx.export(
        graph.module,
        (graph.example,),
        None,
        dynamo=True,
        opset_version=opset,
        input_names=[graph.input_name],
        output_names=graph.output_names,
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        verbose=False,
    )


def build_metadata(
    model: FaceModel,
    *,
    include_preprocessing: bool,
    fp16: bool,
    graph: str,
    source_hash: str | None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` every fqtool graph carries (all values are strings; JSON where structured)."""
    info = model.info
    calibration = info.calibration.to_dict() if info.calibration is not None else None
    metadata = {
        "fqtool_version": __version__,
        "graph": graph,
        "arch": info.arch,
        "arch_kwargs": json.dumps(info.arch_kwargs, sort_keys=True, default=list),
        "family": info.family,
        "preprocessing": json.dumps(info.preprocess.to_dict(), sort_keys=True),
        "input_layout": LAYOUT_NHWC if include_preprocessing else LAYOUT_NCHW,
        "quality_method": model.quality_method,
        "calibration": json.dumps(calibration, sort_keys=True),
        "embedding_size": str(model.embedding_size),
        "precision": "fp16" if fp16 else "fp32",
        "source_sha256": source_hash or "",
        "trained_on_synthetic": "true" if info.trained_on_synthetic else "false",
    }
    metadata.update(extra or {})
    return metadata


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feed(images: torch.Tensor, model: FaceModel, include_preprocessing: bool) -> np.ndarray:
    if include_preprocessing:
        return np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())
    return model.prepare(images).numpy()


def _runners(
    paths: dict[str, Path], model: FaceModel, include_preprocessing: bool
) -> list[tuple[str, parity.Runner]]:
    full = _session(paths["full"])

    def run_full(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        embedding, quality = full.run(
            ["embedding", "quality"], {INPUT_NAME: _feed(images, model, include_preprocessing)}
        )
        return embedding, quality

    runners: list[tuple[str, parity.Runner]] = [("full", run_full)]
    if "backbone" in paths:
        backbone, head = _session(paths["backbone"]), _session(paths["quality"])

        def run_split(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
            feed = {INPUT_NAME: _feed(images, model, include_preprocessing)}
            embedding, flat = backbone.run(["embedding", FEATURES_NAME], feed)
            return embedding, head.run(["quality"], {FEATURES_NAME: flat})[0]

        runners.append(("split", run_split))
    return runners


def _reference(model: FaceModel) -> parity.Runner:
    @torch.inference_mode()
    def run(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        embedding, quality = model(model.prepare(images))
        return embedding.double().numpy(), quality.double().reshape(-1).numpy()

    return run


def split_paths(output: Path) -> tuple[Path, Path]:
    """``<stem>_backbone.onnx`` and ``<stem>_quality.onnx`` next to ``output``."""
    return output.with_name(f"{output.stem}_backbone.onnx"), output.with_name(f"{output.stem}_quality.onnx")


def _check_args(model: FaceModel, output: Path, split: bool, opset: int) -> None:
    if opset < MIN_OPSET:
        raise FqtoolError(f"--opset {opset} is not supported; the dynamo exporter needs {MIN_OPSET} or newer")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise FqtoolError(f"--opset {opset} is not supported; the installed onnx knows opsets up to {newest}")
    if split and model.quality_head is None:
        raise FqtoolError(
            "--split needs a model with a quality head (e.g. --quality-weights); "
            "without one the quality is the embedding norm, computed by the single graph"
        )
    if output.suffix.lower() != ".onnx":
        raise OutputError("the output file name must end in .onnx", output)
    if output.is_dir():
        raise OutputError("is a folder; give a file name ending in .onnx", output)


def export_onnx(
    model: FaceModel,
    output: Path,
    *,
    include_preprocessing: bool = False,
    fp16: bool = False,
    split: bool = False,
    opset: int = 18,
    check: bool = True,
    source_hash: str | None = None,
    tolerance: parity.Tolerance | None = None,
    extra_metadata: dict[str, str] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export ``model`` to ``output`` (and the split graphs), check parity, then rename into place.

    All files are written under temporary names first; if the export or the parity check fails
    (:class:`~fqtool.export.parity.ParityError`, exit code 2), none of them is left behind.
    """
    start = time.perf_counter()
    output = Path(output)
    _check_args(model, output, split, opset)
    ensure_finite(model)  # also under check=False: a NaN model is never exported as a success
    model = _fp32_copy(model)
    graphs = _graphs(model, include_preprocessing, fp16, split)
    names = {"full": output}
    if split:
        names["backbone"], names["quality"] = split_paths(output)
    metadata = {}
    report_parity = None
    with contextlib.ExitStack() as stack:
        tmp = {g.name: stack.enter_context(atomic_path(names[g.name])) for g in graphs}
        for graph in graphs:
            if on_step:
                on_step(f"exporting {graph.name} graph")
            proto = _to_proto(graph, opset)
            meta = build_metadata(
                model,
                include_preprocessing=include_preprocessing,
                fp16=fp16,
                graph=graph.name,
                source_hash=source_hash,
                extra=extra_metadata,
            )
            onnx.helper.set_model_props(proto, meta)
            onnx.checker.check_model(proto)
            onnx.save_model(proto, str(tmp[graph.name]))
            os.chmod(tmp[graph.name], FILE_MODE)  # temporary files are created 0600
            if graph.name == "full":
                metadata = meta
        if check:
            if on_step:
                on_step("checking ONNX Runtime against PyTorch")
            tol = tolerance or (parity.FP16_TOLERANCE if fp16 else parity.FP32_TOLERANCE)
            runners = _runners(tmp, model, include_preprocessing)
            report_parity = parity.check_parity(runners, _reference(model), model.preprocess.size, tol)
            if not report_parity.ok:
                raise parity.ParityError(report_parity, output)
    paths = [names[g.name] for g in graphs]
    sizes = {str(p): p.stat().st_size for p in paths}
    return ExportReport(paths, metadata, report_parity, time.perf_counter() - start, sizes)
