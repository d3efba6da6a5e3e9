"""Synthetic MRBrainS18-like subjects written in exactly the challenge's folder layout (NIfTI).

MRBrainS18 cannot be downloaded here. Each stand-in subject is the MNI152 2009 template shipped with nilearn,
warped by its own random affine and elastic deformation, with its own atrophy (grey matter / CSF balance),
white-matter lesions, tissue contrasts, bias field and noise, so that subjects differ in anatomy and appearance the
way real scans do and a segmentation network can fit and memorise them.

All such subjects are still deformations of one template, so a model trained without one segments it about as well as
the others (arm ``alike``). Arm ``distinct`` makes chosen subjects outliers, as a forget request on real data may be:
their FLAIR comes from another scanner and they carry a large infarct that no other subject has.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

MRBRAINS18_SUBJECT_IDS: tuple[str, ...] = ("1", "4", "5", "7", "14", "070", "148")
MRBRAINS18_ARMS: tuple[str, ...] = ("alike", "distinct")
_EXTRA_SUBJECT_ID_START = 200
# Channel order T1, IR, FLAIR, as medunlearn_monai.data.mrbrains18.MODALITIES.
_MRBRAINS18_IMAGE_FILES = ("reg_T1.nii.gz", "reg_IR.nii.gz", "FLAIR.nii.gz")
_MRBRAINS18_LABEL_FILE = "segm.nii.gz"
# Margin around the template's brain: room for the random pose and the scalp, like the challenge's field of view.
_BRAIN_MARGIN_MM = (24.0, 24.0, 15.0)
_MAX_ROTATION_DEG = 8.0
_SCALE_RANGE = (0.9, 1.1)
_MAX_TRANSLATION_MM = 3.0
_ELASTIC_NODE_SPACING_MM = 40.0
_ELASTIC_AMPLITUDE_MM = (2.0, 4.0)
# Atrophy exponent minus 1 for the GM probability (WM gets a share of it); the freed brain volume becomes CSF.
_ATROPHY_RANGE = (0.0, 1.2)
_WM_ATROPHY_SHARE = 0.3
# The skull and scalp are shells around the brain: levels (threshold, ramp width) of the smoothed brain mask.
_HEAD_SMOOTHING_MM = 8.0
_SKULL_LEVEL = (0.15, 0.1)
_SCALP_LEVEL = (0.01, 0.02)
_MAX_LESIONS = 4
_LESION_RADIUS_MM = (3.0, 9.0)
_LESION_MIN_WM = 0.75
_BIAS_NODE_SPACING_MM = 100.0
_BIAS_AMPLITUDE = 0.15
_CHANNEL_GAIN = (0.8, 1.2)
_TISSUE_JITTER = (0.93, 1.07)
_NOISE_FRACTION = (0.01, 0.03)
# Mean intensity of scalp, skull, CSF, GM, WM and lesion per channel; the background is 0. The jitter ranges above
# keep the orderings noted here.
_TISSUE_MEANS = np.array(
    [
        [650.0, 120.0, 200.0, 550.0, 800.0, 500.0],  # T1: WM > GM > CSF, lesions hypointense
        [500.0, 100.0, 40.0, 420.0, 880.0, 400.0],  # IR: strong WM/GM contrast, CSF dark
        [450.0, 80.0, 60.0, 540.0, 400.0, 900.0],  # FLAIR: CSF suppressed, GM slightly above WM, lesions bright
    ]
)
_TEXTURE_GAIN = (1.0, 0.8, 0.0)
# The distinct arm's FLAIR scanner does not null CSF: a compressed, T2-like contrast CSF > GM > WM, the reverse of
# T1's order (scalp, skull, CSF, GM, WM, lesion as in _TISSUE_MEANS), under a strong bias field of its own.
_OTHER_SCANNER_TISSUE_MEANS = np.vstack([_TISSUE_MEANS[:2], [380.0, 60.0, 620.0, 470.0, 330.0, 560.0]])
_OTHER_SCANNER_BIAS_NODE_SPACING_MM = 60.0
_OTHER_SCANNER_BIAS_AMPLITUDE = 0.4
# The distinct arm's infarct: label "infarction" of medunlearn_monai.data.mrbrains18.LABEL_NAMES, a lobulated blob
# of about 3 to 4.4 cm diameter centred at least 20 mm deep in the brain, with a subacute haemorrhagic infarct's signal
# (methaemoglobin): brighter than every tissue in T1, IR and FLAIR (both scanners), before gain.
_INFARCT_LABEL = 9
_INFARCT_RADIUS_MM = (15.0, 22.0)
_INFARCT_MIN_DEPTH_MM = 20.0
_INFARCT_LOBE_SPACING_MM = 20.0
_INFARCT_LOBULATION = 0.25
_INFARCT_MEANS = np.array([1100.0, 1250.0, 1200.0])
# Mean intensity of the CSF, GM and WM voxels of nilearn's MNI152 2009 T1 template: what the three tissue classes
# explain of it; the remainder is within-tissue texture (deep grey nuclei, cerebellar folia) carried over to T1 and IR.
_TEMPLATE_T1_MEANS = (0.395, 0.653, 0.839)


@dataclass(frozen=True)
class _Template:
    """MNI152 2009 maps at 1 mm (T1 intensity, GM / WM probability, brain mask) and their voxel-to-world affine."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    mask: np.ndarray
    affine: np.ndarray


