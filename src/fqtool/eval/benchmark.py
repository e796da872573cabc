"""One benchmark protocol for ``verify`` and ``erc-curve``, with two implementations: pair sets
(:class:`~fqtool.eval.pairsets.PairSet`: ``.bin``, pairs folders) and IJB template sets
(:class:`~fqtool.eval.ijbsets.IjbSet`).

A benchmark checks the options before anything is loaded, embeds its images with a model (flip, aligned
images, progress, torchrun sharding, resume) or loads saved features, evaluates a protocol into result
objects (:mod:`fqtool.eval.results`), and builds the quality methods of an ERC/EDC plot.
:func:`run_verify` and :func:`run_erc` walk the sets; under torchrun every rank walks every set (the
embedding collectives are reached by all ranks in the same order) and only rank 0 evaluates.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fqtool.errors import FqtoolError
from fqtool.eval.results import ErcResult, VerifyReport

#: ``progress(label, total)`` → a context manager yielding ``advance(n)`` (the CLI's progress bar).
Progress = Callable[[str, int | None], contextlib.AbstractContextManager[Callable[[int], None]]]

#: How a benchmark aligns pair images for ``--align``: ``(images, size, name, progress, margin)`` →
#: ``(uint8 N×3×H×W tensor, warning or None)``; built by the API from the align core.
AlignImages = Callable[[Any, tuple, str, Progress, Any], tuple[Any, str | None]]


def no_progress(label: str, total: int | None) -> contextlib.AbstractContextManager[Callable[[int], None]]:
    return contextlib.nullcontext(lambda n=1: None)


@dataclass
class EmbedSettings:
    """How a benchmark's images are found, decoded and embedded.

    ``batch_size`` / ``workers`` None: 64 and no workers on the CPU; 256 and the runtime's worker choice
    on CUDA (:func:`loader_defaults`). ``save``: where features go (``--save-features``; with several sets
    ``FILE_<name>.npz`` each). ``notify(line)``: a line for the user (a file written); warnings go to
    the result's ``warnings``.
    """

    data_dir: Path | None = None
    batch_size: int | None = None
    workers: int | None = None
    align: AlignImages | None = None
    progress: Progress = no_progress
    notify: Callable[[str], None] = lambda line: None
    save: Path | None = None
    several: bool = False

    def save_path(self, name: str) -> Path | None:
        """Where set ``name``'s features are saved (None: not saved)."""
        if self.save is None or not self.several:
            return self.save
        base = self.save
        stem = base.name[: -len(".npz")] if base.name.endswith(".npz") else base.name
        return base.with_name(f"{stem}_{name}.npz")

    def loader(self, device) -> tuple[int, int]:
        """``(batch size, workers)`` for ``device`` with the defaults filled in."""
        batch, workers = loader_defaults(device)
        return self.batch_size or batch, workers if self.workers is None else self.workers


def loader_defaults(device) -> tuple[int, int]:
    """Evaluation's default ``(batch size, workers)``: ``(64, 0)`` on the CPU (outputs as always),
    ``(256, runtime's worker choice)`` on CUDA, where decoding in the main process starves the GPU."""
    from fqtool.runtime import loader_workers

    if getattr(device, "type", str(device)) == "cuda":
        return 256, loader_workers(8)
    return 64, 0


@dataclass
class VerifyOptions:
    """``verify``'s protocol options (``flip`` None: each protocol's default)."""

    protocols: list[str] = field(default_factory=lambda: ["insightface"])
    flip: bool | None = None
    folds: int = 10
    norm_score: bool = False
    detector_score: bool = False


@dataclass
class ErcOptions:
    """``erc-curve``'s options: the quality methods and the curve protocol."""

    scores: list[str] = field(default_factory=list)
    model_quality: bool = True
    methods: list[str] = field(default_factory=list)
    quality_models: list[str] = field(default_factory=list)
    serfiq: Any = None
    mode: str = "erc"
    fmrs: tuple[float, ...] | None = None
    starting_fnmr: float = 0.05
    pair_quality: str = "min"
    metric: str = "angular"
    pauc_limit: float = 0.2
    flip: bool | None = None


class Benchmark(Protocol):
    """One set to evaluate: a TARGET to embed with a model, or a features file."""

    name: str
    needs_model: bool
    section: type  # the result section its verification results go to (:mod:`fqtool.eval.results`)

    def check_verify(self, options: VerifyOptions) -> None: ...
    def check_erc(self, options: ErcOptions) -> None: ...
    def check_model(self, model, options: ErcOptions) -> None: ...
    def features(self, model, settings: EmbedSettings, *, flip: bool) -> Any | None: ...
    def verify_flip(self, options: VerifyOptions) -> bool: ...
    def erc_flip(self, options: ErcOptions) -> bool: ...
    def evaluate(self, features, options: VerifyOptions) -> tuple[list, list[str]]: ...
    def qualities(self, features, options: ErcOptions, model, settings: EmbedSettings) -> dict: ...
    def curves(self, features, qualities: dict, options: ErcOptions) -> Any: ...


