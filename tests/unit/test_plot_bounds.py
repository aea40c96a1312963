"""The braille plot's axes (tui.widgets.plot.bounds): pure, no terminal."""

from tui.widgets.plot import Series, bounds


def test_one_evaluation_gets_a_band_around_it_that_stays_above_zero():
    x0, x1, y0, y1 = bounds([Series("WER", [(40, 0.31)])])
    assert 0 <= y0 < 0.31 < y1 < 0.5  # was -19% .. 81% for one WER of 31%
    assert (x0, x1) == (40, 41)


def test_flat_zero_and_negative_series_keep_a_visible_range():
    assert bounds([Series("WER", [(1, 0.0), (2, 0.0)])])[2:] == (0.0, 0.5)
    y0, y1 = bounds([Series("delta", [(1, -2.0)])])[2:]
    assert y0 < -2.0 < y1


def test_a_curve_keeps_its_own_range():
    assert bounds([Series("loss", [(1, 2.0), (5, 1.0)])]) == (1, 5, 1.0, 2.0)
    assert bounds([Series("loss", [])]) is None
