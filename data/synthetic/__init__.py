"""A synthetic bank in the input contract's format, for development, tests and demos.

``generate_bank`` writes ``applications.csv`` and ``labels.csv`` exactly as a bank's
export would look, and ``truth.csv`` (scheme and group of every application) for
evaluation only: duanka never reads it as an input. A scenario
(:mod:`duanka.data.synthetic.scenarios`) generates the same bank after the rings have
adapted to being watched.
"""

from duanka.data.synthetic.bank import GeneratedBank, generate_bank
from duanka.data.synthetic.scenarios import SCENARIOS, Scenario, ScenarioName, scenario

__all__ = ["SCENARIOS", "GeneratedBank", "Scenario", "ScenarioName", "generate_bank", "scenario"]
