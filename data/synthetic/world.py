"""What every part of the generator shares: the period, the bank, its volume, how
its customers' homes are spread over the districts, and the scenario: how far the
rings have adapted (:mod:`duanka.data.synthetic.scenarios`). The planners take the
scenario from here, so that a scenario is one argument and not a module setting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from duanka.data.synthetic.network import Network, build_network
from duanka.data.synthetic.period import Period
from duanka.data.synthetic.places import DISTRICT_CITY
from duanka.data.synthetic.scenarios import Scenario

# A district's applicants of the period live in 1/0.3 times as many households,
# drawn at random: about a quarter of them share their address (family,
# roommates) with another applicant.
_APPLICANTS_PER_HOUSEHOLD = 0.3
_FEWEST_HOUSEHOLDS = 200


@dataclass(frozen=True, slots=True)
class World:
    """The shared setting of one generated bank."""

    period: Period
    network: Network
    volume: int  # applications in the whole period
    households: np.ndarray  # per district, the number of households its applicants live in
    scenario: Scenario  # the parameters the rings' adaptation moves

    @property
    def annual_volume(self) -> float:
        """Applications per twelve months at this bank's pace."""
        return self.volume * 12 / self.period.months

    def districts_of(self, city: int) -> np.ndarray:
        """The districts (index into DISTRICTS) of one city (index into CITIES)."""
        return np.flatnonzero(city == DISTRICT_CITY)

    def same_city(self, district: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random district in the city of each given district."""
        out = np.empty(len(district), np.int64)
        city = DISTRICT_CITY[district]
        for c in np.unique(city):
            rows = np.flatnonzero(city == c)
            out[rows] = rng.choice(self.districts_of(c), len(rows))
        return out

    def households_in(self, district: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A household of each given district, all households equally likely."""
        return (rng.random(len(district)) * self.households[district]).astype(np.int64)


def worth_adding(planned: int, size: int, budget: int) -> bool:
    """Whether a group of ``size`` rows brings ``planned`` closer to ``budget`` than stopping.

    Schemes are planned group by group; this keeps small banks from getting a whole
    ring when their budget is a handful of rows.
    """
    return abs(planned + size - budget) < abs(planned - budget)


def build_world(period: Period, volume: int, rng: np.random.Generator, scenario: Scenario) -> World:
    """The bank's network and household spread for ``volume`` applications over ``period``,
    its schemes planned as ``scenario`` says."""
    network = build_network(rng)
    residents = volume * network.district_weight()
    households = np.maximum(residents / _APPLICANTS_PER_HOUSEHOLD, _FEWEST_HOUSEHOLDS)
    return World(period, network, volume, households.astype(np.int64), scenario)
