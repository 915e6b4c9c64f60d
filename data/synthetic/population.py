"""The bank's ordinary customers: who opens what, where and how, in one month.

Locals and migrants of all ages open personal accounts at the counter, on the app
or through agents; small firms open corporate accounts. Families and roommates
share addresses, some elderly and young applicants come with a relative (an
escort), some migrants live in rented 公寓 or dormitories or give their
household-register address, a few have brand-new SIM cards, and the photo
forensics flag a few by mistake: the everyday background the mule signals must
stand out from.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from duanka.data.synthetic.addresses import SITES, Place, mixed_addresses
from duanka.data.synthetic.identifiers import DEVICE_SPACE, intermediary_numbers, usccs
from duanka.data.synthetic.keyed import keyed_integers
from duanka.data.synthetic.people import draw_ages, draw_applicants, draw_phones, tenure_days
from duanka.data.synthetic.period import Chunk, anytime_seconds, counter_seconds, draw_days, ramp, stamp
from duanka.data.synthetic.places import DISTRICT_CODE
from duanka.data.synthetic.rows import AGENT, COUNTER, MOBILE, Draft, sparse
from duanka.data.synthetic.world import World

CORPORATE = 0.09  # share of ordinary openings that are corporate accounts
MOBILE_SHARE = (0.34, 0.44)  # of personal openings, at the period's start and end
AGENT_SHARE = 0.05
NIGHT = 0.03  # of app openings between midnight and 6:00
PERSONAL_AGES = ((16, 17, 0.015), (18, 25, 0.2), (26, 40, 0.36), (41, 60, 0.3), (61, 90, 0.125))
LEGAL_REP_AGES = ((22, 35, 0.3), (36, 55, 0.55), (56, 72, 0.15))
RELATIVE_AGES = ((25, 60, 1.0),)
MIGRANT = 0.38  # of personal applicants; of legal representatives: CORPORATE_MIGRANT
CORPORATE_MIGRANT = 0.22
NEW_SIM = 0.05
HOME_DISTRICT = 0.65  # bank in the district they live in; the rest elsewhere in the city
# Where personal applicants live, in the order of PERSONAL_PLACES (None: the
# household-register address back home).
PERSONAL_PLACES = (Place.RESIDENCE, None, Place.RENTAL, Place.DORMITORY, Place.LODGING)
LOCAL_PLACES = (0.96, 0.01, 0.02, 0.005, 0.005)
MIGRANT_PLACES = (0.58, 0.2, 0.12, 0.07, 0.03)
CORPORATE_PLACES = (Place.OFFICE, Place.BUSINESS_CENTRE, Place.RESIDENCE)
CORPORATE_PLACE_SHARES = (0.72, 0.18, 0.10)
ESCORTED_ELDERLY = 0.3  # counter openings by applicants aged 65+ with a relative along
ESCORTED_MINOR = 0.5  # ... by 16- and 17-year-olds
ESCORTED_OTHER = 0.003
SHARED_DEVICE = 0.06  # app openings on a family member's phone
TAMPERED = 0.003  # false photo-forensics flags
SPELLING_VARIETY = 0.25
YOUNG_COMPANY = 0.08  # corporate openings by companies under 120 days old
ONSITE = 0.93
AGENTS = 300  # outside agents and referrers the bank works with
REFERRED = 0.02  # counter openings that name a referrer
_AGENT_SALT = 11
_DEVICE_SALT = 12


def agent_numbers(agent: np.ndarray) -> np.ndarray:
    """Intermediary numbers of the bank's outside agents (index < AGENTS)."""
    return intermediary_numbers(agent, _AGENT_SALT)


def _escorts(days: np.ndarray, escorted: np.ndarray, rng: np.random.Generator) -> pa.Array:
    rows = np.flatnonzero(escorted)
    relatives = draw_applicants(days[rows], draw_ages(len(rows), RELATIVE_AGES, rng), rng, 0.2)
    return sparse(len(days), rows, relatives.id_number)


