"""Sunnybrook expert contours: file reading, frame lookup, label maps (real data)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from LVMyoSegLib.errors import InputError, LabelError
from LVMyoSegLib.io.sunnybrook import (
    CONTOUR_ORIGIN,
    cardiac_phases,
    contour_mask,
    list_studies,
    load_study,
    read_contour_file,
    study_contours,
)
from LVMyoSegLib.labels import CHANNELS

# From the data's README: per patient, contoured slices (endocardium at ED and ES),
# slices with epicardium, and the 1-based ED / ES phases.
README_FACTS = {
    "SCD0000101": (9, 9, 19, 8),
    "SCD0000201": (9, 9, 20, 7),
    "SCD0000301": (10, 10, 20, 7),
    "SCD0000401": (9, 9, 20, 7),
    "SCD0000501": (11, 10, 19, 9),
}


@pytest.fixture(scope="module")
def studies(sunnybrook_root):
    """Every study loaded once: (study, dicom, labels, contours)."""
    out = []
    for study in list_studies(sunnybrook_root):
        dicom, labels = load_study(study)
        out.append((study, dicom, labels, study_contours(study, dicom)))
    return out


# --- contour files --------------------------------------------------------------------------


def test_real_contour_file_reads_points(sunnybrook_root):
    path = sorted((sunnybrook_root / "contours" / "SC-HF-I-1" / "i-contours").glob("*.txt"))[0]
    pts = read_contour_file(path)
    assert pts.ndim == 2 and pts.shape[1] == 2 and pts.shape[0] >= 20
    assert np.all((pts > 0) & (pts < 256))


@pytest.mark.parametrize("bad_line", ["12.5 abc", "12.5", "1 2 3", "nan 4.0", "inf 3"])
def test_garbage_line_raises_with_file_and_line(tmp_path, bad_line):
    path = tmp_path / "IM-0001-0048-icontour-manual.txt"
    path.write_text("120.5 137.5\n121.0 136.5\n" + bad_line + "\n122.0 136.0\n")
    with pytest.raises(LabelError) as err:
        read_contour_file(path)
    assert path.name in str(err.value) and "line 3" in str(err.value)


def test_blank_lines_skipped_and_too_few_points(tmp_path):
    ok = tmp_path / "ok.txt"
    ok.write_text("1 1\n\n5 1\n5 5\n")
    assert read_contour_file(ok).shape == (3, 2)
    short = tmp_path / "short.txt"
    short.write_text("1 1\n5 1\n")
    with pytest.raises(LabelError, match="short.txt"):
        read_contour_file(short)


def test_contour_mask_uses_pixel_centres():
    square = np.array([[1.5, 1.5], [4.5, 1.5], [4.5, 4.5], [1.5, 4.5]])  # x, y
    mask = contour_mask(square, (8, 8))
    assert mask.sum() == 9 and mask[2:5, 2:5].all()


def test_list_studies_missing_root(tmp_path):
    with pytest.raises(InputError, match="link.csv"):
        list_studies(tmp_path)


# --- real studies ---------------------------------------------------------------------------


def test_listing_matches_link_csv(sunnybrook_root):
    studies = list_studies(sunnybrook_root)
    assert [s.patient_id for s in studies] == list(README_FACTS)
    assert all(s.dicom_dir.is_dir() and s.contour_dir.is_dir() for s in studies)


def test_labelled_frames_match_readme(studies):
    myo, pool = CHANNELS.index("myocardium"), CHANNELS.index("blood_pool")
    for study, dicom, labels, contours in studies:
        n_endo, n_epi, ed1, es1 = README_FACTS[study.patient_id]
        ed, es = cardiac_phases(labels)
        assert (ed + 1, es + 1) == (ed1, es1), study.patient_id
        labels.check_fits(dicom.cine)
        known = labels.known
        # myocardium only at ED, on the slices with both contours
        assert set(np.flatnonzero(known[:, :, myo].any(axis=1))) == {ed}
        assert known[ed, :, myo].sum() == n_epi
        # cavity at ED and ES, on the same contoured slices
        assert known[ed, :, pool].sum() == n_endo and known[es, :, pool].sum() == n_endo
        assert np.array_equal(known[ed, :, pool], known[es, :, pool])
        assert known[:, :, pool].sum() == 2 * n_endo
        # nothing drawn where nothing is known
        drawn = labels.label_map.reshape(labels.label_map.shape[:2] + (-1,)).any(axis=2)
        assert np.array_equal(drawn, known.any(axis=2))
        assert sum("o" in v for v in contours.values()) == n_epi


def test_contour_frames_are_the_named_files(studies):
    """Each contour sits on the frame whose DICOM file number is in its name (via headers)."""
    for study, dicom, _, contours in studies:
        names = {(t, z): int(p.stem) for t, row in enumerate(dicom.files) for z, p in enumerate(row)}
        expected = sorted(int(p.name.split("-")[2]) for p in
                          (study.contour_dir / "i-contours").glob("IM-*-icontour-manual.txt"))
        got = sorted(names[k] for k, v in contours.items() if "i" in v)
        assert got == expected


def test_rasterised_areas_and_nesting(studies):
    for study, dicom, labels, contours in studies:
        for (t, z), drawn in contours.items():
            x, y = drawn["i"][:, 0], drawn["i"][:, 1]
            area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
            cavity = labels.label_map[t, z] == 2
            assert abs(cavity.sum() - area) <= 0.05 * area + 10, (study.patient_id, t, z)
            if "o" in drawn:
                epi = contour_mask(drawn["o"], cavity.shape)
                assert (cavity & ~epi).sum() <= 0.005 * cavity.sum() + 2, (study.patient_id, t, z)
                assert np.array_equal(labels.label_map[t, z] == 1, epi & ~cavity)


def test_coordinate_convention_fits_image_edges(studies):
    """Endocardial contours, shifted by CONTOUR_ORIGIN, sit on stronger image edges than other shifts."""
    shifts = (-0.5, 0.0, 0.5, CONTOUR_ORIGIN)  # extra shift added to the converted points
    scores = np.zeros(len(shifts))
    for _, dicom, _, contours in studies:
        for (t, z), drawn in contours.items():
            grad = ndi.gaussian_gradient_magnitude(dicom.cine.frames[t, z], 1.0)
            pts = drawn["i"]
            for k, s in enumerate(shifts):
                vals = ndi.map_coordinates(grad, [pts[:, 1] + s, pts[:, 0] + s], order=1)
                scores[k] += vals.mean() / grad.max()
    print("mean edge strength by extra shift", dict(zip(shifts, np.round(scores, 2))))
    assert int(np.argmax(scores)) == shifts.index(0.0)