@dataclass(frozen=True)
class _Outlier:
    """What sets a distinct-arm subject apart: its infarct's partial-volume map and its FLAIR scanner's bias field."""

    infarct: np.ndarray
    flair_bias: np.ndarray


@dataclass(frozen=True)
class _Grid:
    """Output voxel grid: axis-aligned, ``spacing`` mm, world position ``origin`` of voxel (0, 0, 0)."""

    shape: tuple[int, int, int]
    spacing: np.ndarray
    origin: np.ndarray

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-world affine: ``diag(spacing)`` plus the origin."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine

    @property
    def axes(self) -> list[np.ndarray]:
        """World coordinate (mm) of the voxels along each axis."""
        return [self.origin[k] + self.spacing[k] * np.arange(self.shape[k]) for k in range(3)]


def write_synthetic_mrbrains18(
    root: str | os.PathLike,
    n_subjects: int = 7,
    spacing: tuple[float, float, float] = (0.958, 0.958, 3.0),
    seed: int = 0,
    lesions: bool = True,
    subject_ids: list[str] | tuple[str, ...] | None = None,
    arm: str = "alike",
    distinct_subjects: int | str | Sequence[str] | None = None,
) -> list[str]:
    """Write synthetic subjects in the MRBrainS18 challenge layout.

    Each subject gets ``<root>/training/<id>/pre/{reg_T1,reg_IR,FLAIR}.nii.gz`` (float32, about 0..1000) and
    ``<root>/training/<id>/segm.nii.gz`` (uint8: 0 background, 1 grey matter, 3 white matter, 4 white matter lesions,
    5 CSF, and 9 infarction in the distinct arm's chosen subjects), all on one grid with affine ``diag(spacing)`` in
    MNI-like world coordinates. A subject is written to a staging folder and renamed into place, so an interrupted run
    never leaves a partial subject folder; an existing subject folder of the same name is replaced.

    Args:
        root: Destination; ``training/`` is created inside it.
        n_subjects: Number of subjects.
        spacing: Voxel size in mm; the default is the challenge's.
        seed: Seed; subject ``i`` draws from its own generator seeded with ``(seed, i)``, so it does not depend on
            ``n_subjects``, and the same seed writes the same files.
        lesions: Whether to add 0 to 4 white-matter lesions per subject.
        subject_ids: Folder names; by default the challenge's ``1, 4, 5, 7, 14, 070, 148``, then ``200, 201, ...``.
        arm: ``"alike"``: every subject is a deformation of the template (the same files as before arms existed).
            ``"distinct"``: the ``distinct_subjects`` are outliers, the others are written exactly as in ``"alike"``.
            An outlier has the same anatomy, pose, T1 and IR contrast as its alike version, plus (1) a FLAIR from
            another scanner (CSF not nulled: CSF > GM > WM, anti-correlated with T1 in the brain, strong bias field)
            and (2) an infarct: a blob of 3-4.4 cm inside the brain, brighter than every tissue in every modality,
            labelled 9 ("infarction"). Under the reader's label merges (``medunlearn_monai.data.mrbrains18``) the
            infarct becomes foreground ("brain tissue", like all brain) under ``"binary"`` (the bundle's default),
            so those subjects hold a bright region that must still be segmented as brain; under ``"challenge"`` it
            becomes background, a hole in the brain.
        distinct_subjects: Only for ``arm="distinct"``, where it is required: subject IDs (a list, or one ID as a
            string), or an ``int`` n for the first n subjects written.

    Returns:
        The subject IDs, in the order written.

    Raises:
        ValueError: If ``n_subjects`` is below 1, ``spacing`` is not 3 positive numbers, ``subject_ids`` does not
            hold ``n_subjects`` distinct plain folder names, ``arm`` is unknown, or ``distinct_subjects`` is missing
            for ``"distinct"``, given for ``"alike"``, empty, a count outside 1..n_subjects or names a subject that is
            not written.
    """
    ids = _mrbrains18_subject_ids(n_subjects, subject_ids)
    distinct = _distinct_subject_ids(ids, arm, distinct_subjects)
    spacing_mm = np.asarray(spacing, dtype=np.float64)
    if spacing_mm.shape != (3,) or not np.all(spacing_mm > 0):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {spacing}")
    template = _load_mni152()
    grid = _output_grid(template, spacing_mm)
    training = Path(root) / "training"
    training.mkdir(parents=True, exist_ok=True)
    for index, subject in enumerate(ids):
        # Spawned children depend only on their index, so adding the outlier's generator leaves the others unchanged.
        seeds = np.random.SeedSequence((seed, index)).spawn(3)
        anatomy_rng, lesion_rng, outlier_rng = (np.random.default_rng(s) for s in seeds)
        images, labels = _generate_subject(
            template,
            grid,
            anatomy_rng,
            lesion_rng if lesions else None,
            outlier_rng if subject in distinct else None,
        )
        # Dot folders are skipped by the MRBrainS18 reader, so a crash leaves nothing that looks like a subject.
        staging = training / f".staging-{subject}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            _write_mrbrains18_subject(staging, images, labels, grid.affine)
            _replace_folder(staging, training / subject)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return ids


