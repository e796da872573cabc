"""``fqtool align``: photos → aligned crops, ``faces.csv`` and ``no_face.txt``; also used inline by
``score --align`` and ``verify --align``.

INPUT is a folder (scanned recursively; sub-folders are mirrored in OUTPUT), a list file or one image.
Each image is decoded with its EXIF orientation applied (CMYK, grey and palette images become RGB), faces
come from the detector or from ``--landmarks``, a policy picks which to keep, and each kept face is warped
to the five-point template. Crops are written atomically as they are made; a journal of finished images
lets an interrupted run resume; ``faces.csv`` and ``no_face.txt`` are written last, atomically.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from fqtool.align.detectors import Detections, FaceDetector, load_detector
from fqtool.align.landmarks import GivenFace, landmarks_problem, read_landmarks
from fqtool.align.outputs import (
    _crop_name,
    _identity,
    _Journal,
    _write_crop,
    _write_lines,
    encode_crop,
    out_names,
    write_faces_csv,
)
from fqtool.align.records import (
    CSV_COLUMNS,
    FACE_POLICIES,
    FACES_CSV,
    FORMATS,
    JOURNAL,
    NO_FACE_TXT,
    UNREADABLE_TXT,
    AlignedFace,
    AlignOptions,
    AlignResult,
    ImageOutcome,
)
from fqtool.data.decode import IMAGE_EXTENSIONS, decode_rgb_array, read_image_file, resize_if_needed
from fqtool.data.lists import check_names
from fqtool.data.walk import walk_images
from fqtool.data.warp import (
    MAX_SIZE,
    TEMPLATE_112,
    loose_crop,
    norm_crop,
    umeyama,
    warp_affine_fast,
)
from fqtool.errors import BadInputError, FormatError, FqtoolError
from fqtool.fsutil import ensure_dir

__all__ = [
    "CSV_COLUMNS",
    "FACES_CSV",
    "FACE_POLICIES",
    "FORMATS",
    "JOURNAL",
    "NO_FACE_TXT",
    "UNREADABLE_TXT",
    "AlignOptions",
    "AlignResult",
    "AlignedFace",
    "Aligner",
    "ImageOutcome",
    "align_images",
    "align_input",
    "decode_rgb",
    "encode_crop",
    "out_names",
    "write_faces_csv",
    "first_off_size",
    "list_inputs",
    "select_faces",
]

#: Refinement pass: the face at 1.5× the 112 template with 84 px of context each side (a 336 px canvas).
REFINE_SCALE = 1.5
REFINE_MARGIN = 84.0
#: Images smaller than this (either side) cannot hold a detectable face; they go to no_face.txt.
MIN_IMAGE_SIDE = 8

# ----------------------------------------------------------------------------------------------- input


def decode_rgb(data: bytes, source: str | Path | None = None) -> np.ndarray:
    """Encoded bytes → H×W×3 RGB uint8 through fqtool's one decoder (EXIF orientation applied, 16-bit
    and CMYK/grey/palette converted, pixel cap)."""
    return decode_rgb_array(data, str(source) if source is not None else "")


def read_rgb(path: str | Path) -> np.ndarray:
    return decode_rgb(read_image_file(path), path)


def _scan(folder: Path, skip: Path | None) -> list[str]:
    return walk_images(folder, skip_dir=skip)


def list_inputs(input_path: str | Path, skip: str | Path | None = None) -> tuple[Path, list[str]]:
    """(root, image names relative to it with ``/``) for a folder, a list file or one image.

    ``skip``: a folder not to descend into (the output folder when it lies inside the input)."""
    path = Path(input_path)
    if path.is_dir():
        return path, _scan(path, Path(skip).resolve() if skip else None)
    if not path.exists():
        raise BadInputError("no such file or folder", path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return path.parent, [path.name]
    if path.suffix.lower() in (".rec", ".idx", ".bin"):
        raise BadInputError(f"alignment reads image files (a folder, a list file or an image), not a "
                            f"{path.suffix} file; convert it first (fqtool convert-rec)", path)
    from fqtool.data.lists import read_list

    entries = read_list(path)
    root = Path(entries.root)
    names = []
    for p in entries.paths:
        rel = os.path.relpath(p, root) if os.path.isabs(p) else p
        names.append(rel.replace(os.sep, "/"))
    return root, names


def first_off_size(images, size: tuple[int, int], sample: int = 8) -> tuple[int, int] | None:
    """The (H, W) of the first of a dataset's first ``sample`` images whose size is not ``size``, read from
    the file header only; None when they all fit (or none can be read)."""
    for i in range(min(sample, len(images))):
        try:
            with Image.open(io.BytesIO(images.load_bytes(i))) as pil:
                hw = (pil.height, pil.width)
        except Exception:  # an unreadable image is reported by the scoring itself
            continue
        if hw != tuple(size):
            return hw
    return None


# ----------------------------------------------------------------------------------------------- faces


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def select_faces(found: Detections, policy: str = "largest", min_size: float = 0.0) -> Detections:
    """Faces kept by ``policy`` among those at least ``min_size`` pixels wide and high (best first)."""
    if not len(found):
        return found
    boxes = found.boxes
    big = np.flatnonzero(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= min_size)
    found = found.take(big)
    if not len(found) or policy == "all":
        return found
    if policy == "best":
        return found.take([int(np.argmax(found.scores))])
    return found.take([int(np.argmax(_areas(found.boxes)))])


def _given_to_detections(faces: list[GivenFace]) -> Detections:
    return Detections(
        np.stack([f.box for f in faces]).astype(np.float32),
        np.array([f.score for f in faces], dtype=np.float32),
        np.stack([f.landmarks for f in faces]).astype(np.float32),
    )


class Aligner:
    """Finds faces (detector or given landmarks), applies the policy and warps them."""

    def __init__(self, options: AlignOptions, detector: FaceDetector | None = None,
                 given: dict[str, list[GivenFace]] | None = None) -> None:
        self.options = options
        self.given = given
        self.detector = detector
        if given is None and detector is None:
            threads = max(1, _cpus() // max(1, options.workers)) if options.workers > 1 else 0
            self.detector = load_detector(options.detector, threshold=options.threshold,
                                          max_side=options.max_side, threads=threads)
        if self.detector is not None:
            self.detector.check_upscale(options.upscale)

    @property
    def source_name(self) -> str:
        if self.given is not None:
            return f"landmarks ({Path(self.options.landmarks or '').name})"
        return self.detector.name

    def faces(self, image: np.ndarray, name: str = "") -> Detections:
        if self.given is not None:
            found = _given_to_detections(self.given[name]) if name in self.given else Detections.empty()
        elif min(image.shape[:2]) < MIN_IMAGE_SIDE:
            found = Detections.empty()
        else:
            found = self.detector.detect(image, self.options.upscale)
        return select_faces(found, self.options.faces, self.options.min_size)

    def crops(self, image: np.ndarray, name: str = "") -> tuple[Detections, list[np.ndarray]]:
        found = self.faces(image, name)
        found = found.take([k for k, lm in enumerate(found.landmarks) if landmarks_problem(lm) is None])
        size, margin = self.options.size, self.options.margin
        if margin is not None:  # loose crops need only the box
            return found, [loose_crop(image, box, margin, size) for box in found.boxes]
        if self.options.refine and self.given is None and len(found):
            found.landmarks = np.stack([self.refined(image, lm) for lm in found.landmarks])
        return found, [norm_crop(image, lm, size) for lm in found.landmarks]

    def refined(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Landmarks detected again on the face brought upright at 1.5× template size with context around.

        The embedded detector's landmarks are least accurate for small and rolled faces; a second look at
        the roughly aligned face fixes most of that (measured in docs/align.md). Falls back to the first
        landmarks when the second pass finds no face near the centre."""
        matrix = umeyama(landmarks, TEMPLATE_112.astype(np.float64) * REFINE_SCALE + REFINE_MARGIN)[:2]
        side = int(round(112 * REFINE_SCALE + 2 * REFINE_MARGIN))
        again = self.detector.detect(warp_affine_fast(image, matrix, side))
        if not len(again):
            return landmarks
        centre = 56 * REFINE_SCALE + REFINE_MARGIN
        distance = np.abs(again.landmarks.mean(axis=1) - centre).max(axis=1)
        best = int(np.argmin(distance))
        if distance[best] > 0.25 * side:
            return landmarks
        back = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
        return (again.landmarks[best] @ back[:, :2].T + back[:, 2]).astype(np.float32)


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# ----------------------------------------------------------------------------------------------- runs


