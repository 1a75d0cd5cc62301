"""Values from the browser are checked, not coerced: positions, whole numbers."""

from __future__ import annotations

import pytest

from dashboard.backend.errors import InvalidSelection
from dashboard.views.cells import cell_positions, valid_cells
from dashboard.views.model import whole_number


@pytest.mark.parametrize("bad", [[-1], [0, -5], [1.5], ["3"], [True], [[1]], [None], "012", {}])
def test_forged_cell_positions_are_refused(bad) -> None:
    with pytest.raises(InvalidSelection, match="selection"):
        cell_positions(bad)
    if isinstance(bad, list):
        with pytest.raises(InvalidSelection):
            valid_cells({"cells": bad}, 100)


def test_positions_of_other_cells_are_not_used_here() -> None:
    assert valid_cells({"cells": [1, 2, 3]}, 100) == [1, 2, 3]
    assert valid_cells({"cells": [1, 200]}, 100) is None  # a selection on another dataset


@pytest.mark.parametrize("bad", [2.5, "ten", True, None, float("nan"), 1e400, "1e400", 0, 401])
def test_whole_numbers_are_refused_not_truncated(bad) -> None:
    with pytest.raises(InvalidSelection, match="Max epochs must be a whole number from 1 to 400"):
        whole_number(bad, 1, 400, "Max epochs")


@pytest.mark.parametrize(("given", "expected"), [(5, 5), (5.0, 5), ("12", 12), (400, 400)])
def test_whole_numbers_in_range_pass(given, expected) -> None:
    assert whole_number(given, 1, 400, "Max epochs") == expected