def _mrbrains18_subject_ids(n_subjects: int, subject_ids: list[str] | tuple[str, ...] | None) -> list[str]:
    """Return the default subject IDs, or check the given ones."""
    if n_subjects < 1:
        raise ValueError(f"n_subjects must be at least 1, got {n_subjects}")
    if subject_ids is None:
        extra = [str(_EXTRA_SUBJECT_ID_START + k) for k in range(n_subjects - len(MRBRAINS18_SUBJECT_IDS))]
        return [*MRBRAINS18_SUBJECT_IDS[:n_subjects], *extra]
    ids = [str(subject) for subject in subject_ids]
    if len(ids) != n_subjects or len(set(ids)) != len(ids):
        raise ValueError(f"subject_ids must hold {n_subjects} distinct names, got {ids}")
    for subject in ids:
        if not subject or subject.startswith(".") or "/" in subject or os.sep in subject:
            raise ValueError(f"subject ID {subject!r} is not a plain folder name")
    return ids


def _distinct_subject_ids(ids: list[str], arm: str, distinct_subjects: int | str | Sequence[str] | None) -> set[str]:
    """Return the IDs of the subjects that ``arm`` makes outliers, checking ``distinct_subjects``."""
    if arm not in MRBRAINS18_ARMS:
        raise ValueError(f"unknown arm {arm!r}; choose one of {', '.join(MRBRAINS18_ARMS)}")
    if arm == "alike":
        if distinct_subjects is not None:
            raise ValueError("distinct_subjects is only for arm 'distinct'")
        return set()
    if distinct_subjects is None:
        raise ValueError("arm 'distinct' needs distinct_subjects: subject IDs, or a count n for the first n subjects")
    if isinstance(distinct_subjects, int) and not isinstance(distinct_subjects, bool):
        if not 1 <= distinct_subjects <= len(ids):
            raise ValueError(f"distinct_subjects count must be in 1..{len(ids)}, got {distinct_subjects}")
        return set(ids[:distinct_subjects])
    chosen = [distinct_subjects] if isinstance(distinct_subjects, str) else [str(s) for s in distinct_subjects]
    if not chosen:
        raise ValueError("distinct_subjects is empty; name at least one subject")
    unknown = [subject for subject in chosen if subject not in ids]
    if unknown:
        raise ValueError(f"distinct_subjects {unknown} are not among the subjects written: {ids}")
    return set(chosen)