def _process(aligner: Aligner, root: Path, output: Path, source: str, stem: str) -> ImageOutcome:
    options = aligner.options
    identity = _identity(root / source)
    try:
        image = read_rgb(root / source)
    except BadInputError as exc:
        return ImageOutcome(source, status="unreadable", reason=str(exc).removeprefix(f"{root / source}: "),
                            identity=identity)
    found, crops = aligner.crops(image, source)
    if not crops:
        return ImageOutcome(source, status="no_face", identity=identity)
    faces = []
    for k, crop in enumerate(crops):
        out = _crop_name(stem, k, options.faces, options.fmt)
        _write_crop(output / out, encode_crop(crop, options.fmt))
        faces.append(AlignedFace(source, k, out, float(found.scores[k]), found.boxes[k], found.landmarks[k]))
    return ImageOutcome(source, faces, identity=identity)


def _ordered(executor: ThreadPoolExecutor | None, fn: Callable, items: list, ahead: int) -> Iterator:
    """``map`` that keeps at most ``ahead`` tasks in flight (so a huge folder is not queued at once)."""
    if executor is None:
        yield from map(fn, items)
        return
    pending = []
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()


def align_input(
    input_path: str | Path,
    output: str | Path,
    options: AlignOptions | None = None,
    *,
    aligner: Aligner | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> AlignResult:
    """Align every image of ``input_path`` into ``output`` (crops, ``faces.csv``, ``no_face.txt``)."""
    options = options or AlignOptions()
    options.check()
    output = Path(output)
    if output.resolve() == Path(input_path).resolve():
        raise FqtoolError("OUTPUT must not be the INPUT folder", output)
    root, sources = list_inputs(input_path, skip=output if output.exists() else None)
    if output.resolve().is_relative_to(root.resolve()) and Path(input_path).is_dir():
        inside = output.resolve().relative_to(root.resolve()).as_posix() + "/"
        sources = [s for s in sources if not s.startswith(inside)]
    if not sources:
        raise BadInputError("no images found (looked for " + ", ".join(sorted(IMAGE_EXTENSIONS)) + ")",
                            input_path)
    check_names(sources)  # faces.csv and no_face.txt name every source: refused now, not after the crops
    if aligner is None:
        given = read_landmarks(options.landmarks, set(sources)) if options.landmarks else None
        aligner = Aligner(options, given=given)
    ensure_dir(output)
    journal = _Journal(output, options)
    stems = out_names(sources, options.fmt)
    done = journal.load(output, root, stems)
    todo = [s for s in sources if s not in done]
    if on_progress is not None and len(done):
        on_progress(len(sources) - len(todo))
    outcomes = dict(done)
    began = time.perf_counter()
    workers = max(1, int(options.workers))
    journal.open(done.values())
    finished = False
    try:
        with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as executor:
            def work(s: str) -> ImageOutcome:
                return _process(aligner, root, output, s, stems[s])

            for outcome in _ordered(executor, work, todo, ahead=4 * workers):
                outcomes[outcome.source] = outcome
                journal.add(outcome)
                if on_progress is not None:
                    on_progress(1)
        ordered = [outcomes[s] for s in sources]
        faces = [f for o in ordered for f in o.faces]
        no_face = [o.source for o in ordered if o.status == "no_face"]
        unreadable = [(o.source, o.reason) for o in ordered if o.status == "unreadable"]
        write_faces_csv(output / FACES_CSV, faces)
        _write_lines(output / NO_FACE_TXT, no_face)
        _write_lines(output / UNREADABLE_TXT, [f"{s}\t{r}" for s, r in unreadable])
        finished = True
    except FormatError as exc:
        if exc.path is None and options.detector:  # the detector graph's output layout, not an image
            raise FormatError(str(exc), options.detector) from None
        raise
    finally:
        journal.close(finished or not outcomes)  # no image finished: nothing to resume, no journal left
    return AlignResult(faces, no_face, unreadable, len(sources), len(done),
                       time.perf_counter() - began, output, aligner.source_name)


def align_images(
    images: Sequence[bytes],
    size: int = 112,
    aligner: Aligner | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Encoded images → (N×size×size×3 uint8 crops of the kept face, indices with no face or unreadable).

    For ``verify --align``: an image without a face is resized whole (as without ``--align``), so the
    pairs stay complete; the caller reports the indices."""
    aligner = aligner or Aligner(AlignOptions(size=size))
    out = np.zeros((len(images), size, size, 3), dtype=np.uint8)
    missed: list[int] = []
    for i, data in enumerate(images):
        try:
            image = decode_rgb(data, f"image {i}")
        except BadInputError:
            missed.append(i)
            if on_progress is not None:
                on_progress(1)
            continue
        _, crops = aligner.crops(image)
        if crops:
            out[i] = crops[0]
        else:
            missed.append(i)
            out[i] = _resized(image, size)
        if on_progress is not None:
            on_progress(1)
    return out, missed


def _resized(image: np.ndarray, size: int) -> np.ndarray:
    """A whole image squashed to size×size by the resize every other path uses."""
    import torch

    chw = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    return resize_if_needed(chw, (size, size)).permute(1, 2, 0).numpy()


def crop_size_for(model_size: Sequence[int]) -> int:
    """The crop size to align to for a model input (H, W): its side when square (the template scaled to
    it, so a 160×160 model gets 160×160 crops, not 112 ones stretched), else 112 (then resized)."""
    height, width = (int(v) for v in model_size)
    if height == width and 16 <= height <= MAX_SIZE:
        return height
    return 112

