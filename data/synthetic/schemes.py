"""Mule schemes from the 断卡 cases, and how they adapt over the period.

- ``escort_ring``: a few escorts bring recruits from one to three provinces in
  small batches, lodge them in hotels and 公寓, hand them new SIM cards from one
  number block, and have each open the full bundle (U盾, mobile banking, payment
  binding), spread over several branches, some recruits at several branches.
- ``shell_company``: an intermediary registers young companies at virtual offices
  with legal representatives recruited like card farmers, and opens their
  corporate accounts.
- ``insider``: a few corporate-desk staff open fake corporate accounts without the
  on-site check or with doctored site photos, hundreds over a year or two.
- ``solo_seller``: people who open an account to sell it, with only weak signals.

Adaptation: rings learn. From the period's start to its end (each ``(start, end)``
pair below moves linearly) they spread over more branches, their escorts are
recorded less often, more of their openings move to the app on shared phones,
and their addresses are written in more variants. Some recruits show none of the
signals: own phone, own address, no escort recorded.

Scenarios: once a bank watches for the rings' tells, the rings change them. The
parameters such a change moves (escorts recorded, number blocks, devices, hotels,
branches and visits per ring, insiders' postings) are read from
``world.scenario``; their values in today's world are the defaults of
:class:`duanka.data.synthetic.scenarios.Scenario`, the constants below all the others.

One job, planning the mule schemes, past 500 lines: the schemes share the recruit, SIM and
branch helpers here, and one file keeps their adaptations comparable side by side.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from duanka.data.synthetic.addresses import SITES, Place, mixed_addresses
from duanka.data.synthetic.identifiers import DEVICE_SPACE, intermediary_numbers, usccs
from duanka.data.synthetic.network import CORPORATE_DESK
from duanka.data.synthetic.people import (
    COUNTIES_OF,
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
    after_hours_seconds,
    anytime_seconds,
    counter_seconds,
    draw_days,
    queued,
    ramp,
    stamp,
)
from duanka.data.synthetic.places import BUSINESS_CENTRES, CITIES, DISTRICT_CODE, MIGRATION, PROVINCES
from duanka.data.synthetic.population import AGENTS, agent_numbers
from duanka.data.synthetic.rows import COUNTER, MOBILE, Draft, stacked
from duanka.data.synthetic.world import World, worth_adding

RING_SHARE = 0.0045  # of all applications
RECRUITS = (4, 40)  # per ring; median about 12
ACCOUNTS_PER_RECRUIT = (0.72, 0.20, 0.08)  # one, two or three, at different branches
RING_ESCORTS = (1, 3)
RING_PROVINCES = (1, 3)
RING_DAYS = (5, 45)  # a ring's active window
RECRUIT_AGES = ((16, 17, 0.04), (18, 25, 0.5), (26, 40, 0.3), (41, 54, 0.06), (55, 72, 0.1))
ESCORT_AGES = ((22, 45, 1.0),)
ALONE_AGES = ((26, 40, 0.45), (41, 60, 0.55))  # recruits sent alone: older than the ring's others
RECRUIT_PLACES = (Place.LODGING, None, Place.RESIDENCE)  # None: household-register address
RECRUIT_PLACE_SHARES = (0.7, 0.2, 0.1)
BLOCK_TENURE = 14  # days, at most, those SIMs are old
FULL_BUNDLE = 0.85
RING_TAMPERED = 0.02
RING_REFERRED = 0.1  # rings that name a referrer, on half their openings
RING_NIGHT = 0.35  # of their app openings
RING_APP = (0.05, 0.55)  # openings on the app, on the ring's few shared phones
RING_VARIETY = (0.1, 0.75)

SHELL_SHARE = 0.0015
SHELL_COMPANIES = (5, 30)  # per operation; median about 12
SHELL_DAYS = (30, 120)
SHELL_BRANCHES = (1.0, 4.0)
SHELL_VIRTUAL = 0.7  # of their addresses at a 众创空间, 孵化器 or 托管中心
REPRESENTATIVE_AGES = ((18, 30, 0.55), (31, 50, 0.25), (51, 68, 0.2))
REPRESENTATIVE_MIGRANT = 0.7
SHELL_NEW_SIM = 0.45
SHELL_REUSED = 0.1  # companies whose representative already fronts another
SHELL_COMPANY_AGE = (1, 60)
SHELL_ONSITE = 0.55
SHELL_RECORDED = 0.75  # openings that name the intermediary
SHELL_FULL_BUNDLE = 0.8
SHELL_TAMPERED = 0.05
SHELL_VARIETY = (0.15, 0.6)

INSIDER_SHARE = 0.001
INSIDER_ACCOUNTS = 250  # per insider over the period, about
INSIDERS = (1, 6)
INSIDER_MONTHS = (6, 20)  # active, within the period
INSIDER_ONSITE = 0.3
INSIDER_TAMPERED = (0.35, 0.75)  # without, with an on-site visit recorded (a doctored photo)
INSIDER_AFTER_HOURS = 0.25
INSIDER_COMPANY_AGE = (1, 120)
INSIDER_PLACES = (Place.OFFICE, Place.BUSINESS_CENTRE, Place.RESIDENCE)
INSIDER_PLACE_SHARES = (0.5, 0.2, 0.3)
INSIDER_AGES = ((20, 35, 0.4), (36, 55, 0.4), (56, 70, 0.2))
INSIDER_MIGRANT = 0.45
INSIDER_NEW_SIM = 0.35
INSIDER_REFERRED = 0.15

SOLO_SHARE = 0.003
SOLO_AGES = ((16, 17, 0.03), (18, 25, 0.5), (26, 40, 0.3), (41, 60, 0.12), (61, 75, 0.05))
SOLO_MIGRANT = 0.5
SOLO_APP = 0.55
SOLO_NIGHT = 0.15
SOLO_NEW_SIM = 0.25
SOLO_PLACES = (Place.RESIDENCE, None, Place.RENTAL, Place.LODGING)
SOLO_PLACE_SHARES = (0.6, 0.2, 0.12, 0.08)
SOLO_ESCORTED = 0.03
SOLO_REFERRED = 0.05
SOLO_VARIETY = 0.3

_VIRTUAL_OFFICES = np.array(
    [i for i, name in enumerate(BUSINESS_CENTRES) if any(k in name for k in ("众创空间", "孵化器", "托管"))]
)
_REFERRER_SALT = 31
_SHELL_SALT = 32


def _lognormal_count(rng: np.random.Generator, bounds: tuple[int, int], median: float) -> int:
    return int(np.clip(rng.lognormal(np.log(median), 0.6), *bounds))


def _bundle(n: int, rng: np.random.Generator, full: float) -> tuple[np.ndarray, ...]:
    """U盾, mobile banking and payment binding: all three w.p. ``full``, else each w.p. 0.6."""
    whole = rng.random(n) < full
    return tuple(whole | (rng.random(n) < 0.6) for _ in range(3))


def _city_weights(world: World) -> np.ndarray:
    weight = np.bincount(world.network.branch_city, world.network.branch_weight, len(CITIES))
    return weight / weight.sum()


def _branches(world: World, city: int, count: int, rng: np.random.Generator) -> np.ndarray:
    local = world.network.branches_in(city)
    weight = world.network.branch_weight[local]
    count = min(max(count, 1), len(local))
    return rng.choice(local, count, replace=False, p=weight / weight.sum())


def _count(bounds: tuple[int, int], rng: np.random.Generator) -> int:
    """A whole number drawn uniformly from the inclusive ``bounds``."""
    return int(rng.integers(bounds[0], bounds[1] + 1))


def _ring_phones(blocks: tuple[int, int], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` recruits' numbers from the ring's blocks, as many as drawn from ``blocks``.

    A ring with one block draws exactly what the default world always drew: one
    block, then its numbers.
    """
    count = blocks[0] if blocks[0] == blocks[1] else _count(blocks, rng)
    which = np.zeros(n, np.int64) if count == 1 else rng.integers(0, count, n)
    phone = np.empty(n, np.int64)
    for b in range(count):
        rows = np.flatnonzero(which == b)
        phone[rows] = block_phones(draw_block(rng, 0.5), len(rows), rng)
    return phone