def resolve_benchmarks(
    targets: list[str] | None = None, features: list[Path] | None = None, data_dir: Path | None = None
) -> list[Benchmark]:
    """TARGETs (set names, ``.bin``, pairs folders, IJBB/IJBC, IJB set folders) or features files, as
    benchmarks; IJB sets first (they are embedded first), each kind in the order given."""
    from fqtool.eval.ijb import is_ijb_features
    from fqtool.eval.ijbsets import IjbSet
    from fqtool.eval.pairsets import PairSet
    from fqtool.eval.targets import resolve_ijb

    targets, features = list(targets or []), [Path(p) for p in features or []]
    if targets and features:
        raise FqtoolError("give TARGETs (with --weights) or --features files, not both")
    if not targets and not features:
        raise FqtoolError(
            "nothing to evaluate: give one or more TARGETs (lfw, path/to/set.bin, IJBC, …) or --features"
        )
    out: list[Benchmark] = []
    for path in features:
        out.append(IjbSet.from_features(path) if is_ijb_features(path) else PairSet.from_features(path))
    for target in targets:
        found = resolve_ijb(target, data_dir)
        out.append(PairSet(target) if found is None else IjbSet(*found))
    return sorted(out, key=lambda b: not isinstance(b, IjbSet))


def resolve_benchmark(target: str | None, features: Path | None, data_dir: Path | None = None) -> Benchmark:
    """One TARGET or one features file (``erc-curve``)."""
    if target is not None and features is not None:
        raise FqtoolError("give a TARGET (with --weights) or --features, not both")
    if target is None and features is None:
        raise FqtoolError("nothing to evaluate: give a TARGET (lfw, path/to/set.bin, …) or --features F.npz")
    return resolve_benchmarks([target] if target is not None else None, [features] if features else None,
                              data_dir)[0]


ModelSource = Any  # a QualityModel, or a callable that opens one once the inputs are checked


def _open(model: ModelSource, benchmarks: list[Benchmark]):
    if not any(b.needs_model for b in benchmarks):
        return None
    if model is None:
        raise FqtoolError("evaluating a TARGET needs a model (--weights)")
    return model() if callable(model) and not hasattr(model, "network") else model


def check_verify(benchmarks: list[Benchmark], options: VerifyOptions, outputs: tuple[str, ...] = ()) -> None:
    """Every check that can fail before a model is opened; ``outputs``: options that take one kind of set."""
    for benchmark in benchmarks:
        benchmark.check_verify(options)
    if outputs and len({b.section for b in benchmarks}) > 1:
        raise FqtoolError(f"{' and '.join(outputs)} take either .bin sets or IJB sets; run them separately")


def run_verify(
    benchmarks: list[Benchmark], model: ModelSource, options: VerifyOptions, settings: EmbedSettings
) -> VerifyReport | None:
    """Embed (or load) every set, then evaluate each; None on torchrun ranks other than 0.

    Every rank embeds every set before any evaluation, so each set's collectives are reached by all."""
    check_verify(benchmarks, options)
    network = _open(model, benchmarks)
    settings.several = settings.several or sum(b.needs_model for b in benchmarks) > 1
    from fqtool.eval.ijb_embed import process_group_scope

    with process_group_scope():  # under torchrun: one process group for every set
        features = [b.features(network, settings, flip=b.verify_flip(options)) for b in benchmarks]
    if any(f is None for f in features):  # a torchrun rank other than 0: its shards are saved
        return None
    sections: dict[type, list] = {}
    warnings: list[str] = []
    for benchmark, feats in zip(benchmarks, features, strict=True):
        results, notes = benchmark.evaluate(feats, options)
        sections.setdefault(benchmark.section, []).extend(results)
        warnings += notes
    return VerifyReport([kind(results) for kind, results in sections.items()], list(dict.fromkeys(warnings)))


def check_erc(benchmark: Benchmark, options: ErcOptions) -> None:
    from fqtool.eval.erc import METRICS, MODES, PAIR_QUALITY

    for value, allowed, option in ((options.mode, MODES, "--mode"), (options.pair_quality, PAIR_QUALITY,
                                   "--pair-quality"), (options.metric, METRICS, "--metric")):
        if value not in allowed:
            raise FqtoolError(f"unknown {option} {value!r}; use {', '.join(allowed)}")
    benchmark.check_erc(options)


def run_erc(
    benchmark: Benchmark, model: ModelSource, options: ErcOptions, settings: EmbedSettings
) -> ErcResult | None:
    """ERC/EDC curves of every quality method on one set; None on torchrun ranks other than 0."""
    check_erc(benchmark, options)
    network = _open(model, [benchmark])
    if network is not None:
        benchmark.check_model(network, options)  # before the long embedding run
    feats = benchmark.features(network, settings, flip=benchmark.erc_flip(options))
    if feats is None:
        return None
    qualities = benchmark.qualities(feats, options, network, settings)
    return ErcResult(feats.name, benchmark.curves(feats, qualities, options))


def add_scores(qualities: dict, scores: list[str], load: Callable[[Path], Any]) -> dict:
    """``--scores NAME=FILE`` added to ``qualities``; at least one method must be left."""
    from fqtool.eval.erc import parse_scores_option

    for text in scores:
        name, path = parse_scores_option(text)
        if name in qualities:
            raise FqtoolError(f"two quality methods are named {name!r}; use NAME=FILE.csv to tell them apart")
        qualities[name] = load(path)
    if not qualities:
        raise FqtoolError("no quality method left: drop --no-model-quality or add --scores NAME=FILE.csv")
    return qualities
