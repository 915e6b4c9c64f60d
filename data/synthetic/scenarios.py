"""Adaptation scenarios: the same bank after the rings have learned what it watches for.

A model trained on today's world learns today's tells: escorts in the visitor log,
a ring's recruits on SIMs from one number block, one hotel and a couple of shared
phones, an insider's openings under one staff id. Once a bank alerts on those,
the rings change exactly those habits: they hide the escort, spread the links out, move
the insiders, and send recruits alone from a few home counties with their home address.
A :class:`Scenario` names the handful of
planner parameters (:mod:`duanka.data.synthetic.schemes`) that such a change moves, so
that a backtest can ask how the model fares on a world that hides each tell.

Only the parameters here vary between scenarios; everything else, and every
scheme's name in ``truth.csv``, stays as it is. The ``default`` scenario holds
today's values (:class:`Scenario`'s defaults) and draws exactly the random numbers
the generator always drew, so a seed gives the same files as before scenarios
existed. The planners read these values from ``world.scenario`` only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum


class ScenarioName(StrEnum):
    """The named scenarios, as ``duanka generate --scenario`` accepts them."""

    DEFAULT = "default"
    ESCORTS_HIDDEN = "escorts_hidden"
    SPREAD_OUT = "spread_out"
    INSIDERS_MOVE = "insiders_move"
    SENT_ALONE = "sent_alone"
    ADAPTED = "adapted"


@dataclass(frozen=True, slots=True)
class Scenario:
    """The planner parameters an adaptation moves; the defaults are today's world.

    ``(start, end)`` pairs move linearly over the period, like the schemes' own
    adaptation; ``(low, high)`` pairs are inclusive ranges drawn per ring or insider.
    """

    name: str
    # Escort rings: share of counter openings whose escort is recorded, (start, end).
    escort_recorded: tuple[float, float] = (0.8, 0.15)
    # Shell operations: share of openings that record the escort.
    shell_escorted: float = 0.25
    # Escort rings: 7-digit number blocks their SIMs come from, per ring.
    ring_blocks: tuple[int, int] = (1, 1)
    # Escort rings: share of recruits on a SIM from one of the ring's blocks.
    block_sim: float = 0.8
    # Escort rings: shared phones their app openings are made on, per ring.
    ring_devices: tuple[int, int] = (1, 3)
    # Escort rings: hotels and 公寓 their recruits are lodged in, per ring.
    ring_hotels: tuple[int, int] = (1, 2)
    # Escort rings: branches used, about, (start, end).
    ring_branches: tuple[float, float] = (2.0, 10.0)
    # Escort rings: recruits an escort brings to a branch at once.
    visit: tuple[int, int] = (2, 6)
    # Escort rings: share of recruits sent alone, (start, end): no escort with them, no
    # shared SIM block, phone or hotel, their own settled number and their household-register
    # address back home, older than the ring's other recruits, one account on a first visit.
    sent_alone: tuple[float, float] = (0.0, 0.0)
    # Escort rings: home counties their recruits are drawn from, per ring (老乡带老乡);
    # (0, 0): any county of the ring's one to three provinces.
    ring_counties: tuple[int, int] = (0, 0)
    # Insiders: branches each is posted to in turn, opening under that branch's staff id.
    insider_posts: tuple[int, int] = (1, 1)
    # Insiders: share of their openings recorded under a colleague's id at the same desk.
    insider_borrowed: float = 0.0

    def moved(self) -> dict[str, object]:
        """The parameters whose values differ from the default scenario's, by name."""
        base = Scenario(self.name)
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "name" and getattr(self, f.name) != getattr(base, f.name)
        }

    def describe(self) -> str:
        """``name (parameter=value, ...)``: what this scenario moves."""
        moved = ", ".join(f"{k}={v}" for k, v in self.moved().items()) or "today's world"
        return f"{self.name} ({moved})"


# What each adaptation moves; `adapted` moves all of them.
_ESCORTS_HIDDEN = {"escort_recorded": (0.15, 0.02), "shell_escorted": 0.03}
_SPREAD_OUT = {
    "ring_blocks": (2, 5),
    "block_sim": 0.45,
    "ring_devices": (3, 8),
    "ring_hotels": (3, 6),
    "ring_branches": (5.0, 14.0),
    "visit": (1, 3),
}
_INSIDERS_MOVE = {"insider_posts": (3, 6), "insider_borrowed": 0.3}
_SENT_ALONE = {"sent_alone": (0.2, 0.6), "ring_counties": (1, 3)}

SCENARIOS: dict[ScenarioName, Scenario] = {
    ScenarioName.DEFAULT: Scenario(ScenarioName.DEFAULT.value),
    ScenarioName.ESCORTS_HIDDEN: Scenario(ScenarioName.ESCORTS_HIDDEN.value, **_ESCORTS_HIDDEN),
    ScenarioName.SPREAD_OUT: Scenario(ScenarioName.SPREAD_OUT.value, **_SPREAD_OUT),
    ScenarioName.INSIDERS_MOVE: Scenario(ScenarioName.INSIDERS_MOVE.value, **_INSIDERS_MOVE),
    ScenarioName.SENT_ALONE: Scenario(ScenarioName.SENT_ALONE.value, **_SENT_ALONE),
    ScenarioName.ADAPTED: Scenario(
        ScenarioName.ADAPTED.value, **_ESCORTS_HIDDEN, **_SPREAD_OUT, **_INSIDERS_MOVE, **_SENT_ALONE
    ),
}
DEFAULT = SCENARIOS[ScenarioName.DEFAULT]


def scenario(name: str | Scenario) -> Scenario:
    """The scenario called ``name`` (a Scenario is returned as it is).

    Raises
    ------
    ValueError
        If no scenario has that name.
    """
    if isinstance(name, Scenario):
        return name
    try:
        return SCENARIOS[ScenarioName(name)]
    except ValueError:
        known = ", ".join(SCENARIOS)
        raise ValueError(f"unknown scenario {name!r}; known: {known}") from None