def _window(world: World, bounds: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Consecutive days of the period, as many as drawn from ``bounds`` (fewer if it is short)."""
    days = world.period.days
    length = min(int(rng.integers(bounds[0], bounds[1] + 1)), len(days))
    first = int(rng.integers(0, len(days) - length + 1))
    return days[first : first + length]


def _fellow_villagers(
    counties: tuple[int, int], provinces: np.ndarray, people: int, rng: np.random.Generator
) -> np.ndarray:
    """Each recruit's home county (index into HOMES) when the ring recruits from a few home
    counties of its provinces (老乡带老乡); -1 each where ``counties`` is (0, 0)."""
    if counties == (0, 0):
        return np.full(people, -1)
    pool = np.concatenate([COUNTIES_OF[p] for p in provinces])
    drawn = rng.choice(pool, min(_count(counties, rng), len(pool)), replace=False)
    return rng.choice(drawn, people)


def ring_rows(world: World, rng: np.random.Generator) -> Draft | None:
    """Escort rings of the whole period; a group per ring."""
    budget = round(RING_SHARE * world.volume)
    adapted = world.scenario
    last_day = world.period.days[-1]
    city_weight = _city_weights(world)
    recruits: list[dict[str, np.ndarray]] = []
    accounts: list[dict[str, np.ndarray]] = []
    planned = escorts = taken = 0
    while True:
        ring = len(recruits)
        window = _window(world, RING_DAYS, rng)
        progress = float(world.period.progress(stamp(window[len(window) // 2], 0)))
        city = int(rng.choice(len(CITIES), p=city_weight))
        branches = _branches(world, city, round(ramp(adapted.ring_branches, progress) + rng.normal()), rng)
        people = _lognormal_count(rng, RECRUITS, 12)
        # Each recruit opens one to three accounts: the first during the visit, the
        # others at the ring's next branches over the following days.
        opened = np.minimum(rng.choice(3, people, p=ACCOUNTS_PER_RECRUIT) + 1, len(branches))
        if not worth_adding(planned, int(opened.sum()), budget):
            break
        escort_count = int(rng.integers(RING_ESCORTS[0], RING_ESCORTS[1] + 1))
        provinces = rng.choice(
            len(PROVINCES),
            int(rng.integers(RING_PROVINCES[0], RING_PROVINCES[1] + 1)),
            replace=False,
            p=MIGRATION,
        )
        hotels = rng.integers(0, SITES, _count(adapted.ring_hotels, rng))
        hotel_district = rng.choice(world.districts_of(city), len(hotels))
        devices = rng.integers(0, DEVICE_SPACE, _count(adapted.ring_devices, rng))

        # The last recruits are the ones sent alone (recruits are interchangeable).
        sent = ramp(adapted.sent_alone, progress)
        alone = np.arange(people) >= people - (rng.binomial(people, sent) if sent > 0 else 0)
        opened[alone] = 1
        # Recruits come in visits: a few at a time, one escort, one branch, one after another;
        # one sent alone is a visit of one.
        together = people - int(alone.sum())
        sizes = []
        while sum(sizes) < together:
            sizes.append(min(together - sum(sizes), _count(adapted.visit, rng)))
        sizes += [1] * (people - together)
        visit = np.repeat(np.arange(len(sizes)), sizes)
        visits = len(sizes)
        visit_day = rng.choice(window, visits)
        visit_branch = rng.integers(0, len(branches), visits)
        served = queued(visit, 9 * HOUR + HOUR // 2 + rng.integers(0, 5 * HOUR, visits), (480, 1500), rng)

        block_sim = (rng.random(people) < adapted.block_sim) & ~alone
        hotel = rng.integers(0, len(hotels), people)
        province = rng.choice(provinces, people)
        place = rng.choice(len(RECRUIT_PLACES), people, p=RECRUIT_PLACE_SHARES)
        place[alone] = RECRUIT_PLACES.index(None)
        recruits.append(
            {
                "progress": np.full(people, progress),
                "alone": alone,
                "province": province,
                "place": place,
                "county": _fellow_villagers(adapted.ring_counties, provinces, people, rng),
                "district": hotel_district[hotel],
                "site": hotels[hotel],
                "day": visit_day[visit],
                "phone": np.where(
                    block_sim, _ring_phones(adapted.ring_blocks, people, rng), draw_phones(people, rng)
                ),
                "tenure": np.where(
                    block_sim, rng.integers(0, BLOCK_TENURE + 1, people), tenure_days(people, rng, 0.1)
                ),
            }
        )

        recruit = np.repeat(np.arange(people), opened)
        nth = np.arange(len(recruit)) - np.repeat(np.cumsum(opened) - opened, opened)
        later = nth > 0
        rows = len(recruit)
        # sent alone: a first visit at the counter, not an app opening on the ring's phones
        app = (rng.random(rows) < ramp(RING_APP, progress)) & ~alone[recruit]
        own_visit = visit[recruit]
        day = np.minimum(visit_day[own_visit] + np.where(later, rng.integers(1, 5, rows), 0), last_day)
        seconds = np.where(later, counter_seconds(rows, rng), served[recruit])
        referrer = rng.random() < RING_REFERRED
        accounts.append(
            {
                "recruit": taken + recruit,
                "group": np.full(rows, ring),
                "day": day,
                "seconds": np.where(app, anytime_seconds(rows, rng, RING_NIGHT), seconds),
                "channel": np.where(app, MOBILE, COUNTER),
                "branch": branches[(visit_branch[own_visit] + nth) % len(branches)],
                "device": devices[rng.integers(0, len(devices), rows)],
                "escort": escorts + rng.integers(0, escort_count, visits)[own_visit],
                "recorded": (rng.random(rows) < ramp(adapted.escort_recorded, progress)) & ~alone[recruit],
                "referred": referrer & (rng.random(rows) < 0.5),
            }
        )
        planned += rows
        taken += people
        escorts += escort_count
    if not accounts:
        return None
    who, rows = stacked(recruits), stacked(accounts)
    ages = draw_ages(taken, RECRUIT_AGES, rng)
    if who["alone"].any():
        ages[who["alone"]] = draw_ages(int(who["alone"].sum()), ALONE_AGES, rng)
    county = who["county"]
    people = draw_applicants(
        who["day"], ages, rng, 1.0, who["province"], None if (county < 0).all() else county
    )
    address = mixed_addresses(
        who["place"],
        RECRUIT_PLACES,
        district=who["district"],
        site=np.where(
            who["place"] == RECRUIT_PLACES.index(Place.RESIDENCE),
            world.households_in(who["district"], rng),
            who["site"],
        ),
        home=people.home,
        variety=ramp(RING_VARIETY, who["progress"]),
        rng=rng,
    )
    recruit = pa.array(rows["recruit"])
    n = len(rows["group"])
    u_shield, mobile_banking, payment_binding = _bundle(n, rng, FULL_BUNDLE)
    return Draft.build(
        "escort_ring",
        at=stamp(rows["day"], rows["seconds"]),
        branch=rows["branch"],
        channel=rows["channel"],
        staff=world.network.staff_at(rows["branch"], rng),
        id_number=people.id_number.take(recruit),
        phone=who["phone"][rows["recruit"]],
        tenure=who["tenure"][rows["recruit"]],
        address=address.take(recruit),
        device=rows["device"],
        escort=escort_ids(rows["day"], rows["escort"], rows["recorded"], rng, ESCORT_AGES, 0.5),
        intermediary=np.where(rows["referred"], intermediary_numbers(rows["group"], _REFERRER_SALT), -1),
        photo_tampered=rng.random(n) < RING_TAMPERED,
        u_shield=u_shield,
        mobile_banking=mobile_banking,
        payment_binding=payment_binding,
        group=rows["group"],
    )


def shell_rows(world: World, rng: np.random.Generator) -> Draft | None:
    """Shell-company operations of the whole period; a group per operation."""
    budget = round(SHELL_SHARE * world.volume)
    city_weight = _city_weights(world)
    operations: list[dict[str, np.ndarray]] = []
    planned = 0
    while worth_adding(planned, m := _lognormal_count(rng, SHELL_COMPANIES, 12), budget):
        operation = len(operations)
        window = _window(world, SHELL_DAYS, rng)
        progress = float(world.period.progress(stamp(window[len(window) // 2], 0)))
        city = int(rng.choice(len(CITIES), p=city_weight))
        branches = _branches(world, city, round(ramp(SHELL_BRANCHES, progress) + rng.normal()), rng)
        district = rng.choice(world.districts_of(city), 2)
        # Mostly virtual offices: sites whose name is a 众创空间, 孵化器 or 托管中心.
        virtual = rng.choice(_VIRTUAL_OFFICES, 2) + len(BUSINESS_CENTRES) * rng.integers(0, 3, 2)
        office = np.where(rng.random(2) < SHELL_VIRTUAL, virtual, rng.integers(0, SITES, 2))
        where = rng.integers(0, 2, m)
        # A recruited representative sometimes fronts a second company.
        representative = np.arange(m)
        reused = (rng.random(m) < SHELL_REUSED) & (representative > 0)
        representative[reused] = rng.integers(0, np.maximum(representative[reused], 1))
        operations.append(
            {
                "group": np.full(m, operation),
                "progress": np.full(m, progress),
                "day": draw_days(m, window, rng),
                "branch": branches[rng.integers(0, len(branches), m)],
                "district": district[where],
                "site": office[where],
                "representative": planned + representative,
            }
        )
        planned += m
    if not operations:
        return None
    rows = stacked(operations)
    n = len(rows["group"])
    # Representatives are drawn once each, on the day of their first company.
    represented, first = np.unique(rows["representative"], return_index=True)
    who = np.searchsorted(represented, rows["representative"])
    ages = draw_ages(len(represented), REPRESENTATIVE_AGES, rng)
    people = draw_applicants(rows["day"][first], ages, rng, REPRESENTATIVE_MIGRANT)
    phone, tenure = draw_phones(len(represented), rng), tenure_days(len(represented), rng, SHELL_NEW_SIM, 60)
    u_shield, mobile_banking, payment_binding = _bundle(n, rng, SHELL_FULL_BUNDLE)
    return Draft.build(
        "shell_company",
        at=stamp(rows["day"], counter_seconds(n, rng)),
        branch=rows["branch"],
        channel=np.full(n, COUNTER),
        corporate=np.ones(n, bool),
        staff=world.network.staff_at(rows["branch"], rng, corporate=True),
        id_number=people.id_number.take(pa.array(who)),
        phone=phone[who],
        tenure=tenure[who],
        address=mixed_addresses(
            np.zeros(n, np.int64),
            (Place.BUSINESS_CENTRE,),
            district=rows["district"],
            site=rows["site"],
            home=people.home[who],
            variety=ramp(SHELL_VARIETY, rows["progress"]),
            rng=rng,
        ),
        escort=escort_ids(
            rows["day"], rows["group"], rng.random(n) < world.scenario.shell_escorted, rng, ESCORT_AGES, 0.3
        ),
        intermediary=np.where(
            rng.random(n) < SHELL_RECORDED, intermediary_numbers(rows["group"], _SHELL_SALT), -1
        ),
        photo_tampered=rng.random(n) < SHELL_TAMPERED,
        onsite=rng.random(n) < SHELL_ONSITE,
        company_id=usccs(DISTRICT_CODE[rows["district"]], rng),
        company_age=rng.integers(SHELL_COMPANY_AGE[0], SHELL_COMPANY_AGE[1] + 1, n),
        u_shield=u_shield,
        mobile_banking=mobile_banking,
        payment_binding=payment_binding,
        group=rows["group"],
    )


def insider_rows(world: World, rng: np.random.Generator) -> Draft | None:
    """Fake corporate accounts opened by insiders; a group per insider."""
    budget = round(INSIDER_SHARE * world.volume)
    if budget == 0:
        return None
    network = world.network
    insiders = int(np.clip(round(budget / INSIDER_ACCOUNTS), *INSIDERS))
    branch = network.draw_branches(insiders, rng)
    staff = network.staff_first[branch] + rng.integers(0, CORPORATE_DESK, insiders)
    insider = rng.integers(0, insiders, budget)
    n = budget
    day = np.empty(n, "datetime64[D]")
    for who in range(insiders):
        rows = np.flatnonzero(insider == who)
        months = int(rng.integers(*INSIDER_MONTHS))
        day[rows] = draw_days(len(rows), _window(world, (months * 30, months * 30), rng), rng)
    branch, staff = _postings(world, branch, staff, insider, day, rng)
    after = rng.random(n) < INSIDER_AFTER_HOURS
    seconds = np.where(after, after_hours_seconds(n, rng), counter_seconds(n, rng))
    people = draw_applicants(day, draw_ages(n, INSIDER_AGES, rng), rng, INSIDER_MIGRANT)
    home_district = network.branch_district[branch]
    district = np.where(rng.random(n) < 0.5, home_district, world.same_city(home_district, rng))
    place = rng.choice(len(INSIDER_PLACES), n, p=INSIDER_PLACE_SHARES)
    onsite = rng.random(n) < INSIDER_ONSITE
    u_shield, mobile_banking, payment_binding = _bundle(n, rng, 0.7)
    return Draft.build(
        "insider",
        at=stamp(day, seconds),
        branch=branch,
        channel=np.full(n, COUNTER),
        corporate=np.ones(n, bool),
        staff=staff,
        id_number=people.id_number,
        phone=draw_phones(n, rng),
        tenure=tenure_days(n, rng, INSIDER_NEW_SIM, 60),
        address=mixed_addresses(
            place,
            INSIDER_PLACES,
            district=district,
            site=np.where(
                place == INSIDER_PLACES.index(Place.RESIDENCE),
                world.households_in(district, rng),
                rng.integers(0, SITES, n),
            ),
            home=people.home,
            variety=0.25,
            rng=rng,
        ),
        intermediary=np.where(
            rng.random(n) < INSIDER_REFERRED, agent_numbers(rng.integers(0, AGENTS, n)), -1
        ),
        photo_tampered=rng.random(n) < np.where(onsite, INSIDER_TAMPERED[1], INSIDER_TAMPERED[0]),
        onsite=onsite,
        company_id=usccs(DISTRICT_CODE[district], rng),
        company_age=rng.integers(INSIDER_COMPANY_AGE[0], INSIDER_COMPANY_AGE[1] + 1, n),
        u_shield=u_shield,
        mobile_banking=mobile_banking,
        payment_binding=payment_binding,
        group=insider,
    )


def _postings(
    world: World,
    branch: np.ndarray,
    staff: np.ndarray,
    insider: np.ndarray,
    day: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Per opening, the branch and the staff member it is recorded under.

    Parameters
    ----------
    world : World
    branch, staff : numpy.ndarray
        Per insider, the branch and corporate-desk staff member they start at.
    insider : numpy.ndarray
        Per opening, its insider.
    day : numpy.ndarray
        Per opening, its day.
    rng : numpy.random.Generator

    Notes
    -----
    By default an insider stays at one desk, so every opening carries one staff
    id. Where the scenario posts insiders to several branches of their city in
    turn, their openings in day order fall into consecutive spells, one per
    posting, each under the insider's id at that branch's corporate desk; where
    it has them borrow, a share of openings goes under the desk colleague's id.
    The default world draws nothing here.
    """
    posts, borrowed = world.scenario.insider_posts, world.scenario.insider_borrowed
    network = world.network
    row_branch, row_staff = branch[insider], staff[insider]
    if posts[1] > 1:
        for who in range(len(branch)):
            rows = np.flatnonzero(insider == who)
            local = network.branches_in(int(network.branch_city[branch[who]]))
            others = local[local != branch[who]]
            count = min(_count(posts, rng), len(others) + 1, max(len(rows), 1))
            if count < 2:
                continue
            weight = network.branch_weight[others]
            sequence = np.concatenate(
                [[branch[who]], rng.choice(others, count - 1, replace=False, p=weight / weight.sum())]
            )
            seat = np.concatenate(
                [[staff[who] - network.staff_first[branch[who]]], rng.integers(0, CORPORATE_DESK, count - 1)]
            )
            order = rows[np.argsort(day[rows], kind="stable")]
            cuts = np.sort(rng.choice(np.arange(1, len(rows)), count - 1, replace=False))
            spell = np.searchsorted(cuts, np.arange(len(rows)), side="right")
            row_branch[order] = sequence[spell]
            row_staff[order] = network.staff_first[sequence[spell]] + seat[spell]
    if borrowed > 0:
        n = len(insider)
        first = network.staff_first[row_branch]
        colleague = (row_staff - first + rng.integers(1, CORPORATE_DESK, n)) % CORPORATE_DESK
        row_staff = np.where(rng.random(n) < borrowed, first + colleague, row_staff)
    return row_branch, row_staff


def solo_rows(world: World, rng: np.random.Generator) -> Draft | None:
    """People who open an account to sell it, over the whole period; no groups."""
    n = round(SOLO_SHARE * world.volume)
    if n == 0:
        return None
    network = world.network
    day = draw_days(n, world.period.days, rng)
    app = rng.random(n) < SOLO_APP
    seconds = np.where(app, anytime_seconds(n, rng, SOLO_NIGHT), counter_seconds(n, rng))
    branch = network.draw_branches(n, rng)
    # They live anywhere in the city, not necessarily near the branch they use.
    district = world.same_city(network.branch_district[branch], rng)
    people = draw_applicants(day, draw_ages(n, SOLO_AGES, rng), rng, SOLO_MIGRANT)
    place = rng.choice(len(SOLO_PLACES), n, p=SOLO_PLACE_SHARES)
    counter = ~app
    return Draft.build(
        "solo_seller",
        at=stamp(day, seconds),
        branch=branch,
        channel=np.where(app, MOBILE, COUNTER),
        staff=network.staff_at(branch, rng),
        id_number=people.id_number,
        phone=draw_phones(n, rng),
        tenure=tenure_days(n, rng, SOLO_NEW_SIM, 60),
        address=mixed_addresses(
            place,
            SOLO_PLACES,
            district=district,
            site=np.where(
                place == SOLO_PLACES.index(Place.RESIDENCE),
                world.households_in(district, rng),
                rng.integers(0, SITES, n),
            ),
            home=people.home,
            variety=SOLO_VARIETY,
            rng=rng,
        ),
        device=rng.integers(0, DEVICE_SPACE, n),
        escort=escort_ids(
            day, np.arange(n), counter & (rng.random(n) < SOLO_ESCORTED), rng, ESCORT_AGES, 0.3
        ),
        intermediary=np.where(rng.random(n) < SOLO_REFERRED, agent_numbers(rng.integers(0, AGENTS, n)), -1),
        photo_tampered=rng.random(n) < 0.01,
        u_shield=rng.random(n) < 0.3,
        mobile_banking=rng.random(n) < 0.95,
        payment_binding=rng.random(n) < 0.85,
    )
