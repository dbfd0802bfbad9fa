"""DetReIDX / MARS name parsing, capture bins and camera ids."""

import pytest

from xfd.data.errors import DataError
from xfd.data.metadata import (
    CAPTURE_POINTS,
    MarsFrame,
    GROUND_ALTITUDE_BIN,
    altitude_bin,
    angle_bin,
    capture_bins,
    detreidx_camid,
    distance_bin,
    parse_detreidx_frame,
    parse_mars_frame,
)


def test_aerial_name_fields_6_7_8_are_height_distance_angle():
    frame = parse_detreidx_frame("0004_23_10_2024_09_18_5.8_10_30_3_walk_S1_00012.jpg")
    assert (frame.pid, frame.platform, frame.height, frame.distance, frame.angle, frame.session) == (
        4, "aerial", 5.8, 10.0, 30.0, 1)


def test_ground_name_has_fewer_than_8_fields():
    frame = parse_detreidx_frame("0004_23_10_2024_G2_S2_00012.jpg")
    assert (frame.platform, frame.ground_camera, frame.session) == ("ground", 2, 2)


@pytest.mark.parametrize("name, rule", [
    ("0004_23_10_2024_09_18_high_10_30_3_S1_00012.jpg", "drone height"),
    ("0004_23_10_2024_09_18_5.8_x_30_3_S1_00012.jpg", "distance"),
    ("0004_23_10_2024_09_18_5.8_10_nan_3_S1_00012.jpg", "angle"),
    ("0004_23_10_2024_09_18_5.8_10_120_3_S1_00012.jpg", "at most 90"),
    ("abcd_23_10_2024_G2_S2_00012.jpg", "numeric PID"),
    ("0004_23_10_2024_09_18_5.8_S1.jpg", "8 '_'-separated fields"),
])
def test_unparsable_names_are_errors_naming_the_file(name, rule):
    with pytest.raises(DataError, match=rule) as caught:
        parse_detreidx_frame(name)
    assert caught.value.item == name


def test_every_capture_point_gets_an_aerial_camid_and_distinct_bins_per_angle():
    camids = set()
    for angle, height, distance in CAPTURE_POINTS:
        frame = parse_detreidx_frame(f"0001_23_10_2024_09_18_{height:g}_{distance:g}_{angle}_3_walk_S1_00000.jpg")
        camids.add(detreidx_camid(frame))
        bins = capture_bins("aerial", height, distance, angle)
        assert 0 <= bins["altitude"] < 18 and 0 <= bins["distance"] < 18 and 0 <= bins["angle"] < 3
    assert camids == set(range(10, 28))


def test_bins_are_monotone_and_ground_has_its_own():
    heights = [5.8, 10, 20, 40, 80, 120]
    assert [altitude_bin(h) for h in heights] == sorted(altitude_bin(h) for h in heights)
    assert altitude_bin(5.8) < altitude_bin(120) == 17
    assert (distance_bin(0), distance_bin(120)) == (0, 17)
    assert (angle_bin(30), angle_bin(60), angle_bin(90)) == (0, 1, 2)
    assert capture_bins("ground", 0, 0, 0) == {"altitude": GROUND_ALTITUDE_BIN, "distance": 18, "angle": 3}


def test_unknown_capture_point_is_an_error_under_capture_point_rule_only():
    frame = parse_detreidx_frame("0001_23_10_2024_09_18_33_7_45_3_walk_1_00000.jpg")
    with pytest.raises(DataError, match="not one of the 18"):
        detreidx_camid(frame, "capture-point")
    assert detreidx_camid(frame, "baseline") == 1  # fields[-2] == '1'


def test_mars_names_including_junk_and_5_digit_g2a_v2():
    assert parse_mars_frame("0001C1T0002F003.jpg") == MarsFrame(pid=1, camera=1, tracklet=2, frame=3)
    assert parse_mars_frame("00-1C6T0001F010.jpg").pid == -1
    assert parse_mars_frame("00012C2T0001F001.jpg", pid_digits=5).pid == 12
    with pytest.raises(DataError, match="4-digit pid"):
        parse_mars_frame("00012C2T0001F001.jpg")
