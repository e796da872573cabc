"""Pair sets (``.bin``, pairs folders, their saved features): the benchmark behind ``verify`` and
``erc-curve`` on 1:1 pairs (insightface / MagFace protocols, MagFace ERC, ISO EDC)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fqtool.errors import FqtoolError
from fqtool.eval.benchmark import EmbedSettings, ErcOptions, VerifyOptions, add_scores
from fqtool.eval.features import FeatureSet, load_features, save_features
from fqtool.eval.results import PairResults
from fqtool.eval.verification import PROTOCOLS, evaluate_verification


def _is_helper_rank() -> bool:
    """A torchrun rank other than 0: pair sets are embedded and evaluated on rank 0 only."""
    from fqtool.eval.ijb_embed import dist_env

    rank, world, _ = dist_env()
    return world > 1 and rank != 0


class PairSet:
    """A pair set: ``target`` to embed with a model, or a features file (``from_features``)."""

    section = PairResults

    def __init__(self, target: str | None, features_path: Path | None = None) -> None:
        self.target, self.features_path = target, features_path
        self.name = target or str(features_path)
        self.needs_model = features_path is None
        self.images = None  # the decoded (or aligned) images once embedded: the quality methods' input
        self.notes: list[str] = []  # warnings found while embedding (images with no face for --align)

    @classmethod
    def from_features(cls, path: str | Path) -> PairSet:
        return cls(None, Path(path))

    # ------------------------------------------------------------------------------------------- checks

    def check_verify(self, options: VerifyOptions) -> None:
        protocols = options.protocols
        if len(protocols) > 1 or protocols[0] not in PROTOCOLS:
            raise FqtoolError(f"unknown --protocol {','.join(protocols)!r} for .bin sets; use one of "
                              f"{' or '.join(PROTOCOLS)}")

    def check_erc(self, options: ErcOptions) -> None:
        from fqtool.eval.methods import beside_runner, check_methods

        if options.flip is not None:
            raise FqtoolError("--flip/--no-flip applies to IJB sets only")
        options.methods = check_methods(options.methods, have_model=self.needs_model)
        runners = {beside_runner(m) for m in options.methods} - {None}
        if options.serfiq is not None:
            for runner in runners:
                runner.check_options(options.serfiq)  # bad options fail before anything is embedded
        if options.quality_models and not self.needs_model:
            raise FqtoolError("--quality-model needs a TARGET (the images), not --features")

    def check_model(self, model, options: ErcOptions) -> None:
        """Nothing to check: every method can run on a pair set's images."""

    def verify_flip(self, options: VerifyOptions) -> bool:
        return (options.protocols[0] == "insightface") if options.flip is None else options.flip

    def erc_flip(self, options: ErcOptions) -> bool:
        return False

    # ------------------------------------------------------------------------------------------- embed

    def features(self, model, settings: EmbedSettings, *, flip: bool) -> FeatureSet | None:
        """Embed the target (progress ``embed <name>``) or load the features file."""
        if not self.needs_model:
            return load_features(self.features_path)
        if _is_helper_rank():
            return None
        name, images, issame = self._decode(model, settings)
        batch_size, _ = settings.loader(model.device)
        total = len(images) * (2 if flip else 1)
        meta = {"weights": Path(model.weights).name} if model.weights is not None else None
        with settings.progress(f"embed {name}", total) as advance:
            fs = model.features(images, issame, name=name, flip=flip, batch_size=batch_size, on_batch=advance,
                                meta=meta)
        self.images, self.name = images, fs.name
        out = settings.save_path(fs.name)
        if out is not None:
            settings.notify(f"features: {save_features(out, fs)}")
        return fs

    def _decode(self, model, settings: EmbedSettings):
        from fqtool.eval.targets import decode_target, load_target, resolve_target, target_name

        if settings.align is None:
            _, workers = settings.loader(model.device)
            return decode_target(self.target, model.size, settings.data_dir, workers)
        name = target_name(self.target, resolve_target(self.target, settings.data_dir))
        vset = load_target(self.target, settings.data_dir)
        images, note = settings.align(vset.images, tuple(model.size), name, settings.progress,
                                      model.preprocess.margin)
        if note:
            self.notes.append(note)
        return name, images, np.asarray(vset.issame)

    # ------------------------------------------------------------------------------------------- verify

    def evaluate(self, fs: FeatureSet, options: VerifyOptions) -> tuple[list, list[str]]:
        flip = self.verify_flip(options)
        emb, norms = fs.verification_inputs(flip)
        res = evaluate_verification(emb, fs.issame, protocol=options.protocols[0], folds=options.folds,
                                    xnorm_norms=norms, name=fs.name, flip=flip)
        return [res], self.notes + [f"{fs.name}: {note}" for note in res.warnings]

    # ------------------------------------------------------------------------------------------- ERC

    def qualities(self, fs: FeatureSet, options: ErcOptions, model, settings: EmbedSettings) -> dict:
        """``--method`` qualities (or the model's own), ``--quality-model`` checkpoints, ``--scores``."""
        from fqtool.eval.score_files import load_scores

        qualities = {}
        if options.methods:
            qualities = self._method_qualities(fs, options, model, settings)
        elif options.model_quality:
            qualities[f"model:{fs.quality_method()}"] = fs.quality
        if options.quality_models:
            qualities.update(self._other_models(fs, options, model, settings))
        return add_scores(qualities, options.scores, lambda path: load_scores(path, len(fs.embeddings)))

    def _method_qualities(self, fs: FeatureSet, options: ErcOptions, model, settings: EmbedSettings) -> dict:
        from fqtool.eval.benchmark import no_progress
        from fqtool.eval.methods import NEEDS_MODEL, method_qualities

        work = len(fs.embeddings) * sum(m in NEEDS_MODEL for m in options.methods if m != fs.quality_method())
        batch_size = settings.loader(model.device if model else "cpu")[0]
        progress = settings.progress if work else no_progress
        with progress("quality methods", work) as advance:
            return method_qualities(
                options.methods, fs, model=model.network if model else None, images=self.images,
                device=model.device if model else "cpu", batch_size=batch_size, serfiq=options.serfiq,
                on_batch=advance,
            )

    def _other_models(self, fs: FeatureSet, options: ErcOptions, model, settings: EmbedSettings) -> dict:
        """``--quality-model NAME=WEIGHTS``: each checkpoint's own quality on the set's images."""
        from fqtool.eval.methods import own_quality, parse_quality_model
        from fqtool.models.loading import load_model

        out = {}
        batch_size = settings.loader(model.device)[0]
        for spec in options.quality_models:
            name, path = parse_quality_model(spec)
            if name in out:
                raise FqtoolError(f"two --quality-model entries are named {name!r}")
            onnx = Path(path).suffix.lower() == ".onnx"
            other = load_model(Path(path), device=str(model.device) if onnx else model.device)
            with settings.progress(f"quality {name}", len(fs.embeddings)) as advance:
                out[name] = own_quality(other, self.images, device=model.device, batch_size=batch_size,
                                        on_batch=advance)
        return out

    def curves(self, fs: FeatureSet, qualities: dict, options: ErcOptions):
        from fqtool.eval.erc import compute_curves

        return compute_curves(
            fs.embeddings, fs.issame, qualities, mode=options.mode, fmrs=options.fmrs,
            starting_fnmr=options.starting_fnmr, pair_quality_rule=options.pair_quality,
            metric=options.metric, pauc_limit=options.pauc_limit,
        )