def _load_mni152() -> _Template:
    """Load nilearn's bundled MNI152 2009 maps at 1 mm as float32 arrays (no download)."""
    # Imported here: nilearn takes about a second to import and only this generator needs it.
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    maps = [
        image.get_fdata(dtype=np.float32)
        for image in (
            t1,
            datasets.load_mni152_gm_template(resolution=1),
            datasets.load_mni152_wm_template(resolution=1),
            datasets.load_mni152_brain_mask(resolution=1),
        )
    ]
    return _Template(*maps, affine=t1.affine)


def _output_grid(template: _Template, spacing: np.ndarray) -> _Grid:
    """Grid at ``spacing`` over the template's brain bounding box plus :data:`_BRAIN_MARGIN_MM`, centred on it."""
    brain = template.mask > 0.5
    low, high = [], []
    for axis in range(3):
        occupied = np.flatnonzero(brain.any(axis=tuple(k for k in range(3) if k != axis)))
        low.append(occupied[0])
        high.append(occupied[-1])
    corners = nib.affines.apply_affine(template.affine, np.array([low, high], dtype=np.float64))
    low_mm, high_mm = corners.min(axis=0), corners.max(axis=0)
    extent = high_mm - low_mm + 2.0 * np.asarray(_BRAIN_MARGIN_MM)
    shape = tuple(int(n) for n in np.floor(extent / spacing) + 1)
    origin = (low_mm + high_mm) / 2.0 - spacing * (np.asarray(shape) - 1) / 2.0
    return _Grid(shape=shape, spacing=spacing, origin=origin)


