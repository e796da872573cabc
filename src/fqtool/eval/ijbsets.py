"""IJB-B / IJB-C template sets (a set folder or saved IJB features): the benchmark behind ``verify`` (TAR@FAR
with insightface / magface / quality pooling) and ``erc-curve`` (CR-FIQA's ERC on template pairs).

Embedding streams the loose crops in chunks, sharded under torchrun and resumable from
``<features>.parts/`` (:mod:`fqtool.eval.ijb_embed`); the computations are :mod:`fqtool.eval.ijb`'s.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fqtool.errors import FqtoolError
from fqtool.eval.benchmark import EmbedSettings, ErcOptions, VerifyOptions, add_scores
from fqtool.eval.results import IjbResults

IJB_PROTOCOLS = ("insightface", "magface", "quality")


def parts_folder(save: Path | None) -> Path | None:
    """Where IJB embedding chunks go while a run is in progress (resume): ``<features>.parts/``."""
    if save is None:
        return None
    name = save.name if save.name.endswith(".npz") else save.name + ".npz"
    return save.with_name(name[: -len(".npz")] + ".parts")


class IjbSet:
    """An IJB set: ``(name, folder)`` to embed with a model, or a features file (``from_features``)."""

    section = IjbResults

    def __init__(self, name: str | None, root: Path | None, features_path: Path | None = None) -> None:
        self.name, self.root, self.features_path = name or str(features_path), root, features_path
        self.needs_model = features_path is None

    @classmethod
    def from_features(cls, path: str | Path) -> IjbSet:
        return cls(None, None, Path(path))

    # ------------------------------------------------------------------------------------------- checks

    def check_verify(self, options: VerifyOptions) -> None:
        for name in options.protocols:
            if name not in IJB_PROTOCOLS:
                raise FqtoolError(f"unknown --protocol {name!r}; use {', '.join(IJB_PROTOCOLS)}")

    def check_erc(self, options: ErcOptions) -> None:
        if options.mode != "erc" or options.pair_quality != "min" or options.metric != "angular":
            raise FqtoolError(
                "IJB sets use CR-FIQA's protocol: --mode erc, min pair quality, angular distance"
            )
        if options.quality_models:
            raise FqtoolError("--quality-model applies to pair sets (.bin, pairs folder), not IJB")
        options.methods = list(dict.fromkeys(options.methods))

    def check_model(self, model, options: ErcOptions) -> None:
        """A method the saved features cannot hold fails here, before the long embedding run."""
        from fqtool.eval.methods import held_quality

        for method in options.methods:
            held_quality(method, model.quality_method, self.name)

    def pooling(self, protocol: str, options: VerifyOptions):
        from fqtool.eval.ijb import Pooling

        flip = (protocol != "magface") if options.flip is None else options.flip
        return Pooling(protocol, flip, options.norm_score, options.detector_score)

    def verify_flip(self, options: VerifyOptions) -> bool:
        return any(self.pooling(p, options).flip for p in options.protocols)

    def erc_flip(self, options: ErcOptions) -> bool:
        return True if options.flip is None else options.flip

    # ------------------------------------------------------------------------------------------- embed

    def features(self, model, settings: EmbedSettings, *, flip: bool):
        """The set's features: embedded (on every torchrun rank: its shard; None on ranks other than 0)
        or loaded from the features file."""
        from fqtool.eval.ijb import load_ijb_features

        if not self.needs_model:
            return load_ijb_features(self.features_path)
        return self._embed(model, settings, flip)

    def _embed(self, model, settings: EmbedSettings, flip: bool):
        from fqtool.data.ijb import load_ijb
        from fqtool.eval.ijb import save_ijb_features
        from fqtool.eval.ijb_embed import dist_env, embed_ijb

        ijb = load_ijb(self.root, self.name)
        rank, world, _ = dist_env()
        save = settings.save_path(self.name)
        parts = parts_folder(save)
        batch_size, workers = settings.loader(model.device)
        total = len(ijb.images) * (2 if flip else 1)
        shard = f" (rank {rank}/{world})" if world > 1 else ""
        progress = settings.progress if rank == 0 else _silent
        weights = {"weights": Path(model.weights).name} if model.weights is not None else None
        with progress(f"embed {self.name}{shard}", -(-total // world)) as advance:
            feats = embed_ijb(
                model.network, ijb, parts=parts, device=model.device, batch_size=batch_size, workers=workers,
                flip=flip, info=weights, on_batch=lambda n: advance(n * (2 if flip else 1)),
            )
        if feats is not None and save is not None:
            written = save_ijb_features(save, feats)
            if parts is not None:
                shutil.rmtree(parts, ignore_errors=True)
            settings.notify(f"features: {written}")
        return feats

    # ------------------------------------------------------------------------------------------- verify

    def evaluate(self, feats, options: VerifyOptions) -> tuple[list, list[str]]:
        from fqtool.eval.ijb import evaluate_ijb

        model_name = str(feats.meta.get("weights") or (self.features_path.name if self.features_path else ""))
        results, notes = [], []
        for protocol in options.protocols:
            res = evaluate_ijb(feats, self.pooling(protocol, options), model=model_name)
            notes += [f"{feats.name}: {note}" for note in res.warnings]
            results.append(res)
        return results, notes

    # ------------------------------------------------------------------------------------------- ERC

    def qualities(self, feats, options: ErcOptions, model, settings: EmbedSettings) -> dict:
        """``--method`` qualities held in the features (or the model's own) and ``--scores`` files."""
        from fqtool.eval.ijb import load_ijb_quality_csv
        from fqtool.eval.methods import saved_qualities

        if options.methods:  # they replace the model's own quality, as on pair sets
            qualities = saved_qualities(options.methods, feats, feats.name)
        else:
            qualities = {f"model:{feats.quality_method()}": feats.quality} if options.model_quality else {}
        return add_scores(qualities, options.scores, lambda path: load_ijb_quality_csv(path, feats.images))

    def curves(self, feats, qualities: dict, options: ErcOptions):
        from fqtool.eval.ijb import ERC_FMRS
        from fqtool.eval.ijb_erc import ijb_erc

        return ijb_erc(feats, qualities, fmrs=options.fmrs or ERC_FMRS, flip=self.erc_flip(options),
                       pauc_limit=options.pauc_limit)


def _silent(label: str, total: int | None):
    from fqtool.eval.benchmark import no_progress

    return no_progress(label, total)
