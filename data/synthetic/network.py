"""The bank's branch network: branches (网点) in each district, and their staff.

Ids follow the bank's own style: branch ``B`` + region code + branch digit
(``B4401040``), staff ``S`` + the branch's digits + staff digit (``S44010401``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from duanka.data.synthetic.places import DISTRICT_CITY, DISTRICTS

CORPORATE_DESK = 2  # the first staff members of a branch also handle corporate accounts


@dataclass(frozen=True, slots=True)
class Network:
    """Branches and staff as parallel arrays."""

    branch_id: pa.Array
    branch_region: pa.Array
    branch_district: np.ndarray  # index into DISTRICTS
    branch_city: np.ndarray  # index into CITIES
    branch_weight: np.ndarray  # share of the bank's openings, sums to 1
    staff_id: pa.Array
    staff_first: np.ndarray  # per branch, index of its first staff member
    staff_count: np.ndarray  # per branch

    def draw_branches(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` branches, weighted by their share of openings."""
        return rng.choice(len(self.branch_weight), n, p=self.branch_weight)

    def branches_in(self, city: int) -> np.ndarray:
        """The branches of one city (index into CITIES)."""
        return np.flatnonzero(self.branch_city == city)

    def near(self, district: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One branch in each given district, weighted by branch share."""
        choice = np.empty(len(district), np.int64)
        for d in np.unique(district):
            rows = np.flatnonzero(district == d)
            local = np.flatnonzero(self.branch_district == d)
            weight = self.branch_weight[local]
            choice[rows] = local[rng.choice(len(local), len(rows), p=weight / weight.sum())]
        return choice

    def staff_at(
        self, branch: np.ndarray, rng: np.random.Generator, corporate: np.ndarray | bool = False
    ) -> np.ndarray:
        """A staff member of each branch; corporate rows get one at the corporate desk."""
        count = np.where(corporate, CORPORATE_DESK, self.staff_count[branch])
        return self.staff_first[branch] + (rng.random(len(branch)) * count).astype(np.int64)

    def district_weight(self) -> np.ndarray:
        """Share of openings per district (index into DISTRICTS)."""
        return np.bincount(self.branch_district, self.branch_weight, minlength=len(DISTRICTS))


def build_network(rng: np.random.Generator) -> Network:
    """Branches per :data:`~duanka.data.synthetic.places.DISTRICTS`, with 5-9 staff each."""
    branch_id, region, district, staff_id, first, count = [], [], [], [], [], []
    numbered = Counter[int]()  # branch digits run per region code, across 东莞's towns
    for d, place in enumerate(DISTRICTS):
        for _ in range(place.branches):
            digits = f"{place.code}{numbered[place.code]}"
            numbered[place.code] += 1
            branch_id.append(f"B{digits}")
            region.append(str(place.code))
            district.append(d)
            first.append(len(staff_id))
            staff = int(rng.integers(5, 10))
            count.append(staff)
            staff_id.extend(f"S{digits}{j}" for j in range(staff))
    weight = rng.lognormal(0.0, 0.5, len(branch_id))
    district_index = np.array(district)
    return Network(
        branch_id=pa.array(branch_id),
        branch_region=pa.array(region),
        branch_district=district_index,
        branch_city=DISTRICT_CITY[district_index],
        branch_weight=weight / weight.sum(),
        staff_id=pa.array(staff_id),
        staff_first=np.array(first),
        staff_count=np.array(count),
    )