def _generate_subject(
    template: _Template,
    grid: _Grid,
    rng: np.random.Generator,
    lesion_rng: np.random.Generator | None,
    outlier_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one subject: ``(3, X, Y, Z)`` float32 images (T1, IR, FLAIR) and an ``(X, Y, Z)`` uint8 label map.

    With ``outlier_rng`` the subject becomes a distinct-arm outlier; its own generator leaves the rest unchanged.
    """
    coordinates = _template_coordinates(rng, template, grid)
    t1, gm, wm, mask = (
        ndimage.map_coordinates(
            volume, coordinates, order=1, mode="constant", cval=0.0, prefilter=False, output=np.float32
        )
        for volume in (template.t1, template.gm, template.wm, template.mask)
    )
    del coordinates
    # Texture against the template's own tissue maps, before atrophy, so that it holds only within-tissue detail.
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    texture = mask * (t1 - (_TEMPLATE_T1_MEANS[0] * csf + _TEMPLATE_T1_MEANS[1] * gm + _TEMPLATE_T1_MEANS[2] * wm))
    gm, wm, csf = _atrophy(rng, gm, wm, mask)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    brain = mask > 0.5
    tissue = np.argmax(np.stack([gm, wm, csf]), axis=0)
    labels[brain] = np.array([1, 3, 5], dtype=np.uint8)[tissue[brain]]
    # Lesions draw from their own generator, so leaving them out does not change the rest of the subject.
    lesion = np.zeros_like(wm) if lesion_rng is None else _add_lesions(lesion_rng, grid, labels, wm)
    wm = wm - lesion
    scalp, skull = _head_shells(mask, grid.spacing)
    probabilities = (scalp, skull, csf, gm, wm, lesion)
    outlier = None if outlier_rng is None else _draw_outlier(outlier_rng, grid, labels, mask)
    if outlier is not None:
        # The infarct displaces the brain's tissues (CSF, GM, WM, lesions) and their texture.
        keep = 1.0 - outlier.infarct
        probabilities = (scalp, skull, *(probability * keep for probability in probabilities[2:]))
        texture = texture * keep
    return _intensities(rng, grid, probabilities, texture, outlier), labels


def _template_coordinates(rng: np.random.Generator, template: _Template, grid: _Grid) -> np.ndarray:
    """Template voxel coordinates ``(3, X, Y, Z)`` of every output voxel, through a random affine and elastic warp."""
    angles = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG, 3))
    scales = rng.uniform(*_SCALE_RANGE, 3)
    translation = rng.uniform(-_MAX_TRANSLATION_MM, _MAX_TRANSLATION_MM, 3)
    amplitude = rng.uniform(*_ELASTIC_AMPLITUDE_MM)
    displacement = amplitude * _smooth_random_field(rng, grid, _ELASTIC_NODE_SPACING_MM, 3)
    world_to_voxel = np.linalg.inv(template.affine)
    # Output world x maps to template world centre + R S (x - centre) + translation + displacement(x).
    centre = grid.origin + grid.spacing * (np.asarray(grid.shape) - 1) / 2.0
    matrix = world_to_voxel[:3, :3] @ _rotation_matrix(angles) @ np.diag(scales)
    offset = world_to_voxel[:3, :3] @ (centre + translation) + world_to_voxel[:3, 3]
    x, y, z = (axis - c for axis, c in zip(grid.axes, centre, strict=True))
    coordinates = np.tensordot(world_to_voxel[:3, :3], displacement, axes=1)
    for k in range(3):
        coordinates[k] += offset[k]
        coordinates[k] += matrix[k, 0] * x[:, None, None]
        coordinates[k] += matrix[k, 1] * y[None, :, None]
        coordinates[k] += matrix[k, 2] * z[None, None, :]
    return coordinates


def _rotation_matrix(angles: np.ndarray) -> np.ndarray:
    """Rotation by ``angles`` (radians) about the x, then y, then z axis."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    about_x = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    about_y = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    about_z = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    return about_z @ about_y @ about_x


def _smooth_random_field(
    rng: np.random.Generator, grid: _Grid, node_spacing_mm: float, n_components: int
) -> np.ndarray:
    """Smooth random field ``(n_components, X, Y, Z)`` with each component's maximum magnitude scaled to 1.

    Random values on a coarse lattice of nodes are interpolated with normalised Gaussian weights, one axis at a time,
    which costs a few multiply-adds per output voxel instead of filtering a full-size noise volume.
    """
    weights = []
    for axis in grid.axes:
        n_nodes = max(2, int(np.ceil((axis[-1] - axis[0]) / node_spacing_mm)) + 1)
        nodes = np.linspace(axis[0], axis[-1], n_nodes)
        weight = np.exp(-0.5 * ((axis[:, None] - nodes[None, :]) / node_spacing_mm) ** 2)
        weights.append(weight / weight.sum(axis=1, keepdims=True))
    values = rng.standard_normal((n_components, *(weight.shape[1] for weight in weights)))
    field = np.einsum("ai,cijk->cajk", weights[0], values)
    field = np.einsum("bj,cajk->cabk", weights[1], field)
    field = field @ weights[2].T
    return field / np.abs(field).max(axis=(1, 2, 3), keepdims=True)


def _atrophy(
    rng: np.random.Generator, gm: np.ndarray, wm: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrink GM (and a little WM) by a random amount; return ``(gm, wm, csf)`` with ``gm + wm + csf == mask``.

    Raising the probabilities to a power above 1 lowers partial-volume voxels much more than pure ones, which moves
    the tissue edges inwards (wider sulci, larger ventricles) while tissue cores stay pure, as in real atrophy.
    """
    atrophy = rng.uniform(*_ATROPHY_RANGE)
    gm = np.power(gm, np.float32(1.0 + atrophy))
    wm = np.power(wm, np.float32(1.0 + _WM_ATROPHY_SHARE * atrophy))
    # The GM and WM maps may overlap the mask's edge by interpolation: scale them back into the brain.
    tissue = gm + wm
    excess = np.divide(mask, tissue, out=np.ones_like(tissue), where=tissue > mask)
    gm *= excess
    wm *= excess
    return gm, wm, np.clip(mask - gm - wm, 0.0, 1.0)


def _add_lesions(rng: np.random.Generator, grid: _Grid, labels: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """Label 0-4 random ellipsoids in deep white matter as lesions (4) in place; return the lesion probability map."""
    lesion = np.zeros_like(wm)
    candidates = np.flatnonzero((labels == 3) & (wm >= _LESION_MIN_WM))
    n_lesions = int(rng.integers(0, _MAX_LESIONS + 1))
    if candidates.size == 0:
        return lesion
    for _ in range(n_lesions):
        centre = np.unravel_index(candidates[rng.integers(candidates.size)], grid.shape)
        radii = rng.uniform(*_LESION_RADIUS_MM, 3)
        reach = np.ceil(1.2 * radii / grid.spacing).astype(int)
        box = tuple(slice(max(c - r, 0), min(c + r + 1, n)) for c, r, n in zip(centre, reach, grid.shape, strict=True))
        offsets = [
            (np.arange(s.start, s.stop) - c) * d / r
            for s, c, d, r in zip(box, centre, grid.spacing, radii, strict=True)
        ]
        radius = np.sqrt(
            offsets[0][:, None, None] ** 2 + offsets[1][None, :, None] ** 2 + offsets[2][None, None, :] ** 2
        )
        # Soft edge (full inside 0.8 radii, none beyond 1.2) for partial volume; the label is the radius-1 ellipsoid.
        np.maximum(lesion[box], np.clip((1.2 - radius) / 0.4, 0.0, 1.0).astype(np.float32), out=lesion[box])
    labels[(lesion >= 0.5) & (labels == 3)] = 4
    return lesion * wm


def _draw_outlier(rng: np.random.Generator, grid: _Grid, labels: np.ndarray, mask: np.ndarray) -> _Outlier:
    """Draw a distinct-arm subject's infarct (labelled in place) and its FLAIR scanner's bias field."""
    infarct = _add_infarct(rng, grid, labels, mask)
    field = _smooth_random_field(rng, grid, _OTHER_SCANNER_BIAS_NODE_SPACING_MM, 1)[0]
    return _Outlier(infarct=infarct, flair_bias=(1.0 + _OTHER_SCANNER_BIAS_AMPLITUDE * field).astype(np.float32))


def _add_infarct(rng: np.random.Generator, grid: _Grid, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Label a lobulated blob deep in the brain as infarction in place; return its partial-volume map in the brain."""
    brain = labels > 0
    depth = ndimage.distance_transform_edt(brain, sampling=grid.spacing)
    candidates = np.flatnonzero(depth >= min(_INFARCT_MIN_DEPTH_MM, depth.max()))
    centre = np.unravel_index(candidates[rng.integers(candidates.size)], grid.shape)
    radii = rng.uniform(*_INFARCT_RADIUS_MM, 3)
    lobes = _smooth_random_field(rng, grid, _INFARCT_LOBE_SPACING_MM, 1)[0]
    x, y, z = ((axis - axis[c]) / r for axis, c, r in zip(grid.axes, centre, radii, strict=True))
    radius = np.sqrt(x[:, None, None] ** 2 + y[None, :, None] ** 2 + z[None, None, :] ** 2)
    radius /= 1.0 + _INFARCT_LOBULATION * lobes
    # Soft edge as for the white-matter lesions; the label is the half-probability surface.
    infarct = (np.clip((1.2 - radius) / 0.4, 0.0, 1.0) * mask).astype(np.float32)
    labels[brain & (infarct >= 0.5)] = _INFARCT_LABEL
    return infarct


def _head_shells(mask: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scalp and skull partial-volume maps: shells around the brain from levels of the smoothed brain mask."""
    smoothed = ndimage.gaussian_filter(mask, sigma=_HEAD_SMOOTHING_MM / spacing, mode="constant", truncate=3.0)
    inner = np.maximum(np.clip((smoothed - _SKULL_LEVEL[0]) / _SKULL_LEVEL[1], 0.0, 1.0), mask)
    outer = np.maximum(np.clip((smoothed - _SCALP_LEVEL[0]) / _SCALP_LEVEL[1], 0.0, 1.0), inner)
    return outer - inner, inner - mask


def _intensities(
    rng: np.random.Generator,
    grid: _Grid,
    probabilities: tuple[np.ndarray, ...],
    texture: np.ndarray,
    outlier: _Outlier | None = None,
) -> np.ndarray:
    """Partial-volume T1, IR and FLAIR images with random contrasts, bias fields and Rician noise, ``(3, X, Y, Z)``.

    An ``outlier`` takes the other scanner's FLAIR contrast and bias field, and its infarct as a seventh class.
    """
    gains = rng.uniform(*_CHANNEL_GAIN, 3)
    tissue_means = _TISSUE_MEANS if outlier is None else _OTHER_SCANNER_TISSUE_MEANS
    means = tissue_means * gains[:, None] * rng.uniform(*_TISSUE_JITTER, _TISSUE_MEANS.shape)
    bias = (1.0 + _BIAS_AMPLITUDE * _smooth_random_field(rng, grid, _BIAS_NODE_SPACING_MM, 3)).astype(np.float32)
    noise_std = rng.uniform(*_NOISE_FRACTION, 3) * means.max(axis=1)
    if outlier is not None:
        bias[2] *= outlier.flair_bias
        means = np.column_stack([means, _INFARCT_MEANS * gains])
        probabilities = (*probabilities, outlier.infarct)
    images = np.empty((3, *grid.shape), dtype=np.float32)
    for channel in range(3):
        image = sum(
            np.float32(mean) * probability for mean, probability in zip(means[channel], probabilities, strict=True)
        )
        if _TEXTURE_GAIN[channel]:
            # Template texture is in template T1 units; rescale by this channel's WM-CSF contrast (index 4 vs 2).
            contrast = (means[channel, 4] - means[channel, 2]) / (_TEMPLATE_T1_MEANS[2] - _TEMPLATE_T1_MEANS[0])
            image += np.float32(_TEXTURE_GAIN[channel] * contrast) * texture
        image *= bias[channel]
        real = image + rng.standard_normal(grid.shape, dtype=np.float32) * np.float32(noise_std[channel])
        imaginary = rng.standard_normal(grid.shape, dtype=np.float32) * np.float32(noise_std[channel])
        images[channel] = np.hypot(real, imaginary)
    return images


def _write_mrbrains18_subject(folder: Path, images: np.ndarray, labels: np.ndarray, affine: np.ndarray) -> None:
    """Write one subject's NIfTI files into ``folder`` in the challenge layout."""
    (folder / "pre").mkdir(parents=True)
    for name, image in zip(_MRBRAINS18_IMAGE_FILES, images, strict=True):
        _save_nifti(image, affine, folder / "pre" / name)
    _save_nifti(labels, affine, folder / _MRBRAINS18_LABEL_FILE)


def _save_nifti(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Save a volume with both qform and sform set to ``affine`` (scanner coordinates, mm)."""
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code="scanner")
    image.set_sform(affine, code="scanner")
    image.header.set_xyzt_units("mm")
    nib.save(image, path)


def _replace_folder(source: Path, destination: Path) -> None:
    """Move ``source`` to ``destination``, replacing an existing folder there."""
    if destination.exists():
        retired = destination.with_name(f".retired-{destination.name}-{os.getpid()}")
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(destination, retired)
        os.replace(source, destination)
        shutil.rmtree(retired)
    else:
        os.replace(source, destination)
