"""What ``fqtool align`` is asked for (``AlignOptions``, recorded in the resume journal) and what it makes
(``AlignedFace`` per crop, ``ImageOutcome`` per image, ``AlignResult`` per run), with the output files'
names and ``faces.csv``'s columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fqtool.align.landmarks import LANDMARK_COLUMNS
from fqtool.data.warp import MAX_SIZE, template
from fqtool.errors import FqtoolError

FACE_POLICIES = ("largest", "best", "all")
FORMATS = ("png", "jpg")
CSV_COLUMNS = ["source", "face", "out", "score", "x1", "y1", "x2", "y2", *LANDMARK_COLUMNS]
FACES_CSV = "faces.csv"
NO_FACE_TXT = "no_face.txt"
UNREADABLE_TXT = "unreadable.txt"
JOURNAL = ".align-journal.jsonl"


@dataclass
class AlignOptions:
    """What ``fqtool align`` was asked for (also recorded in the resume journal)."""

    size: int = 112
    faces: str = "largest"
    min_size: float = 0.0
    threshold: float | None = None
    max_side: int = 640
    #: Detector input enlarged this many times (after ``max_side``): finds smaller faces, costs upscale².
    upscale: float = 1.0
    fmt: str = "png"
    workers: int = 1
    detector: str | None = None
    landmarks: str | None = None
    refine: bool = True
    #: Loose crops (box + this many pixels, not rotated) instead of the five-point template (``None``).
    margin: float | None = None

    def check(self) -> None:
        template(self.size)  # refuses sizes no crop should have (at most MAX_SIZE: no 112000² crops)
        if self.margin is not None and not (0.0 <= self.margin <= 4 * MAX_SIZE):
            raise FqtoolError(f"--margin {self.margin:g}: use 0 to {4 * MAX_SIZE} pixels")
        if self.faces not in FACE_POLICIES:
            raise FqtoolError(f"--faces {self.faces!r}: use {', '.join(FACE_POLICIES)}")
        if self.fmt not in FORMATS:
            raise FqtoolError(f"--format {self.fmt!r}: use {' or '.join(FORMATS)}")
        if self.max_side < 32:
            raise FqtoolError("--max-side must be at least 32 pixels")
        if not 1.0 <= self.upscale <= 4.0:
            raise FqtoolError(f"--upscale must be between 1 and 4, not {self.upscale}")
        if self.detector and self.landmarks:
            raise FqtoolError("give --detector or --landmarks, not both")
        if self.landmarks and self.upscale != 1.0:
            raise FqtoolError("--upscale enlarges the detector input; with --landmarks nothing is detected")

    def journal_key(self) -> dict:
        key = asdict(self)
        key.pop("workers")
        if key["upscale"] == 1.0:
            key.pop("upscale")  # runs journalled before --upscale existed still resume
        if key["margin"] is None:
            key.pop("margin")  # the same for --margin
        return key


@dataclass
class AlignedFace:
    """One crop: where it came from, where it went, the detector's score, box and landmarks."""

    source: str
    face: int
    out: str
    score: float
    box: np.ndarray
    landmarks: np.ndarray

    def row(self) -> list[str]:
        numbers = [*np.asarray(self.box, np.float64).ravel(), *np.asarray(self.landmarks, np.float64).ravel()]
        return [self.source, str(self.face), self.out, f"{self.score:.4f}", *(f"{v:.2f}" for v in numbers)]

    @classmethod
    def from_row(cls, row: Sequence) -> AlignedFace:
        values = np.array([float(v) for v in row[4:]], dtype=np.float64)
        return cls(str(row[0]), int(row[1]), str(row[2]), float(row[3]), values[:4], values[4:].reshape(5, 2))


@dataclass
class ImageOutcome:
    """What happened to one input image."""

    source: str
    faces: list[AlignedFace] = field(default_factory=list)
    status: str = "ok"  # ok | no_face | unreadable
    reason: str = ""
    #: The source file's identity when it was read (fsutil.source_identity): a resumed run redoes an image
    #: whose file changed or is another input's with the same name.
    identity: str = ""


@dataclass
class AlignResult:
    """A finished run: crops made, images without a face, unreadable files, timing."""

    faces: list[AlignedFace]
    no_face: list[str]
    unreadable: list[tuple[str, str]]
    images: int
    resumed: int
    seconds: float
    output: Path
    detector: str

    @property
    def images_per_second(self) -> float:
        done = self.images - self.resumed
        return done / self.seconds if self.seconds > 0 else 0.0
