"""The feature registry: every feature declared once, and the list a model uses.

This module is the declaration table, one :class:`~duanka.features.declaration.Feature` per
feature, which is why it runs past 500 lines; what a declaration is made of lives in
:mod:`duanka.features.declaration`. The offline builder and the online store both evaluate
exactly these declarations; only the engine that counts differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence

import numpy as np

from duanka.features import values
from duanka.features.declaration import Aggregate, Entity, Family, Feature, Op

WINDOWS_DAYS = (1, 7, 30, 90, 365)
MAX_WINDOW_DAYS = max(WINDOWS_DAYS)
CONFIRMED_WINDOW_DAYS = 365

# The linked group's bound (see features.linked): the same numbers in both engines.
LINK_WINDOW_DAYS = 30
LINK_FANOUT = 5
LINK_KEYS = ("escort_key", "address_key", "phone_key", "device_key", "intermediary_key")


def _distinct_applicants(
    *, entity: Entity, family: Family, days: int, prefix: str, zh: str, en: str
) -> Feature:
    return Feature(
        name=f"{prefix}_applicants_{days}d",
        family=family,
        entity=entity,
        window_days=days,
        zh=zh.format(days=days),
        en=en.format(days=days),
        transform=values.count,
        # other applicants: the same person applying twice is not a ring (applicant_prior_*)
        inputs=(Aggregate(entity, Op.OTHERS, days, "applicant_key"),),
    )


def _listed_applications(*, entity: Entity, family: Family, prefix: str, zh: str, en: str) -> Feature:
    """Applications of ``entity`` in the last year whose applicant had been listed before ``t``.

    The same window and point-in-time rule as the confirmed-mule counts, with the
    applicant's earliest listing in place of the application's confirmation; monotone like
    them: one more listed applicant among the entity's applications never makes it safer.
    """
    days = CONFIRMED_WINDOW_DAYS
    return Feature(
        name=f"{prefix}_listed_applications_{days}d",
        family=family,
        entity=entity,
        window_days=days,
        zh=zh,
        en=en,
        transform=values.count,
        inputs=(Aggregate(entity, Op.LISTED, days),),
        monotone=1,
    )


E, F = Entity, Family
_ESC, _INT, _ADR, _STF, _SAB, _BR = (
    E.ESCORT,
    E.INTERMEDIARY,
    E.ADDRESS,
    E.STAFF,
    E.STAFF_AT_BRANCH,
    E.BRANCH,
)

_escort = (
    *(
        _distinct_applicants(
            entity=_ESC,
            family=F.ESCORT,
            days=d,
            prefix="escort",
            zh="该陪同人近{days}天陪同{{value}}名不同开户人",
            en="The escort accompanied {{value}} different applicants in the last {days} days",
        )
        for d in (1, 7, 30, 90)
    ),
    Feature(
        name="escort_branches_30d",
        family=F.ESCORT,
        entity=_ESC,
        window_days=30,
        zh="该陪同人近30天在{value}个不同网点陪同开户",
        en="The escort accompanied applicants at {value} different branches in the last 30 days",
        transform=values.count,
        inputs=(Aggregate(_ESC, Op.DISTINCT, 30, "branch_id"),),
    ),
    Feature(
        name="escort_home_provinces_30d",
        family=F.ESCORT,
        entity=_ESC,
        window_days=30,
        zh="该陪同人近30天陪同的开户人来自{value}个不同省份",
        en="Applicants the escort accompanied in the last 30 days came from {value} provinces",
        transform=values.count,
        inputs=(Aggregate(_ESC, Op.DISTINCT, 30, "home_province"),),
    ),
    Feature(
        name="escort_out_of_province_share_30d",
        family=F.ESCORT,
        entity=_ESC,
        window_days=30,
        zh="该陪同人近30天陪同的开户中外省人员占比{value}",
        en="Share of the escort's openings in the last 30 days by people from another province: {value}",
        transform=values.share,
        inputs=(Aggregate(_ESC, Op.FLAGGED, 30, "out_of_province"), Aggregate(_ESC, Op.COUNT, 30)),
    ),
    Feature(
        name="escort_confirmed_mules_365d",
        family=F.ESCORT,
        entity=_ESC,
        window_days=365,
        zh="该陪同人近一年陪同开立的账户中已有{value}个被确认为涉诈账户",
        en="{value} accounts the escort accompanied in the last year are confirmed mule accounts",
        transform=values.count,
        inputs=(Aggregate(_ESC, Op.CONFIRMED, 365),),
        monotone=1,
    ),
    _listed_applications(
        entity=_ESC,
        family=F.ESCORT,
        prefix="escort",
        zh="该陪同人近一年陪同的开户申请中有{value}笔的开户人已被列入联合惩戒名单",
        en="{value} applications the escort accompanied in the last year were by people on a "
        "joint-punishment list",
    ),
)

_intermediary = (
    *(
        Feature(
            name=f"intermediary_applications_{d}d",
            family=F.INTERMEDIARY,
            entity=_INT,
            window_days=d,
            zh=f"该中介近{d}天经办{{value}}笔开户申请",
            en=f"The intermediary brought {{value}} applications in the last {d} days",
            transform=values.count,
            inputs=(Aggregate(_INT, Op.COUNT, d),),
        )
        for d in (7, 30, 90)
    ),
    _distinct_applicants(
        entity=_INT,
        family=F.INTERMEDIARY,
        days=30,
        prefix="intermediary",
        zh="该中介近{days}天经办{{value}}名不同开户人",
        en="The intermediary brought {{value}} different applicants in the last {days} days",
    ),
    Feature(
        name="intermediary_corporate_share_30d",
        family=F.INTERMEDIARY,
        entity=_INT,
        window_days=30,
        zh="该中介近30天经办的开户中对公账户占比{value}",
        en="Share of corporate accounts among the intermediary's applications in the last 30 days: {value}",
        transform=values.share,
        inputs=(Aggregate(_INT, Op.FLAGGED, 30, "corporate"), Aggregate(_INT, Op.COUNT, 30)),
    ),
    Feature(
        name="intermediary_addresses_30d",
        family=F.INTERMEDIARY,
        entity=_INT,
        window_days=30,
        zh="该中介近30天经办的开户涉及{value}个不同地址",
        en="The intermediary's applications in the last 30 days gave {value} different addresses",
        transform=values.count,
        inputs=(Aggregate(_INT, Op.DISTINCT, 30, "address_key"),),
    ),
    Feature(
        name="intermediary_young_company_share_30d",
        family=F.INTERMEDIARY,
        entity=_INT,
        window_days=30,
        zh="该中介近30天经办的对公开户中成立不满90天的企业占比{value}",
        en="Share of companies under 90 days old among the intermediary's corporate applications "
        "in the last 30 days: {value}",
        transform=values.share,
        inputs=(
            Aggregate(_INT, Op.FLAGGED, 30, "young_company"),
            Aggregate(_INT, Op.FLAGGED, 30, "corporate"),
        ),
    ),
    Feature(
        name="intermediary_confirmed_mules_365d",
        family=F.INTERMEDIARY,
        entity=_INT,
        window_days=365,
        zh="该中介近一年经办的账户中已有{value}个被确认为涉诈账户",
        en="{value} accounts the intermediary brought in the last year are confirmed mule accounts",
        transform=values.count,
        inputs=(Aggregate(_INT, Op.CONFIRMED, 365),),
        monotone=1,
    ),
    _listed_applications(
        entity=_INT,
        family=F.INTERMEDIARY,
        prefix="intermediary",
        zh="该中介近一年经办的开户申请中有{value}笔的开户人已被列入联合惩戒名单",
        en="{value} applications the intermediary brought in the last year were by people on a "
        "joint-punishment list",
    ),
)

_address = (
    Feature(
        name="address_kind",
        family=F.ADDRESS,
        entity=E.APPLICATION,
        window_days=None,
        zh="地址类型：{value}",
        en="Address kind: {value}",
        transform=values.address_kind_code,
        inputs=("address_kind",),
        codes=values.ADDRESS_KIND_CODES,
    ),
    *(
        _distinct_applicants(
            entity=_ADR,
            family=F.ADDRESS,
            days=d,
            prefix="address",
            zh="同一地址（楼栋）近{days}天有{{value}}名不同开户人",
            en="{{value}} different applicants gave the same building in the last {days} days",
        )
        for d in (30, 90)
    ),
    Feature(
        name="address_outside_branch_province",
        family=F.ADDRESS,
        entity=E.APPLICATION,
        window_days=None,
        zh="登记地址在开户网点所在省份之外（{value}）",
        en="The address given is in another province than the branch ({value})",
        transform=values.elsewhere,
        inputs=("address_province", "branch_province"),
    ),
    Feature(
        # How usual the pairing of this branch and the address's province is: a village address
        # three provinces away is ordinary at some branches and rare at most (异地开户).
        name="branch_address_province_share_365d",
        family=F.ADDRESS,
        entity=E.BRANCH_ADDRESS_PROVINCE,
        window_days=365,
        zh="本网点近一年开户中登记地址与本笔同省份的占{value}",
        en="Of the branch's openings in the last year, {value} gave an address in the same "
        "province as this one",
        transform=values.share,
        inputs=(Aggregate(E.BRANCH_ADDRESS_PROVINCE, Op.COUNT, 365), Aggregate(_BR, Op.COUNT, 365)),
    ),
    Feature(
        name="address_companies_365d",
        family=F.ADDRESS,
        entity=_ADR,
        window_days=365,
        zh="同一地址近一年注册开户的企业有{value}家",
        en="{value} companies registered at this building opened accounts in the last year",
        transform=values.count,
        inputs=(Aggregate(_ADR, Op.DISTINCT, 365, "company_key"),),
    ),
    Feature(
        name="address_escorts_90d",
        family=F.ADDRESS,
        entity=_ADR,
        window_days=90,
        zh="同一地址近90天的开户关联{value}名不同陪同人",
        en="Applicants at this building in the last 90 days came with {value} different escorts",
        transform=values.count,
        inputs=(Aggregate(_ADR, Op.DISTINCT, 90, "escort_key"),),
    ),
    Feature(
        name="address_intermediaries_90d",
        family=F.ADDRESS,
        entity=_ADR,
        window_days=90,
        zh="同一地址近90天的开户关联{value}个不同中介",
        en="Applications at this building in the last 90 days came through {value} intermediaries",
        transform=values.count,
        inputs=(Aggregate(_ADR, Op.DISTINCT, 90, "intermediary_key"),),
    ),
    Feature(
        name="address_confirmed_mules_365d",
        family=F.ADDRESS,
        entity=_ADR,
        window_days=365,
        zh="同一地址近一年开立的账户中已有{value}个被确认为涉诈账户",
        en="{value} accounts opened with this building in the last year are confirmed mule accounts",
        transform=values.count,
        inputs=(Aggregate(_ADR, Op.CONFIRMED, 365),),
        monotone=1,
    ),
    _listed_applications(
        entity=_ADR,
        family=F.ADDRESS,
        prefix="address",
        zh="同一地址近一年的开户申请中有{value}笔的开户人已被列入联合惩戒名单",
        en="{value} applications with this building in the last year were by people on a "
        "joint-punishment list",
    ),
)

_phone_device = (
    *(
        _distinct_applicants(
            entity=E.PHONE,
            family=F.PHONE_DEVICE,
            days=d,
            prefix="phone",
            zh="同一手机号近{days}天被{{value}}名不同开户人使用",
            en="The phone number was given by {{value}} different applicants in the last {days} days",
        )
        for d in (30, 365)
    ),
    Feature(
        name="phone_tenure_days",
        family=F.PHONE_DEVICE,
        entity=E.APPLICATION,
        window_days=None,
        zh="手机号入网{value}天",
        en="The phone number was activated {value} days ago",
        transform=values.number,
        inputs=("phone_tenure_days",),
    ),
    *(
        _distinct_applicants(
            entity=E.PHONE_BLOCK,
            family=F.PHONE_DEVICE,
            days=d,
            prefix="phone_block",
            zh="同一号段（前7位）近{days}天有{{value}}名不同开户人",
            en="{{value}} different applicants gave a number from the same 7-digit block "
            "in the last {days} days",
        )
        for d in (1, 7)
    ),
    *(
        _distinct_applicants(
            entity=E.DEVICE,
            family=F.PHONE_DEVICE,
            days=d,
            prefix="device",
            zh="同一设备近{days}天被{{value}}名不同开户人使用",
            en="The device was used by {{value}} different applicants in the last {days} days",
        )
        for d in (30, 365)
    ),
    _listed_applications(
        entity=E.PHONE,
        family=F.PHONE_DEVICE,
        prefix="phone",
        zh="同一手机号近一年的开户申请中有{value}笔的开户人已被列入联合惩戒名单",
        en="{value} applications giving this phone number in the last year were by people on a "
        "joint-punishment list",
    ),
    _listed_applications(
        entity=E.DEVICE,
        family=F.PHONE_DEVICE,
        prefix="device",
        zh="同一设备近一年的开户申请中有{value}笔的开户人已被列入联合惩戒名单",
        en="{value} applications on this device in the last year were by people on a joint-punishment list",
    ),
)

_staff = (
    *(
        Feature(
            name=f"staff_openings_{d}d",
            family=F.STAFF,
            entity=_STF,
            window_days=d,
            zh=f"经办柜员近{d}天办理{{value}}笔开户",
            en=f"The staff member handled {{value}} openings in the last {d} days",
            transform=values.count,
            inputs=(Aggregate(_STF, Op.COUNT, d),),
        )
        for d in (7, 30)
    ),
    Feature(
        name="staff_tampered_share_30d",
        family=F.STAFF,
        entity=_STF,
        window_days=30,
        zh="经办柜员近30天办理的开户中照片疑似篡改的占比{value}",
        en="Share of the staff member's openings in the last 30 days with a tampered photo: {value}",
        transform=values.share,
        inputs=(Aggregate(_STF, Op.FLAGGED, 30, "photo_tampered"), Aggregate(_STF, Op.COUNT, 30)),
    ),
    Feature(
        name="staff_corporate_without_onsite_30d",
        family=F.STAFF,
        entity=_STF,
        window_days=30,
        zh="经办柜员近30天办理{value}笔未经实地核查的对公开户",
        en="The staff member opened {value} corporate accounts without an on-site visit in the last 30 days",
        transform=values.count,
        inputs=(Aggregate(_STF, Op.FLAGGED, 30, "corporate_without_onsite"),),
    ),
    Feature(
        name="staff_tampered_excess_30d",
        family=F.STAFF,
        entity=_SAB,
        window_days=30,
        zh="经办柜员近30天照片篡改占比高出本网点其他柜员{value}",
        en="The staff member's tampered-photo share in the last 30 days exceeds the branch's "
        "other staff by {value}",
        transform=values.excess_share,
        inputs=(
            Aggregate(_SAB, Op.FLAGGED, 30, "photo_tampered"),
            Aggregate(_SAB, Op.COUNT, 30),
            Aggregate(_BR, Op.FLAGGED, 30, "photo_tampered"),
            Aggregate(_BR, Op.COUNT, 30),
        ),
    ),
    Feature(
        name="staff_corporate_without_onsite_excess_30d",
        family=F.STAFF,
        entity=_SAB,
        window_days=30,
        zh="经办柜员近30天对公开户未实地核查占比高出本网点其他柜员{value}",
        en="The staff member's share of corporate openings without an on-site visit in the last "
        "30 days exceeds the branch's other staff by {value}",
        transform=values.excess_share,
        inputs=(
            Aggregate(_SAB, Op.FLAGGED, 30, "corporate_without_onsite"),
            Aggregate(_SAB, Op.FLAGGED, 30, "corporate"),
            Aggregate(_BR, Op.FLAGGED, 30, "corporate_without_onsite"),
            Aggregate(_BR, Op.FLAGGED, 30, "corporate"),
        ),
    ),
    Feature(
        name="staff_confirmed_mules_365d",
        family=F.STAFF,
        entity=_STF,
        window_days=365,
        zh="经办柜员近一年办理的账户中已有{value}个被确认为涉诈账户",
        en="{value} accounts the staff member opened in the last year are confirmed mule accounts",
        transform=values.count,
        inputs=(Aggregate(_STF, Op.CONFIRMED, 365),),
        monotone=1,
    ),
)

_branch = (
    Feature(
        name="branch_applications_7d",
        family=F.BRANCH,
        entity=_BR,
        window_days=7,
        zh="本网点近7天受理{value}笔开户申请",
        en="The branch received {value} applications in the last 7 days",
        transform=values.count,
        inputs=(Aggregate(_BR, Op.COUNT, 7),),
    ),
    Feature(
        name="branch_volume_vs_baseline",
        family=F.BRANCH,
        entity=_BR,
        window_days=90,
        zh="本网点近7天日均开户量为近90天日均的{value}倍",
        en="The branch's daily openings in the last 7 days are {value} times its 90-day average",
        transform=values.weekly_vs_quarterly_rate,
        inputs=(Aggregate(_BR, Op.COUNT, 7), Aggregate(_BR, Op.COUNT, 90)),
    ),
    Feature(
        name="branch_out_of_province_share_7d",
        family=F.BRANCH,
        entity=_BR,
        window_days=7,
        zh="本网点近7天开户中外省人员占比{value}",
        en="Share of the branch's openings in the last 7 days by people from another province: {value}",
        transform=values.share,
        inputs=(Aggregate(_BR, Op.FLAGGED, 7, "out_of_province"), Aggregate(_BR, Op.COUNT, 7)),
    ),
    Feature(
        name="branch_out_of_province_vs_baseline",
        family=F.BRANCH,
        entity=_BR,
        window_days=90,
        zh="本网点近7天外省开户占比较近90天高出{value}",
        en="The branch's out-of-province share in the last 7 days exceeds its 90-day share by {value}",
        transform=values.share_difference,
        inputs=(
            Aggregate(_BR, Op.FLAGGED, 7, "out_of_province"),
            Aggregate(_BR, Op.COUNT, 7),
            Aggregate(_BR, Op.FLAGGED, 90, "out_of_province"),
            Aggregate(_BR, Op.COUNT, 90),
        ),
    ),
)

_APP = E.APPLICATION
_applicant = (
    Feature(
        name="applicant_age",
        family=F.APPLICANT,
        entity=_APP,
        window_days=None,
        zh="开户人年龄{value}岁",
        en="The applicant is {value} years old",
        transform=values.number,
        inputs=("age",),
    ),
    Feature(
        # Kept for fairness monitoring, out of the model: the decision must not turn on gender.
        name="applicant_gender",
        family=F.APPLICANT,
        entity=_APP,
        window_days=None,
        zh="开户人性别：{value}",
        en="Applicant's gender: {value}",
        transform=values.gender_code,
        inputs=("gender",),
        codes=values.GENDER_CODES,
        in_model=False,
    ),
    Feature(
        name="applicant_out_of_province",
        family=F.APPLICANT,
        entity=_APP,
        window_days=None,
        zh="开户人户籍省份与网点不同（{value}）",
        en="The applicant is from another province than the branch ({value})",
        transform=values.number,
        inputs=("out_of_province",),
        # Monitored, not modelled: on the quickstart bank it doubled the false-positive rate of
        # out-of-province applicants (FPR ratio 2.24 -> 1.39 without it) for a PR-AUC change
        # within noise (0.657 -> 0.652); origin still counts through escort and branch shares.
        in_model=False,
    ),
    *(
        Feature(
            name=f"applicant_prior_applications_{d}d",
            family=F.APPLICANT,
            entity=E.APPLICANT,
            window_days=d,
            zh=f"该开户人近{d}天已在各网点提交{{value}}笔开户申请",
            en=f"The applicant made {{value}} earlier applications at any branch in the last {d} days",
            transform=values.count,
            inputs=(Aggregate(E.APPLICANT, Op.COUNT, d),),
        )
        for d in (30, 365)
    ),
    Feature(
        name="applicant_prior_branches_365d",
        family=F.APPLICANT,
        entity=E.APPLICANT,
        window_days=365,
        zh="该开户人近一年已在{value}个不同网点申请开户",
        en="The applicant applied at {value} different branches in the last year",
        transform=values.count,
        inputs=(Aggregate(E.APPLICANT, Op.DISTINCT, 365, "branch_id"),),
    ),
    Feature(
        # Listings in force at t are the hard rule's (serving.rules): only ended ones are a signal.
        name="applicant_ended_listings",
        family=F.APPLICANT,
        entity=E.APPLICANT,
        window_days=None,
        zh="开户人曾有{value}条联合惩戒名单记录已于本次申请前到期或解除",
        en="The applicant had {value} joint-punishment listings that had ended before this application",
        transform=values.count,
        inputs=(Aggregate(E.APPLICANT, Op.LISTINGS_ENDED, None),),
    ),
    Feature(
        name="channel",
        family=F.APPLICANT,
        entity=_APP,
        window_days=None,
        zh="开户渠道：{value}",
        en="Opening channel: {value}",
        transform=values.channel_code,
        inputs=("channel",),
        codes=values.CHANNEL_CODES,
    ),
    Feature(
        name="corporate",
        family=F.APPLICANT,
        entity=_APP,
        window_days=None,
        zh="对公账户（{value}）",
        en="Corporate account ({value})",
        transform=values.number,
        inputs=("corporate",),
    ),
    Feature(
        name="local_hour",
        family=F.APPLICANT,
        entity=_APP,
        window_days=None,
        zh="申请时间为北京时间{value}时",
        en="Applied at {value} o'clock, Beijing time",
        transform=values.local_hour,
        inputs=("applied_at",),
    ),
    Feature(
        name="night_opening",
        family=F.APPLICANT,
        entity=_APP,
        window_days=None,
        zh="夜间（22时至次日6时）申请（{value}）",
        en="Applied at night, 22:00 to 06:00 ({value})",
        transform=values.night,
        inputs=("applied_at",),
    ),
    Feature(
        name="full_bundle",
        family=F.APPLICANT,
        entity=_APP,
        window_days=None,
        zh="同时申请U盾、手机银行和第三方支付绑定（{value}）",
        en="Asked for a U-shield, mobile banking and payment binding together ({value})",
        transform=values.all_true,
        inputs=("u_shield", "mobile_banking", "payment_binding"),
    ),
    Feature(
        name="photo_tampered",
        family=F.APPLICANT,
        entity=_APP,
        window_days=None,
        zh="证件或现场照片疑似篡改（{value}）",
        en="The ID, face or site photo shows editing ({value})",
        transform=values.number,
        inputs=("photo_tampered",),
    ),
    Feature(
        name="onsite_verified",
        family=F.APPLICANT,
        entity=_APP,
        window_days=None,
        zh="对公开户已实地核查（{value}）",
        en="Corporate opening verified on site ({value})",
        transform=values.number,
        inputs=("onsite_verified",),
    ),
    Feature(
        name="company_age_days",
        family=F.APPLICANT,
        entity=_APP,
        window_days=None,
        zh="企业成立{value}天",
        en="The company was registered {value} days ago",
        transform=values.number,
        inputs=("company_age_days",),
    ),
)


def _linked(
    *, stat: str, name: str, zh: str, en: str, transform: Callable[..., np.ndarray], monotone: int = 0
) -> Feature:
    inputs: tuple[str | Aggregate, ...] = (Aggregate(E.LINKED, Op.LINKED, LINK_WINDOW_DAYS, stat),)
    if stat == "first_at":
        inputs = ("applied_at", *inputs)
    if transform is values.share:  # of the group's applicants
        inputs = (*inputs, Aggregate(E.LINKED, Op.LINKED, LINK_WINDOW_DAYS, "applicants"))
    return Feature(
        name=name,
        family=F.LINKED,
        entity=E.LINKED,
        window_days=LINK_WINDOW_DAYS,
        zh=zh,
        en=en,
        transform=transform,
        inputs=inputs,
        monotone=monotone,
    )


_linked_group = (
    _linked(
        stat="applicants",
        name="linked_group_size",
        zh="近30天通过陪同人、地址、手机、设备或中介关联的其他开户人共{value}名",
        en="{value} other applicants are linked through escort, address, phone, device or "
        "intermediary within 30 days",
        transform=values.count,
    ),
    _linked(
        stat="branches",
        name="linked_group_branches",
        zh="关联开户人分布在{value}个不同网点",
        en="The linked applicants opened at {value} different branches",
        transform=values.count,
    ),
    _linked(
        stat="first_at",
        name="linked_group_span_days",
        zh="关联开户集中在{value}天内",
        en="The linked openings span {value} days up to this application",
        transform=values.days_since,
    ),
    _linked(
        stat="confirmed",
        name="linked_group_confirmed_mules",
        zh="关联开户中已有{value}个被确认为涉诈账户",
        en="{value} of the linked accounts are confirmed mule accounts",
        transform=values.count,
        monotone=1,
    ),
    _linked(
        stat="listed",
        name="linked_group_listed_applicants",
        zh="关联开户人中有{value}名已被列入联合惩戒名单",
        en="{value} of the linked applicants are on a joint-punishment list",
        transform=values.count,
        monotone=1,
    ),
    _linked(
        stat="out_of_province",
        name="linked_group_out_of_province_share",
        zh="关联开户人中外省人员占比{value}",
        en="Share of the linked applicants who opened outside their home province: {value}",
        transform=values.share,
    ),
    _linked(
        stat="full_bundle",
        name="linked_group_full_bundle_share",
        zh="关联开户人中同时申请U盾、手机银行和支付绑定的占比{value}",
        en="Share of the linked applicants who asked for a U-shield, mobile banking and payment binding "
        "together: {value}",
        transform=values.share,
    ),
    _linked(
        stat="new_phone",
        name="linked_group_new_phone_share",
        zh="关联开户人中使用入网不足30天手机号的占比{value}",
        en="Share of the linked applicants who gave a phone number activated less than 30 days "
        "before: {value}",
        transform=values.share,
    ),
    _linked(
        stat="new_1d",
        name="linked_group_new_1d",
        zh="近1天新增关联开户人{value}名",
        en="{value} of the linked applicants joined in the last day",
        transform=values.count,
    ),
    _linked(
        stat="new_7d",
        name="linked_group_new_7d",
        zh="近7天新增关联开户人{value}名",
        en="{value} of the linked applicants joined in the last 7 days",
        transform=values.count,
    ),
)

_ORIGIN = E.ORIGIN_IN_CITY
_fellow_villagers = (
    Feature(
        # A burst against the pair's own usual rate, not a level: some county-city pairs are
        # ordinary migration, and a count of fellow villagers is mostly a count of locals (a
        # local's home county is in the branch's city), so a level would stand in for origin.
        name="fellow_villagers_burst_7d",
        family=F.FELLOW_VILLAGERS,
        entity=_ORIGIN,
        window_days=90,  # the last 7 days against the 83 before them
        zh="同县籍人员近7天在本市开户数高于该县在本市的平常水平（{value}个标准差）",
        en="Openings in this city by people from the applicant's home county in the last 7 days "
        "are {value} standard deviations above the county's usual rate here",
        transform=values.weekly_burst,
        inputs=(Aggregate(_ORIGIN, Op.COUNT, 7), Aggregate(_ORIGIN, Op.COUNT, 90)),
    ),
)

FEATURES: tuple[Feature, ...] = (
    *_escort,
    *_intermediary,
    *_address,
    *_phone_device,
    *_staff,
    *_branch,
    *_applicant,
    *_fellow_villagers,
    *_linked_group,
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}

MODEL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.in_model)
"""The features a model is trained on, scored with and explained by, in this order."""

AGGREGATES: tuple[Aggregate, ...] = tuple(dict.fromkeys(a for f in FEATURES for a in f.aggregates))
"""Every distinct aggregate the features need, in declaration order."""


def monotone_constraints(names: Sequence[str]) -> tuple[int, ...]:
    """Each named feature's declared :attr:`~duanka.features.declaration.Feature.monotone`, in order.

    The vector LightGBM's ``monotone_constraints`` takes, aligned with the model's columns:
    the declaration is the one place a direction is decided, and training reads it from here.

    Parameters
    ----------
    names : sequence of str
        The model's features, in its column order (:data:`MODEL_FEATURES` or a subset).

    Returns
    -------
    tuple of int
        -1, 0 or +1 per name.

    Raises
    ------
    KeyError
        For a name the registry does not declare: a constraint guessed as 0 for a misspelt
        feature would silently drop it.
    """
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise KeyError(f"features not in the registry: {unknown}")
    return tuple(BY_NAME[n].monotone for n in names)


def feature_set_version(
    features: tuple[Feature, ...] = FEATURES, model_features: tuple[str, ...] = MODEL_FEATURES
) -> str:
    """Hash of what decides the features' values, the model's list and the constants they depend on.

    Only what changes a value counts (:meth:`Feature.definition`): rewording a description
    or regrouping a feature leaves the version, and so every registered model, as it was.
    """
    declared = {
        "features": [f.definition() for f in features],
        "model_features": list(model_features),
        "link": {"window_days": LINK_WINDOW_DAYS, "fanout": LINK_FANOUT, "keys": list(LINK_KEYS)},
        "flags": {
            "young_company_days": values.YOUNG_COMPANY_DAYS,
            "new_phone_days": values.NEW_PHONE_DAYS,
            "night": values.NIGHT_HOURS,
        },
    }
    text = json.dumps(declared, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


FEATURE_SET_VERSION: str = feature_set_version()
"""Hash of what decides every declared feature's values; a model records it and refuses another."""
