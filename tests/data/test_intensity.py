"""CT windows, presets and MedSAM's percentile normalisation: exact values at known points."""

from __future__ import annotations

import numpy as np
import pytest

from kdsam.data.intensity import PRESETS, parse_window, to_uint8, window_to_uint8
from kdsam.errors import KdsamError


def test_window_maps_its_bounds_to_0_and_255() -> None:
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    np.testing.assert_array_equal(window_to_uint8(hu, 40, 400), [0, 0, 128, 255, 255])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("soft-tissue", (40.0, 400.0)),
        ("LUNG", (-600.0, 1500.0)),
        ("bone", (400.0, 1800.0)),
        ("brain", (40.0, 80.0)),
        ("-600,1500", (-600.0, 1500.0)),
        ("auto", "auto"),
        ("percentile", "percentile"),
    ],
)
def test_parse_window(text: str, expected) -> None:
    assert parse_window(text) == expected


@pytest.mark.parametrize("text", ["40", "40,0", "40,-5", "wide", "a,b", "0,inf", "nan,400", "inf,400", "40,nan"])
def test_bad_window_is_one_line(text: str) -> None:
    with pytest.raises(KdsamError, match="LEVEL,WIDTH"):
        parse_window(text)


def test_percentile_normalisation_ignores_and_keeps_zero_background() -> None:
    rng = np.random.default_rng(0)
    mr = np.zeros((20, 30, 30), np.float32)
    mr[5:15, 5:25, 5:25] = rng.normal(500, 50, (10, 20, 20))
    mr[10, 10, 10] = 1e6  # one hot voxel must not squash the rest
    out, record = to_uint8(mr, "auto", modality="MR")
    assert record["method"] == "percentile" and record["percentiles"] == [0.5, 99.5]
    assert (out[mr == 0] == 0).all() and out[mr > 0].max() == 255 and np.median(out[mr > 0]) > 100
    lo, hi = np.percentile(mr[mr != 0], [0.5, 99.5])
    assert record["low"] == pytest.approx(lo) and record["high"] == pytest.approx(hi)


def test_auto_keeps_8_bit_data_and_windows_ct() -> None:
    data = np.arange(256, dtype=np.uint8)
    out, record = to_uint8(data)
    assert out is data and record["method"] == "none"
    _, record = to_uint8(np.array([-100.0, 100.0]), modality="CT")
    assert record["preset"] == "soft-tissue" and PRESETS["soft-tissue"] == (record["level"], record["width"])


@pytest.mark.parametrize("choice", ["auto", "percentile", "minmax", (40.0, 400.0)])
def test_non_finite_voxels_are_left_out_of_the_statistics_and_counted(choice) -> None:
    rng = np.random.default_rng(1)
    mr = rng.normal(500, 50, (4, 16, 16)).astype(np.float32)
    mr[0, 0, :3] = [np.nan, np.inf, -np.inf]
    out, record = to_uint8(mr, choice, modality="MR")
    rest = mr.ravel()[3:]
    low, high = {
        "minmax": (rest.min(), rest.max()),
        "window": (-160.0, 240.0),
    }.get(record["method"], np.percentile(rest, [0.5, 99.5]))
    assert record["non_finite_voxels"] == 3
    assert record.get("low", low) == pytest.approx(low) and record.get("high", high) == pytest.approx(high)
    np.testing.assert_array_equal(out.ravel()[3:], window_to_uint8(rest, (low + high) / 2, high - low))
    assert out[0, 0, 0] == 0 and out[0, 0, 1] == 255 and out[0, 0, 2] == 0


def test_data_without_a_finite_value_is_refused() -> None:
    with pytest.raises(KdsamError, match="no finite value"):
        to_uint8(np.full((2, 3, 3), np.nan, np.float32))