def legit_rows(n: int, chunk: Chunk, world: World, rng: np.random.Generator) -> Draft:
    """``n`` ordinary openings during ``chunk``."""
    network = world.network
    days = draw_days(n, np.arange(chunk.first, chunk.stop), rng)
    progress = world.period.progress(stamp(days, 0))
    corporate = rng.random(n) < CORPORATE
    u = rng.random(n)
    mobile_share = ramp(MOBILE_SHARE, progress)
    channel = np.where(
        corporate,
        np.where(u < AGENT_SHARE, AGENT, COUNTER),
        np.where(u < mobile_share, MOBILE, np.where(u < mobile_share + AGENT_SHARE, AGENT, COUNTER)),
    )
    mobile = channel == MOBILE
    seconds = np.where(mobile, anytime_seconds(n, rng, NIGHT), counter_seconds(n, rng))

    branch = network.draw_branches(n, rng)
    district = network.branch_district[branch]
    district = np.where(rng.random(n) < HOME_DISTRICT, district, world.same_city(district, rng))

    ages = np.where(corporate, draw_ages(n, LEGAL_REP_AGES, rng), draw_ages(n, PERSONAL_AGES, rng))
    migrant = rng.random(n) < np.where(corporate, CORPORATE_MIGRANT, MIGRANT)
    people = draw_applicants(days, ages, rng, migrant)

    personal_place = np.where(migrant, rng.choice(5, n, p=MIGRANT_PLACES), rng.choice(5, n, p=LOCAL_PLACES))
    corporate_place = len(PERSONAL_PLACES) + rng.choice(3, n, p=CORPORATE_PLACE_SHARES)
    household = world.households_in(district, rng)
    residence = ~corporate & (personal_place == PERSONAL_PLACES.index(Place.RESIDENCE))
    address = mixed_addresses(
        np.where(corporate, corporate_place, personal_place),
        PERSONAL_PLACES + CORPORATE_PLACES,
        district=district,
        site=np.where(residence, household, rng.integers(0, SITES, n)),
        home=people.home,
        variety=SPELLING_VARIETY,
        rng=rng,
    )

    counter = channel != MOBILE
    escort_chance = np.select([ages >= 65, ages < 18], [ESCORTED_ELDERLY, ESCORTED_MINOR], ESCORTED_OTHER)
    escorted = counter & ~corporate & (rng.random(n) < escort_chance)
    referred = (channel == AGENT) | (counter & (rng.random(n) < REFERRED))
    family_device = keyed_integers(district * 2**32 + household, _DEVICE_SALT, 0, DEVICE_SPACE)
    device = np.where(rng.random(n) < SHARED_DEVICE, family_device, rng.integers(0, DEVICE_SPACE, n))
    young = rng.random(n) < YOUNG_COMPANY
    company_age = np.where(
        young,
        rng.integers(1, 120, n),
        np.clip(rng.lognormal(np.log(1_500), 0.9, n), 120, 12_000).astype(np.int64),
    )
    registered = np.flatnonzero(corporate)
    return Draft.build(
        "legit",
        at=stamp(days, seconds),
        branch=branch,
        channel=channel,
        corporate=corporate,
        staff=network.staff_at(branch, rng, corporate),
        id_number=people.id_number,
        phone=draw_phones(n, rng),
        tenure=tenure_days(n, rng, NEW_SIM, newest=60),
        address=address,
        device=device,
        escort=_escorts(days, escorted, rng),
        intermediary=np.where(referred, agent_numbers(rng.integers(0, AGENTS, n)), -1),
        photo_tampered=rng.random(n) < TAMPERED,
        onsite=rng.random(n) < ONSITE,
        company_id=sparse(n, registered, usccs(DISTRICT_CODE[district[registered]], rng)),
        company_age=company_age,
        u_shield=rng.random(n) < np.where(corporate, 0.88, 0.04 + 0.08 * (ages > 40)),
        mobile_banking=mobile | (rng.random(n) < np.where(corporate, 0.75, 0.62)),
        payment_binding=rng.random(n) < np.where(corporate, 0.25, 0.35 + 0.2 * mobile),
    )
