"""Each identity is a set of structural parameters (face oval and jaw, skin tone, hair and hairline, eyes,
brows, nose, mouth, ears, optional beard / glasses, identity-specific marks and a stripe texture).
Every image of an identity is rendered with numpy from those parameters plus per-image nuisance: a
small pose change (shift, rotation, scale), expression (mouth and eye opening, gaze), lighting (gain,
colour cast, gradient illumination), a random background and sensor noise. Skin, hair and eye colours
come from small shared palettes, so identities overlap in low-level statistics and a network has to
learn the structure.

A fraction of the images is degraded with a ground-truth level in ``(0, 1]`` (blur, noise,
down-scaling, occlusion or low contrast; level 0 = clean). The level maps are calibrated so that a
level of about 1 destroys the identity for every kind: ``1 - level`` is a ground-truth quality.

:func:`write_synthetic_dataset` writes a training set in insightface's RecordIO layout, a ``.bin``
verification set of held-out identities, the per-image levels as CSV and a manifest.

Three concerns, one module each: :mod:`.faces` draws identities, :mod:`.degrade` degrades images,
:mod:`.dataset` makes samples and writes data sets.
"""

from fqtool.data.synth.dataset import (
    IMAGE_FORMATS,
    JPEG_QUALITY,
    SynthConfig,
    SynthResult,
    SynthSample,
    encode_image,
    encode_jpeg,
    generate_face,
    identity_params,
    iter_train_samples,
    iter_val_pairs,
    make_sample,
    write_synthetic_dataset,
)
from fqtool.data.synth.degrade import CLEAN, DEGRADATION_KINDS, degrade, sample_degradation
from fqtool.data.synth.faces import SIZE, IdentityParams, render_face, sample_identity, to_uint8

__all__ = [
    "CLEAN",
    "DEGRADATION_KINDS",
    "IMAGE_FORMATS",
    "JPEG_QUALITY",
    "SIZE",
    "IdentityParams",
    "SynthConfig",
    "SynthResult",
    "SynthSample",
    "degrade",
    "encode_image",
    "encode_jpeg",
    "generate_face",
    "identity_params",
    "iter_train_samples",
    "iter_val_pairs",
    "make_sample",
    "render_face",
    "sample_degradation",
    "sample_identity",
    "to_uint8",
    "write_synthetic_dataset",
]
