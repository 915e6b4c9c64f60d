"""Legitimate openings that look like mule schemes: the hard negatives.

- University batches: every September, freshmen open accounts by the hundred in
  on-campus sessions: 17-19-year-olds, many from other provinces, new SIM cards
  from the campus number block, dormitory addresses, the same few university
  staff along as escorts.
- Factory payroll batches: HR staff escort dozens of migrant workers from the
  factory dormitory, labour-dispatch agencies recur as intermediaries, hiring
  peaks after the Spring Festival, and some sessions run after hours.
- Accounting agencies: many young companies registered at shared business-centre
  addresses, brought by the same agency.

Each is planned group by group for the whole period (a few percent of the
volume), then written month by month with everything else.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from duanka.data.synthetic.addresses import SITES, Place, mixed_addresses, pick, spellings, street_address
from duanka.data.synthetic.identifiers import DEVICE_SPACE, intermediary_numbers, usccs
from duanka.data.synthetic.people import (
    block_phones,
    draw_ages,
    draw_applicants,
    draw_block,
    draw_phones,
    escort_ids,
    tenure_days,
)
from duanka.data.synthetic.period import (
    HOUR,
    anytime_seconds,
    counter_seconds,
    day_weights,
    draw_days,
    queued,
    stamp,
)
from duanka.data.synthetic.places import CAMPUS_ZONES, DISTRICT_CODE, DISTRICTS, UNIVERSITIES
from duanka.data.synthetic.population import SPELLING_VARIETY, TAMPERED
from duanka.data.synthetic.rows import AGENT, COUNTER, MOBILE, Draft, stacked
from duanka.data.synthetic.world import World, worth_adding

UNIVERSITY_SHARE = 0.015  # of the annual volume, every September
SESSION_SIZE = 350  # freshmen per on-campus session, about; a university holds several
STUDENT_AGES = ((17, 17, 0.15), (18, 18, 0.7), (19, 20, 0.15))
STUDENT_MIGRANT = 0.6
CAMPUS_SIM = 0.6  # freshmen on a new SIM from the campus block
CAMPUS_ESCORTS = (2, 4)  # university staff who accompany a university's sessions
UNIVERSITY_ESCORTED = 0.6  # counter openings with a university staff member recorded
UNIVERSITY_REFERRED = 0.5
STUDENT_APP = 0.15  # freshmen who open on the app instead, assigned to the campus branch
STAFF_AGES = ((26, 58, 1.0),)

FACTORY_SHARE = 0.012
FACTORY_BATCH = (12, 80)
WORKER_AGES = ((16, 17, 0.03), (18, 25, 0.45), (26, 35, 0.32), (36, 50, 0.2))
WORKER_MIGRANT = 0.85
WORKER_NEW_SIM = 0.4
WORKER_HOME_ADDRESS = 0.25  # give the household-register address, not the dormitory
HR_ESCORTS = (1, 3)
FACTORY_ESCORTED = 0.7
BATCHES_PER_FACTORY = 6  # over the period, about
DISPATCH_AGENCIES = 8
DISPATCHED = 0.6  # factories that hire through a labour-dispatch agency
FACTORY_AFTER_HOURS = 0.1  # batches opened on site after the branch closes
FACTORY_ON_SITE = 0.15  # batches opened through the agent channel at the factory
# Hiring by month, January to December: the rush after the Spring Festival, the summer.
HIRING = np.array([0.6, 2.0, 2.5, 1.2, 0.9, 0.9, 1.4, 1.4, 0.9, 0.8, 0.8, 0.6])
INDUSTRIAL = (
    "宝安区",
    "龙岗区",
    "龙华区",
    "长安镇",
    "虎门镇",
    "南海区",
    "顺德区",
    "白云区",
    "增城区",
    "黄埔区",
)

AGENCY_SHARE = 0.008
AGENCY_CLIENTS = 120  # companies per agency over the period, about
AGENCY_CENTRES = (1, 2)  # business-centre addresses an agency registers its clients at
AGENCY_REPRESENTATIVE_AGES = ((25, 35, 0.45), (36, 55, 0.45), (56, 65, 0.1))
AGENCY_MIGRANT = 0.3
AGENCY_RECORDED = 0.9
AGENCY_ONSITE = 0.85
AGENCY_ON_SITE = 0.1  # openings through the agent channel

_UNIVERSITY_SALT = 21
_DISPATCH_SALT = 22
_AGENCY_SALT = 23


def _september_days(world: World) -> list[np.ndarray]:
    """The weekdays of the first three weeks of each September in the period."""
    days = world.period.days
    month = days.astype("datetime64[M]")
    september = (month.astype(np.int64) % 12 == 8) & ((days - month).astype(np.int64) < 21)
    picked = days[september & (day_weights(days) == 1.0)]
    years = picked.astype("datetime64[Y]")
    return [picked[years == y] for y in np.unique(years)]


def university_rows(world: World, rng: np.random.Generator) -> Draft | None:
    """Freshman sessions of every September in the period; a group per session."""
    network = world.network
    groups: list[dict[str, np.ndarray]] = []
    sessions = escorts = 0
    for days in _september_days(world):
        intake = round(UNIVERSITY_SHARE * world.annual_volume * len(days) / 15)
        count = int(np.clip(round(intake / 400), 1, len(UNIVERSITIES)))
        chosen = rng.choice(len(UNIVERSITIES), count, replace=False)
        for university, size in zip(chosen, rng.multinomial(intake, np.full(count, 1 / count)), strict=True):
            held = -(-size // SESSION_SIZE)
            session = np.repeat(np.arange(held), rng.multinomial(size, np.full(held, 1 / held)))
            campus_sim = rng.random(size) < CAMPUS_SIM
            staff = int(rng.integers(CAMPUS_ESCORTS[0], CAMPUS_ESCORTS[1] + 1))
            groups.append(
                {
                    "group": sessions + session,
                    "university": np.full(size, university),
                    "day": rng.choice(days, held)[session],
                    "seconds": queued(session, 9 * HOUR + rng.integers(0, HOUR, held), (20, 90), rng),
                    "escort": escorts + rng.integers(0, staff, size),
                    "phone": np.where(
                        campus_sim, block_phones(draw_block(rng, 0.1), size, rng), draw_phones(size, rng)
                    ),
                    "tenure": np.where(campus_sim, rng.integers(0, 11, size), tenure_days(size, rng, 0.1)),
                }
            )
            sessions += held
            escorts += staff
    if not groups:
        return None
    rows = stacked(groups)
    n = len(rows["group"])
    university = rows["university"]
    campus = np.array([u.district for u in UNIVERSITIES])
    branch = network.near(campus, rng)[university]
    app = rng.random(n) < STUDENT_APP
    channel = np.where(app, MOBILE, COUNTER)
    seconds = np.where(app, anytime_seconds(n, rng, 0.05), rows["seconds"])
    people = draw_applicants(rows["day"], draw_ages(n, STUDENT_AGES, rng), rng, STUDENT_MIGRANT)
    zone = rng.integers(0, len(CAMPUS_ZONES), n)
    dormitory = pc.binary_join_element_wise(
        pick([u.name for u in UNIVERSITIES], university), "学生宿舍", pick(CAMPUS_ZONES, zone), ""
    )
    address = street_address(
        campus[university],
        pick([u.road for u in UNIVERSITIES], university),
        np.array([u.number for u in UNIVERSITIES])[university],
        dormitory,
        spellings(n, SPELLING_VARIETY, rng),
        building=rng.integers(1, 31, n),
        room=rng.integers(1, 7, n) * 100 + rng.integers(1, 25, n),
    )
    return Draft.build(
        "university",
        at=stamp(rows["day"], seconds),
        branch=branch,
        channel=channel,
        staff=network.staff_at(branch, rng),
        id_number=people.id_number,
        phone=rows["phone"],
        tenure=rows["tenure"],
        address=address,
        device=rng.integers(0, DEVICE_SPACE, n),
        escort=escort_ids(
            rows["day"], rows["escort"], rng.random(n) < UNIVERSITY_ESCORTED, rng, STAFF_AGES, 0.3
        ),
        intermediary=np.where(
            rng.random(n) < UNIVERSITY_REFERRED, intermediary_numbers(university, _UNIVERSITY_SALT), -1
        ),
        photo_tampered=rng.random(n) < TAMPERED,
        u_shield=rng.random(n) < 0.03,
        mobile_banking=rng.random(n) < 0.92,
        payment_binding=rng.random(n) < 0.7,
        group=rows["group"],
    )


def _hiring_weights(days: np.ndarray) -> np.ndarray:
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    weights = HIRING[month] * day_weights(days)
    return weights / weights.sum()


def factory_rows(world: World, rng: np.random.Generator) -> Draft | None:
    """Payroll batches of the period's factories; a group per batch."""
    network = world.network
    budget = round(FACTORY_SHARE * world.volume)
    mean_batch = np.mean(FACTORY_BATCH)
    factories = max(2, round(budget / (BATCHES_PER_FACTORY * mean_batch)))
    industrial = np.array([i for i, d in enumerate(DISTRICTS) if d.name in INDUSTRIAL])
    district = rng.choice(industrial, factories)
    branch = network.near(district, rng)
    hr = rng.integers(HR_ESCORTS[0], HR_ESCORTS[1] + 1, factories)
    hr_first = np.cumsum(hr) - hr
    agency = np.where(rng.random(factories) < DISPATCHED, rng.integers(0, DISPATCH_AGENCIES, factories), -1)
    days = world.period.days
    weights = _hiring_weights(days)
    batches: list[dict[str, np.ndarray]] = []
    planned = 0
    while worth_adding(planned, size := int(np.clip(rng.lognormal(np.log(30), 0.5), *FACTORY_BATCH)), budget):
        f = int(rng.integers(0, factories))
        after_hours = rng.random() < FACTORY_AFTER_HOURS
        start = (17 * HOUR + HOUR // 2) if after_hours else 9 * HOUR + int(rng.integers(0, 4 * HOUR))
        batches.append(
            {
                "group": np.full(size, len(batches)),
                "factory": np.full(size, f),
                "day": np.full(size, days[rng.choice(len(days), p=weights)]),
                "seconds": queued(np.zeros(size, np.int64), np.array([start]), (120, 360), rng),
                "on_site": np.full(size, after_hours or rng.random() < FACTORY_ON_SITE),
                "escort": hr_first[f] + rng.integers(0, hr[f], size),
            }
        )
        planned += size
    if not batches:
        return None
    rows = stacked(batches)
    factory = rows["factory"]
    n = len(factory)
    people = draw_applicants(rows["day"], draw_ages(n, WORKER_AGES, rng), rng, WORKER_MIGRANT)
    channel = np.where(rows["on_site"], AGENT, COUNTER)
    address = mixed_addresses(
        (rng.random(n) < WORKER_HOME_ADDRESS).astype(np.int64),
        (Place.DORMITORY, None),
        district=district[factory],
        site=factory,
        home=people.home,
        variety=SPELLING_VARIETY,
        rng=rng,
    )
    dispatched = agency[factory] >= 0
    return Draft.build(
        "factory",
        at=stamp(rows["day"], rows["seconds"]),
        branch=branch[factory],
        channel=channel,
        staff=network.staff_at(branch[factory], rng),
        id_number=people.id_number,
        phone=draw_phones(n, rng),
        tenure=tenure_days(n, rng, WORKER_NEW_SIM),
        address=address,
        escort=escort_ids(
            rows["day"], rows["escort"], rng.random(n) < FACTORY_ESCORTED, rng, STAFF_AGES, 0.3
        ),
        intermediary=np.where(dispatched, intermediary_numbers(agency[factory], _DISPATCH_SALT), -1),
        photo_tampered=rng.random(n) < TAMPERED,
        u_shield=rng.random(n) < 0.03,
        mobile_banking=rng.random(n) < 0.85,
        payment_binding=rng.random(n) < 0.5,
        group=rows["group"],
    )


def agency_rows(world: World, rng: np.random.Generator) -> Draft | None:
    """Young companies registered by accounting agencies; a group per agency."""
    network = world.network
    budget = round(AGENCY_SHARE * world.volume)
    if budget == 0:
        return None
    agencies = max(2, round(budget / AGENCY_CLIENTS))
    district = rng.choice(len(DISTRICTS), agencies, p=network.district_weight())
    branch = network.near(district, rng)
    agency = np.sort(rng.integers(0, agencies, budget))
    n = budget
    day = draw_days(n, world.period.days, rng)
    # Each agency registers its clients at one or two business centres of its district.
    centres = rng.integers(0, SITES, (agencies, AGENCY_CENTRES[1]))
    used = rng.integers(AGENCY_CENTRES[0], AGENCY_CENTRES[1] + 1, agencies)
    site = centres[agency, (rng.random(n) * used[agency]).astype(np.int64)]
    ages = draw_ages(n, AGENCY_REPRESENTATIVE_AGES, rng)
    people = draw_applicants(day, ages, rng, AGENCY_MIGRANT)
    on_site = rng.random(n) < AGENCY_ON_SITE
    return Draft.build(
        "accounting_agency",
        at=stamp(day, counter_seconds(n, rng)),
        branch=branch[agency],
        channel=np.where(on_site, AGENT, COUNTER),
        corporate=np.ones(n, bool),
        staff=network.staff_at(branch[agency], rng, corporate=True),
        id_number=people.id_number,
        phone=draw_phones(n, rng),
        tenure=tenure_days(n, rng, 0.05),
        address=mixed_addresses(
            np.zeros(n, np.int64),
            (Place.BUSINESS_CENTRE,),
            district=district[agency],
            site=site,
            home=people.home,
            variety=SPELLING_VARIETY,
            rng=rng,
        ),
        intermediary=np.where(
            rng.random(n) < AGENCY_RECORDED, intermediary_numbers(agency, _AGENCY_SALT), -1
        ),
        photo_tampered=rng.random(n) < TAMPERED,
        onsite=rng.random(n) < AGENCY_ONSITE,
        company_id=usccs(DISTRICT_CODE[district[agency]], rng),
        company_age=rng.integers(3, 91, n),
        u_shield=rng.random(n) < 0.9,
        mobile_banking=rng.random(n) < 0.8,
        payment_binding=rng.random(n) < 0.3,
        group=agency,
    )
