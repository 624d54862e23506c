"""The output comparison the recovery tests rely on must itself catch real differences."""

from tests.outputs import differences


def test_float_noise_is_equal_but_real_differences_are_not() -> None:
    base = [{"d": "2024-01-01", "n": 5, "x": 234.42}]
    assert differences([{"d": "2024-01-01", "n": 5, "x": 234.42000000000002}], base) == []
    assert differences([{"d": "2024-01-01", "n": 5, "x": 234.43}], base) != []
    assert differences([{"d": "2024-01-02", "n": 5, "x": 234.42}], base) != []
    assert differences([{"d": "2024-01-01", "n": 6, "x": 234.42}], base) != []
    assert differences([], base) == ["0 rows, expected 1"]
