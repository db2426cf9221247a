"""4D series: one frame order at every slice position, or a refusal naming the positions (issue 13).

Synthetic series from ``fixtures/special.py`` reproduce the header patterns of real exports;
every pixel of frame ``t`` at slice ``z`` holds ``100 * t + z``, so any frame taken from the
wrong place shows as a wrong number.
"""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.special import philips_dti_series
from medload.errors import FrameOrderError, GeometryError
from medload.io import load, scan


def test_acquisition_number_changing_at_some_positions_keeps_the_gradient_order(tmp_path):
    # The real Philips export: AcquisitionNumber 19 instead of 22 for some frames at some
    # positions. Ordering by it put frames 3 and 4 first at slices 1 and 4.
    truth = philips_dti_series(tmp_path, acquisition_changes_at=(1, 4))
    vol = load(tmp_path)
    assert vol.shape == truth["array"].shape == (5, 6, 8, 8)
    np.testing.assert_array_equal(vol.array, truth["array"])
    assert vol.meta["problems"] == []


def test_instance_numbers_out_of_order_at_one_position_follow_the_encodings(tmp_path):
    truth = philips_dti_series(tmp_path, scramble_at=(2,))
    vol = load(tmp_path)
    np.testing.assert_array_equal(vol.array, truth["array"])
    assert any("at 1 of 6 slice positions (5.00 mm)" in p for p in vol.meta["problems"])


def test_a_frame_found_at_one_position_only_is_refused_naming_the_position(tmp_path):
    philips_dti_series(tmp_path, foreign_frame_at=(3,))
    with pytest.raises(FrameOrderError, match=r"1 of 6 slice positions.*7\.50 mm.*IM_003_000") as info:
        load(tmp_path)
    assert info.value.positions_mm == (7.5,)
    assert isinstance(info.value, GeometryError)
    # scan says the same from headers, before any pixel is read
    (series,) = scan(tmp_path)
    assert any("no single frame order" in p and "7.50 mm" in p for p in series.problems)
