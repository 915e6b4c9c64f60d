"""Building keys and address kinds, as tables of real-style addresses."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from duanka.data.address import (
    address_kind,
    address_kinds,
    address_province,
    address_provinces,
    building_key,
    building_keys,
)
from duanka.data.events import ADDRESS_KINDS

# Each group is one building written in several ways; every group is a different
# building, so no two groups may share a key.
SAME_BUILDING: dict[str, list[str]] = {
    "黄埔区大沙地东路12号如家酒店": [
        "广东省广州市黄埔区大沙地东路12号如家酒店305房",
        "黄埔区大沙地东路12号如家酒店 306室",
        "广州市黄埔区大沙地东路１２号如家酒店房间307",
        "广东广州黄埔区大沙地东路12號如家酒店-308",
        "广州黄埔区大沙地东路12号如家酒店3楼",
        "中国广东省广州市黄埔区大沙地东路12号如家酒店三楼",
    ],
    "黄埔区大沙地东路14号如家酒店": ["黄埔区大沙地东路14号如家酒店305房"],
    "天河区大沙地东路12号如家酒店": ["广州市天河区大沙地东路12号如家酒店305房"],
    "宝安区新港路135号中信广场": [
        "深圳市宝安区新港路１３５号中信广场１４楼４３房",
        "深圳市宝安区新港路135号中信广场20楼44房",
        "广东省深圳市宝安区新港路１３５号中信广场１４楼房间１５",
        "宝安区新港路135号 中信广场 28楼2房",
    ],
    "宝安区新港路135号中信大厦": ["宝安区新港路135号中信大厦5楼"],
    "宝安区新港北路135号中信广场": ["宝安区新港北路135号中信广场5楼"],
    "番禺区同和路82号时代商务中心": [
        "广州市番禺区同和路82号时代商务中心23楼-20",
        "番禺区同和路82号时代商务中心2301室",
        "广东省广州市番禺区同和路８２号时代商务中心２３层",
        "番禺区同和路82号时代商务中心5F",
    ],
    "番禺区建设路27号万科城7栋": [
        "广州市番禺区建设路２７号万科城７栋２１４３房",
        "番禺区建设路27号万科城7幢1201",
        "广东省广州市番禺区建设路27号万科城7号楼2单元1203",
        "番禺区建设路27号万科城第7栋",
        "番禺区建设路27号万科城七栋",
        "番禺区建设路27号万科城7#楼502",
        "番禺区建设路27號万科城7棟-1203",
    ],
    "番禺区建设路27号万科城8栋": ["番禺区建设路27号万科城8栋2143房"],
    "番禺区建设路27号万科城17栋": [
        "番禺区建设路27号万科城17栋101房",
        "番禺区建设路27号万科城十七栋",
    ],
    "福田区深南大道1号中信广场B栋": [
        "福田区深南大道1号中信广场B座1203",
        "深圳市福田区深南大道1号中信广场B栋12楼",
        "福田区深南大道1号中信广场ｂ座1203室",
    ],
    "福田区深南大道1号中信广场A栋": ["福田区深南大道1号中信广场A座1203"],
    "天河区江南大道314号南国花园1栋": [
        "广州市天河区江南大道314号南国花园1栋799房",
        "天河区江南大道314号南国花园1栋",
    ],
    "天河区江南大道314号南国花园11栋": ["天河区江南大道314号南国花园11栋799房"],
    "福田区同和路103号锦江之星": [
        "福田区同和路１０３号锦江之星５１５室",
        "深圳市福田区同和路103号锦江之星297房",
        "深圳市福田区同和路103号锦江之星-315",
        "广东省深圳市福田区同和路103号锦江之星",
    ],
    "宝安区华夏路279号F0电子厂员工宿舍5栋": [
        "广东省深圳市宝安区华夏路２７９号F０电子厂员工宿舍５栋４２２房",
        "宝安区华夏路279号F0电子厂员工宿舍5栋-101",
    ],
    "越秀区荔城大道141号": ["广州市越秀区荔城大道141号4楼", "越秀区荔城大道141号"],
    "越秀区荔城大道143号": ["越秀区荔城大道143号"],
    "资中县大坪镇桃源村5组196号": [
        "云南省资中县大坪镇桃源村5组196号",
        "资中县大坪镇桃源村5组196号",
    ],
    "资中县大坪镇桃源村5组197号": ["资中县大坪镇桃源村5组197号"],
    "朝阳区建国路88号SOHO现代城A栋": [
        "北京市朝阳区建国路88号SOHO现代城A座1801",
        "北京朝阳区建国路88号ＳＯＨＯ现代城A座",
        "朝阳区建国路88号soho现代城A幢18层",
    ],
    "天河区天河北路233号中信广场": [
        "广州市天河区林和街道天河北路233号中信广场5楼",
        "天河区天河北路233号中信广场",
    ],
    "青秀区民族大道100号": [
        "广西壮族自治区南宁市青秀区民族大道100号",
        "广西南宁青秀区民族大道100号",
        "青秀区民族大道100号",
    ],
    "延吉市人民路1号": [
        "延边朝鲜族自治州延吉市人民路1号",
        "吉林省延边州延吉市人民路1号",
        "延吉市人民路1号",
    ],
    "共和县人民路1号": ["青海省海南藏族自治州共和县人民路1号", "海南州共和县人民路1号"],
    "浦东新区世纪大道100号环球金融中心": [
        "上海市浦东新区世纪大道100号（环球金融中心）58层",
        "浦东新区世纪大道100号环球金融中心, 58楼5801室",
    ],
    "长安镇长青路8号": ["广东省东莞市长安镇长青路8号", "东莞市长安镇长青路8号"],
    "石岐区中山路1号": ["中山市石岐区中山路1号", "石岐区中山路1号"],
    # A road named after a city keeps its name, with or without the city in front.
    "广州大道中289号": ["广州市广州大道中289号", "广州大道中289号"],
    "通州区新华大街1号": ["北京通州区新华大街1号", "通州区新华大街1号"],
    "惠城区江北三新南路8号3栋": [
        "惠州市惠城区江北三新南路8号3#楼502",
        "惠城区江北三新南路8号3栋502房",
    ],
    "天河区体育西路191号中石化大厦B栋": ["天河区体育西路191号中石化大厦B塔3001"],
}

# Pairs that read alike but are different buildings; each would be a false cluster.
DIFFERENT_BUILDINGS = [
    ("大沙地东路12号", "大沙地东路14号"),
    ("黄埔区中山路1号", "天河区中山路1号"),
    ("白云区中山路1号", "中山路1号"),
    ("万科城1栋101房", "万科城11栋01房"),
    ("万科城1栋", "万科城12栋"),
    ("中信广场A座1203", "中信广场B座1203"),
    ("新港路135号中信广场", "新港路135号中信大厦"),
    ("新港路135号", "新港北路135号"),
    ("桃源村5组196号", "桃源村6组196号"),
    ("长兴路12号如家酒店", "长兴路12号汉庭酒店"),
]

CASES = [(a, key) for key, addresses in SAME_BUILDING.items() for a in addresses]


@pytest.mark.parametrize(("address", "key"), CASES)
def test_building_key(address: str, key: str) -> None:
    assert building_key(address) == key


def test_table_has_many_variants_and_distinct_buildings() -> None:
    assert len(CASES) >= 40
    assert len(set(SAME_BUILDING)) == len(SAME_BUILDING)


@pytest.mark.parametrize(("one", "other"), DIFFERENT_BUILDINGS)
def test_different_buildings_get_different_keys(one: str, other: str) -> None:
    assert building_key(one) != building_key(other)


@pytest.mark.parametrize("key", list(SAME_BUILDING))
def test_key_is_its_own_key(key: str) -> None:
    assert building_key(key) == key


def test_required_example_shares_one_key_and_neighbours_do_not() -> None:
    assert building_key("广东省广州市黄埔区大沙地东路12号如家酒店305房") == building_key(
        "黄埔区大沙地东路12号如家酒店 306室"
    )
    assert building_key("大沙地东路12号") != building_key("大沙地东路14号")
    assert building_key("黄埔区大沙地东路12号") != building_key("天河区大沙地东路12号")


def test_address_with_only_province_and_city_keeps_them() -> None:
    # Otherwise every incomplete address would land in one empty-named building.
    assert building_key("广东省广州市") == "广东省广州市"
    assert building_key("广东省广州市") != building_key("广东省深圳市")


@given(st.text(max_size=40))
def test_any_text_gives_a_key_without_spaces_or_punctuation(text: str) -> None:
    key = building_key(text)
    assert not any(c.isspace() for c in key)
    assert not set(key) & set(",，。.;；:：()（）【】")


KINDS = [
    ("深圳市福田区深南大道269号盛世宾馆502室", "lodging"),
    ("黄埔区大沙地东路12号如家酒店305房", "lodging"),
    ("福田区同和路103号锦江之星515室", "lodging"),
    ("增城区科学大道27号安居公寓396房", "lodging"),
    ("福田区江南大道5号城中村旅馆房间252", "lodging"),
    ("白云区机场路8号空港招待所203", "lodging"),
    ("大理市古城人民路15号苍山民宿8号房", "lodging"),
    ("丽江市古城区七一街客栈3号", "lodging"),
    ("天河区花园酒店1203房", "lodging"),
    ("南山区华夏路361号7天连锁305", "lodging"),
    ("宝安区华夏路279号F0电子厂员工宿舍5栋422房", "dormitory"),
    ("番禺区大学城外环西路100号中山大学学生公寓5栋301", "dormitory"),
    ("龙华区观澜大道1号富士康员工公寓B栋", "dormitory"),
    ("天河区五山路381号职工宿舍", "dormitory"),
    ("番禺区同和路82号时代商务中心23楼-20", "office"),
    ("番禺区长兴路248号天汇大厦16楼51房", "office"),
    ("南山区科技园南区高新南一道8号创维大厦A座1201", "office"),
    ("宝安区南洲路254号科创园3楼11房", "office"),
    ("前海深港合作区前湾一路1号A栋201室（入驻深圳市前海商务秘书有限公司）", "office"),
    ("天河区天河路1号众创空间工位A-12", "office"),
    ("黄埔区科学大道1号孵化器3楼", "office"),
    ("南沙区丰泽东路106号X1301-A1234（集群注册）", "office"),
    ("浦东新区世纪大道100号环球金融中心58层", "office"),
    ("南山区中山路342号新城国际26楼52室", "office"),
    ("番禺区建设路27号万科城7栋2143房", "residential"),
    ("海珠区南洲路86号阳光小区6栋1718房", "residential"),
    ("越秀区环城路342号祈福新邨12栋291房", "residential"),
    ("资中县大坪镇桃源村5组196号", "village"),
    ("广西壮族自治区浦北县黄田乡河口村1组141号", "village"),
    ("会昌县新田乡张岭村", "village"),
    ("五华县华城镇新一村三社12号", "village"),
    # an urban village in a delta town, where migrants rent: not a countryside address
    ("东莞市长安镇霄边村三巷5号", "residential"),
    ("宝安区西乡街道固戍村二坊12号", "residential"),
    ("静安区南京西路1000弄5号", "residential"),
    ("番禺区建设路27号万科城7幢1201", "residential"),
    ("南城街道中山路102号美林湖4座1102房", "residential"),
    ("天河区锦绣花园", "residential"),
    ("越秀区荔城大道141号4楼", "other"),
    ("天河区体育西路191号", "other"),
    ("", "other"),
]


PROVINCES_WRITTEN = [
    ("广西壮族自治区浦北县黄田乡河口村1组141号", "45"),
    ("江西省会昌县新田乡张岭村4组176号", "36"),
    ("湖南邵东县两市镇", "43"),  # a province without its 省
    ("中国广东省广州市天河区体育西路191号", "44"),
    ("深圳市南山区华夏路107号", "44"),  # a prefecture-level city names its province
    ("邵阳隆回县桃洪镇", "43"),
    ("海南省海口市龙华区", "46"),
    ("海南藏族自治州共和县", "63"),  # 海南州 is in 青海, not the province 海南
    ("北京朝阳区建国路1号", "11"),
    ("内蒙古自治区包头市", "15"),
    ("天河区体育西路191号", None),  # a district alone: which city's 天河区 is not said
    ("广州大道中1号", None),  # a road named after a city
    ("朝阳区建国路1号", None),
    ("", None),
]


@pytest.mark.parametrize(("address", "province"), PROVINCES_WRITTEN)
def test_address_province_is_the_one_written_at_the_start(address: str, province: str | None) -> None:
    assert address_province(address) == province


@pytest.mark.parametrize(("address", "kind"), KINDS)
def test_address_kind(address: str, kind: str) -> None:
    assert address_kind(address) == kind


def test_kinds_table_covers_every_kind() -> None:
    assert {kind for _, kind in KINDS} == set(ADDRESS_KINDS)


@given(st.text(max_size=40))
def test_any_text_has_a_known_kind(text: str) -> None:
    assert address_kind(text) in ADDRESS_KINDS


def test_vectorised_forms_match_the_scalar_ones_and_keep_missing_as_none() -> None:
    addresses = [a for a, _ in itertools.islice(CASES, 12)] + [a for a, _ in PROVINCES_WRITTEN]
    values = pd.Series([*addresses, None, addresses[0], np.nan], name="address")
    values.index = values.index + 100
    keys, kinds, provinces = building_keys(values), address_kinds(values), address_provinces(values)
    for series, rule in ((keys, building_key), (kinds, address_kind), (provinces, address_province)):
        assert series.index.equals(values.index)
        assert series.name == "address"
        assert series.dtype == object
        assert series.tolist() == [rule(a) for a in addresses] + [None, rule(addresses[0]), None]


def test_vectorised_forms_accept_pandas_string_dtype() -> None:
    values = pd.Series(["黄埔区大沙地东路12号如家酒店305房", None], dtype="string")
    assert building_keys(values).tolist() == ["黄埔区大沙地东路12号如家酒店", None]
    assert address_kinds(values).tolist() == ["lodging", None]
