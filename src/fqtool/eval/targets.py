"""Resolve a verification TARGET: a set name, a ``.bin`` path or a folder with a pairs file.

A bare name (``lfw``, ``cfp_fp``, ``agedb_30``, … or any other) is looked up as ``<name>.bin`` (or a
folder ``<name>/``) in ``--data-dir``, then in ``$FQTOOL_DATA``. The loading itself is
:mod:`fqtool.data.binfile`'s.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fqtool.errors import BadInputError, FqtoolError

ENV_DATA = "FQTOOL_DATA"


def search_dirs(data_dir: str | Path | None) -> list[Path]:
    """Folders a bare name is looked up in: ``data_dir`` then ``$FQTOOL_DATA`` (``os.pathsep``-separated)."""
    dirs = [Path(data_dir)] if data_dir else []
    dirs += [Path(p) for p in os.environ.get(ENV_DATA, "").split(os.pathsep) if p]
    return dirs


def _looks_like_path(target: str) -> bool:
    return any(sep in target for sep in ("/", os.sep)) or target.endswith(".bin") or target.startswith(".")


def resolve_target(target: str, data_dir: str | Path | None = None) -> Path:
    """The ``.bin`` file or pairs folder that ``target`` names; a clear error listing where it looked."""
    path = Path(target).expanduser()
    if path.exists():
        return path
    if _looks_like_path(target):
        raise BadInputError("verification set not found", target)
    dirs = search_dirs(data_dir)
    for folder in dirs:
        for candidate in (folder / f"{target}.bin", folder / target):
            if candidate.exists():
                return candidate
    if not dirs:
        raise FqtoolError(f"verification set {target!r} is not a file; to find {target}.bin by name, "
                          f"give --data-dir or set ${ENV_DATA}")
    where = ", ".join(str(d) for d in dirs)
    raise FqtoolError(f"verification set {target!r} not found (looked for {target}.bin in {where})")


def target_name(target: str, resolved: Path) -> str:
    """Display name: ``lfw`` for ``lfw``, ``/x/lfw.bin`` or the folder ``/x/lfw``."""
    return resolved.stem if resolved.suffix == ".bin" else resolved.name or target


def load_target(target: str, data_dir: str | Path | None = None):
    """Load a TARGET as a ``VerificationSet`` (name, images: list of encoded bytes, issame: bool array)."""
    from fqtool.data import binfile

    path = resolve_target(target, data_dir)
    vset = binfile.load_verification_folder(path) if path.is_dir() else binfile.load_bin(path)
    check_pairs(len(vset.images), np.asarray(vset.issame), path)
    return vset


def check_pairs(num_images: int, issame: np.ndarray, path: str | Path | None = None) -> None:
    """Two images per pair, one label per pair, at least one pair."""
    if num_images % 2:
        raise BadInputError(f"odd number of images ({num_images}); a verification set holds pairs", path)
    if num_images // 2 != len(issame):
        raise BadInputError(
            f"{num_images} images make {num_images // 2} pairs but there are {len(issame)} labels", path
        )
    if num_images == 0:
        raise BadInputError("the verification set is empty", path)



def decode_target(
    target: str, size: tuple[int, int], data_dir: str | Path | None = None, workers: int | None = None
) -> tuple[str, object, np.ndarray]:
    """Load one TARGET (a name, a ``.bin`` or a pairs folder) → ``(name, uint8 images 2P×3×H×W, issame)``."""
    from fqtool.data import binfile

    name = target_name(target, resolve_target(target, data_dir))
    vset = load_target(target, data_dir)
    return name, binfile.decode_pairs(vset, tuple(size), workers=workers or None), np.asarray(vset.issame)


def resolve_ijb(target: str, data_dir: str | Path | None = None) -> tuple[str, Path] | None:
    """``(IJBB|IJBC, set folder)`` when TARGET names an IJB set, else None (then it is a ``.bin`` set).

    ``IJBC`` is looked up as ``IJBC/`` in ``--data-dir`` (an ``IJB_release`` folder) or as ``--data-dir``
    itself; a path to a set folder (``…/IJBC``) is recognised by its meta files.
    """
    from fqtool.data.ijb import SETS, set_name_of

    path = Path(target).expanduser()
    if path.is_dir() and (name := set_name_of(path)):
        return name, path
    if target.upper() not in SETS:
        return None
    name = target.upper()
    dirs = search_dirs(data_dir)
    for folder in dirs:
        for candidate in (folder / name, folder):
            if candidate.is_dir() and set_name_of(candidate) == name:
                return name, candidate
    if any((folder / f"{target}.bin").is_file() for folder in dirs):
        return None  # a .bin set that happens to be called ijbc
    where = ", ".join(str(d) for d in dirs) or "nowhere (give --data-dir or set $FQTOOL_DATA)"
    raise FqtoolError(f"IJB set {name} not found (looked for {name}/meta/{name.lower()}_face_tid_mid.txt "
                      f"in {where})")
