"""The quality methods, in one torch-free table: what each needs, its default calibration, where the CLI
offers it. ``face_model``, ``onnx_model``, ``scoring``, ``methods``, the API and ``score``'s ``--method``
choices all read it; adding a method is one entry here plus the code that computes it.

* ``auto``: the model's own quality (its head when it has one, else the norm); ``score`` only.
* ``norm``: MagFace's embedding magnitude; every model has it, and saved features hold it.
* ``head``: the model's quality head (EQFace's, or CR-FIQA's regressor: whichever it has).
* ``crfiqa``: insist on a CR-FIQA regressor.
* ``serfiq``: SER-FIQ, agreement of dropout passes, computed beside the forward pass (training-free).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class QualityMethod:
    """One quality method.

    ``head``: the quality head it needs (``"any"``: whichever the model has; None: none).
    ``computed_by_model``: the network's own forward pass gives it (norm, a head), so it can be made the
    model's quality; otherwise it runs beside the model. ``needs_images``: it must run the model on the
    images again (saved features cannot give it, unless it is the features' own quality). ``saved_in``:
    the saved features' array that always holds it (``norms``).
    ``beside``: the ``fqtool.eval`` module computing a method that runs beside the model (it provides
    ``check_options(options)``, ``check_model(model)`` and ``embed_beside(model, batches, options, *,
    device, precision, on_batch) -> (embeddings, quality)``; ``eval/methods.py:beside_runner`` imports it,
    the table itself imports nothing). ``missing_head_fix``: what to do when the model lacks the head.
    ``constant_cause``: why this quality can be the same for every image (the sanity warning).
    ``calibration``: ``(low, high, why)`` of the 0–100 scale when the checkpoint has none for it.
    ``commands``: the commands whose ``--method`` offers it.
    """

    name: str
    help: str
    head: str | None = None
    head_name: str = ""
    computed_by_model: bool = True
    needs_images: bool = False
    saved_in: str | None = None
    beside: str | None = None
    missing_head_fix: str = ""
    constant_cause: str = "the quality head outputs one value"
    calibration: tuple[float, float, str] | None = None
    commands: tuple[str, ...] = ("score", "erc-curve")


#: SER-FIQ's quality when the passes' embeddings are as far apart as orthogonal unit vectors (2·σ(−√2)).
SERFIQ_UNRELATED = 2.0 / (1.0 + math.exp(math.sqrt(2.0)))

TABLE: tuple[QualityMethod, ...] = (
    QualityMethod("auto", "the model's own", computed_by_model=False, commands=("score", "calibrate")),
    QualityMethod("norm", "MagFace embedding norm", saved_in="norms",
                  constant_cause="the embeddings are unit-norm (L2-normalised outputs carry no quality)",
                  calibration=(10.0, 110.0, "default: MagFace magnitude range l_a=10, u_a=110"),
                  commands=("score", "erc-curve", "calibrate")),
    QualityMethod("head", "the model's quality head: EQFace's, or CR-FIQA's regressor", head="any",
                  head_name="an EQFace quality head", needs_images=True,
                  missing_head_fix="add an EQFace head: --quality-weights",
                  calibration=(0.0, 1.0, "default: head probability 0..1"),
                  commands=("score", "erc-curve", "calibrate")),
    # CCS/NNCCS of a trained model: ~1 = as close to another identity as to its own, ~3 = clearly its own
    QualityMethod("crfiqa", "insist on a CR-FIQA regressor", head="crfiqa",
                  head_name="a CR-FIQA regressor (qs)", needs_images=True,
                  missing_head_fix="use a CR-FIQA checkpoint",
                  calibration=(1.0, 3.0, "default: CR-FIQA certainty ratio 1..3"),
                  commands=("score", "erc-curve", "calibrate")),
    QualityMethod("serfiq", "SER-FIQ: agreement of --serfiq-passes dropout passes; training-free, slower",
                  computed_by_model=False, needs_images=True, beside="serfiq",
                  calibration=(SERFIQ_UNRELATED, 1.0, "default: SER-FIQ 2*sigmoid(-sqrt 2)..1")),
)
BY_NAME = {m.name: m for m in TABLE}

#: Qualities a model computes itself (``set_quality_method``): norm, head, crfiqa.
MODEL_METHODS = tuple(m.name for m in TABLE if m.computed_by_model)
#: Methods served by a quality head.
HEAD_METHODS = tuple(m.name for m in TABLE if m.head is not None)


def names_for(command: str) -> tuple[str, ...]:
    """The ``--method`` choices of ``command`` (``score``, ``erc-curve``, ``calibrate``)."""
    return tuple(m.name for m in TABLE if command in m.commands)


def method(name: str) -> QualityMethod:
    """The table entry of ``name``; an unknown name is a ValueError listing the known ones."""
    if name not in BY_NAME:
        raise ValueError(f"unknown quality method {name!r}; use {', '.join(BY_NAME)}")
    return BY_NAME[name]


def method_help(command: str) -> str:
    """``auto (the model's own), norm (…) … or serfiq (…)``: the ``--method`` help of ``command``."""
    parts = [f"{m.name} ({m.help})" for m in TABLE if command in m.commands]
    return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else "".join(parts)
