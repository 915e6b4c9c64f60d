"""Building-level keys and address kinds from free-text Chinese addresses.

The contract lets duanka keep two facts from an address before dropping it: which
building it is in (so that many applicants sharing one hotel, dormitory or office
block can be counted) and what kind of place it is. Both are pure rules, no
gazetteer lookups; docs/address.md explains why no address-parsing library is used
and what the rules cannot tell apart.

A building key is the address with its unit, floor and room dropped:
``广东省广州市黄埔区大沙地东路12号如家酒店305房`` and ``黄埔区大沙地东路12号如家酒店 306室``
both give ``黄埔区大沙地东路12号如家酒店``. The key is itself personal data; callers
pseudonymise it (:mod:`duanka.data.pseudonym`) before it is stored.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import numpy as np
import pandas as pd

# Province-level names: stripped with their suffix, or bare when a city or a
# district follows, so that "广东广州天河区" and "天河区" agree.
_PROVINCES = (
    "北京 天津 上海 重庆 河北 山西 辽宁 吉林 黑龙江 江苏 浙江 安徽 福建 江西 山东 河南 湖北 "
    "湖南 广东 海南 四川 贵州 云南 陕西 甘肃 青海 台湾 内蒙古 广西 西藏 宁夏 新疆 香港 澳门"
)

# GB/T 2260 province codes (the first two digits of an ID number or a region code).
_PROVINCE_CODES = {
    "北京": "11",
    "天津": "12",
    "上海": "31",
    "重庆": "50",
    "河北": "13",
    "山西": "14",
    "辽宁": "21",
    "吉林": "22",
    "黑龙江": "23",
    "江苏": "32",
    "浙江": "33",
    "安徽": "34",
    "福建": "35",
    "江西": "36",
    "山东": "37",
    "河南": "41",
    "湖北": "42",
    "湖南": "43",
    "广东": "44",
    "海南": "46",
    "四川": "51",
    "贵州": "52",
    "云南": "53",
    "陕西": "61",
    "甘肃": "62",
    "青海": "63",
    "台湾": "71",
    "内蒙古": "15",
    "广西": "45",
    "西藏": "54",
    "宁夏": "64",
    "新疆": "65",
    "香港": "81",
    "澳门": "82",
}

# Prefecture-level names (cities, autonomous prefectures, 地区, 盟), short form, by province code.
# County-level cities (昆山市, 增城市 ...) are deliberately absent: like districts,
# they tell apart two roads of the same name and stay in the key.
_PREFECTURES_OF = {
    "13": "石家庄 唐山 秦皇岛 邯郸 邢台 保定 张家口 承德 沧州 廊坊 衡水",
    "14": "太原 大同 阳泉 长治 晋城 朔州 晋中 运城 忻州 临汾 吕梁",
    "15": ("呼和浩特 包头 乌海 赤峰 通辽 鄂尔多斯 呼伦贝尔 巴彦淖尔 乌兰察布 兴安 锡林郭勒 阿拉善"),
    "21": ("沈阳 大连 鞍山 抚顺 本溪 丹东 锦州 营口 阜新 辽阳 盘锦 铁岭 朝阳 葫芦岛"),
    "22": "长春 吉林 四平 辽源 通化 白山 松原 白城 延边",
    "23": ("哈尔滨 齐齐哈尔 鸡西 鹤岗 双鸭山 大庆 伊春 佳木斯 七台河 牡丹江 黑河 绥化 大兴安岭"),
    "32": "南京 无锡 徐州 常州 苏州 南通 连云港 淮安 盐城 扬州 镇江 泰州 宿迁",
    "33": "杭州 宁波 温州 嘉兴 湖州 绍兴 金华 衢州 舟山 台州 丽水",
    "34": ("合肥 芜湖 蚌埠 淮南 马鞍山 淮北 铜陵 安庆 黄山 滁州 阜阳 宿州 六安 亳州 池州 宣城"),
    "35": "福州 厦门 莆田 三明 泉州 漳州 南平 龙岩 宁德",
    "36": "南昌 景德镇 萍乡 九江 新余 鹰潭 赣州 吉安 宜春 抚州 上饶",
    "37": ("济南 青岛 淄博 枣庄 东营 烟台 潍坊 济宁 泰安 威海 日照 临沂 德州 聊城 滨州 菏泽 莱芜"),
    "41": ("郑州 开封 洛阳 平顶山 安阳 鹤壁 新乡 焦作 濮阳 许昌 漯河 三门峡 南阳 商丘 信阳 周口 驻马店"),
    "42": "武汉 黄石 十堰 宜昌 襄阳 鄂州 荆门 孝感 荆州 黄冈 咸宁 随州 恩施",
    "43": ("长沙 株洲 湘潭 衡阳 邵阳 岳阳 常德 张家界 益阳 郴州 永州 怀化 娄底 湘西"),
    "44": (
        "广州 韶关 深圳 珠海 汕头 佛山 江门 湛江 茂名 肇庆 惠州 梅州 汕尾 "
        "河源 阳江 清远 东莞 中山 潮州 揭阳 云浮"
    ),
    "45": ("南宁 柳州 桂林 梧州 北海 防城港 钦州 贵港 玉林 百色 贺州 河池 来宾 崇左"),
    "46": "海口 三亚 三沙 儋州",
    "51": (
        "成都 自贡 攀枝花 泸州 德阳 绵阳 广元 遂宁 内江 乐山 南充 眉山 宜宾 "
        "广安 达州 雅安 巴中 资阳 阿坝 甘孜 凉山"
    ),
    "52": "贵阳 六盘水 遵义 安顺 毕节 铜仁 黔西南 黔东南 黔南",
    "53": ("昆明 曲靖 玉溪 保山 昭通 丽江 普洱 临沧 楚雄 红河 文山 西双版纳 大理 德宏 怒江 迪庆"),
    "54": "拉萨 日喀则 昌都 林芝 山南 那曲 阿里",
    "61": "西安 铜川 宝鸡 咸阳 渭南 延安 汉中 榆林 安康 商洛",
    "62": ("兰州 嘉峪关 金昌 白银 天水 武威 张掖 平凉 酒泉 庆阳 定西 陇南 临夏 甘南"),
    "63": "西宁 海东 海北 黄南 海南 果洛 玉树 海西",
    "64": "银川 石嘴山 吴忠 固原 中卫",
    "65": ("乌鲁木齐 克拉玛依 吐鲁番 哈密 昌吉 博尔塔拉 巴音郭楞 克孜勒苏 伊犁 阿克苏 喀什 和田 塔城 阿勒泰"),
}
_PREFECTURES = " ".join(_PREFECTURES_OF.values())
_PROVINCE_OF_PREFECTURE = {name: code for code, names in _PREFECTURES_OF.items() for name in names.split()}


def _alternation(names: str) -> str:
    """Regex alternation of space-separated names, longest first."""
    # Longest first, so that a name is never read as a shorter one plus text.
    return "|".join(sorted(names.split(), key=len, reverse=True))


_CJK = r"[\u4e00-\u9fff]"
# A district-like token: a few characters ending in 区/县/旗 that are not a road.
# It lets a bare city or province name be dropped ("广州天河区") while a road named
# after a city ("广州大道", "北京路") is kept. It never starts with 州, which is the
# short suffix of an autonomous prefecture (海南州共和县), not part of a district.
_DISTRICT = r"(?!州)(?:(?![路街巷弄号])" + _CJK + r"){1,6}?[区县旗]"
_PROVINCE = re.compile(
    rf"^(?:{_alternation(_PROVINCES)})"
    rf"(?:省|市(?!场)|{_CJK}{{0,4}}?自治区|特别行政区|(?=(?:{_alternation(_PREFECTURES)})|{_DISTRICT}))"
)
_PREFECTURE = re.compile(
    rf"^(?:{_alternation(_PREFECTURES)})"
    rf"(?:市(?!场)|地区|盟|{_CJK}{{0,10}}?自治州|州|(?={_DISTRICT}))"
)
# Sub-districts (街道) are often left out of an address; villages and towns (镇, 乡)
# are not, because village names repeat within a county.
_SUBDISTRICT = re.compile(rf"^({_CJK}{{1,7}}?(?:区|县|旗|市))(?:{_CJK}{{2,5}}?街道)(?!办)")

# Full-width forms are handled by NFKC; these are the traditional spellings and
# dashes that NFKC leaves alone.
_VARIANTS = str.maketrans(
    {
        "號": "号",
        "樓": "楼",
        "棟": "栋",
        "單": "单",
        "層": "层",
        "區": "区",
        "縣": "县",
        "–": "-",
        "—": "-",
        "―": "-",
        "‐": "-",
        "−": "-",
    }
)
# Everything that is not a letter, digit or CJK character is noise, except "-"
# (it separates a floor from a room) and "#" (it means 号).
_NOISE = re.compile(r"[^\w#-]|_")

_CN_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
# Chinese numerals only directly before a building, floor or unit marker, so that
# place names with numerals in them are left alone.
_CN_NUMBER = re.compile(r"([一二两三四五六七八九十]{1,3})(?=号楼|栋|幢|座|单元|楼|层)")

# Matches start only where a run of letters and digits starts, so that a long run
# costs linear, not quadratic, time; the leftmost match is the same either way.
_DESIGNATOR = re.compile(r"第?(?<![0-9A-Z])([0-9A-Z]+)(?:号楼|号栋|栋|幢|座|塔)")
_BUILDING = re.compile(r"(?<![0-9A-Z])[0-9A-Z]+栋")
_ROOM = r"[A-Z]?\d+[A-Z]?"
_TAIL = re.compile(
    r"(?:"
    rf"(?:房间|房|室){_ROOM}"  # 房间305
    rf"|-?{_ROOM}(?:房间|号房|号室|房|室|户)"  # 305房, 305室
    rf"|{_ROOM}(?:单元|楼|层|F)"  # 2单元, 14楼, 5F
    rf"|-{_ROOM}"  # -305, the room in 23楼-20
    # A bare number after a name (酒店305, 1203 after 2单元) is a room; after a road
    # or a 号 it is the street number and stays.
    rf"|(?<=[^\W\d路街道巷弄号村组里A-Z]){_ROOM}"
    r"|-+"
    r")$"
)
_TAIL_WINDOW = 24


def _cn_number(match: re.Match[str]) -> str:
    # 七 -> 7, 十 -> 10, 十七 -> 17, 二十 -> 20, 二十三 -> 23.
    text = match.group(1)
    tens, _, units = text.rpartition("十")
    if "十" not in text:
        return "".join(str(_CN_DIGITS[c]) for c in text)
    value = (_CN_DIGITS.get(tens, 0) if tens else 1) * 10 + _CN_DIGITS.get(units, 0)
    return str(value)


def _clean(address: str) -> str:
    """NFKC, upper-case, one spelling per character, no noise."""
    text = unicodedata.normalize("NFKC", address).upper().translate(_VARIANTS)
    return _NOISE.sub("", text).replace("#", "号")


def _normalise(address: str) -> str:
    """:func:`_clean`, without country, province, city or sub-district."""
    text = _clean(address).removeprefix("中国")
    text = _PROVINCE.sub("", text, count=1)
    text = _PREFECTURE.sub("", text, count=1)
    text = _SUBDISTRICT.sub(r"\1", text, count=1)
    return _CN_NUMBER.sub(_cn_number, text)


def building_key(address: str) -> str:
    """Canonical building-level text of an address.

    Parameters
    ----------
    address : str
        An address as written, e.g. ``深圳市宝安区新港路１３５号中信广场１４楼４３房``.

    Returns
    -------
    str
        District (when written), road, number and building, with province,
        prefecture-level city, sub-district (街道), unit, floor and room dropped:
        ``宝安区新港路135号中信广场``. Building designators are spelled ``<n>栋``
        (幢, 座 and 号楼 become 栋). An address that has nothing left after the
        province and city keeps its whole normalised text, so that incomplete
        addresses do not all fall into one building.
    """
    text = _normalise(address)
    text = _DESIGNATOR.sub(r"\1栋", text)
    building = _BUILDING.search(text)
    if building:
        return text[: building.end()]
    key = text
    # Only the last few characters can hold a tail token; searching just those keeps
    # a pathological several-thousand-character address linear.
    while (tail := _TAIL.search(key, max(0, len(key) - _TAIL_WINDOW))) and tail.start() > 0:
        key = key[: tail.start()]
    if key:
        return key
    return _clean(address)


# Checked in this order; the first kind with a match wins. Dormitories come before
# lodging because 学生公寓 and 员工公寓 would otherwise read as 公寓 (lodging).
_KIND_RULES = (
    ("dormitory", re.compile(r"宿舍|学生公寓|员工公寓|职工公寓")),
    (
        "lodging",
        re.compile(
            r"旅馆|宾馆|酒店|公寓|招待所|民宿|旅社|旅舍|旅店|客栈"
            # Budget chains often written without 酒店.
            r"|锦江之星|如家|汉庭|7天|格林豪泰"
        ),
    ),
    (
        "office",
        re.compile(
            r"写字楼|商务中心|商务楼|商务大厦|孵化器|众创空间|产业园|科技园|创业园|科创园|创意园"
            r"|工业园|总部基地|集群注册|商务秘书|入驻|托管|工位|办公"
            # A tower, centre or plaza with a floor, a 室 or a lettered 座 (A座, B座:
            # how office towers are split) is an office address.
            r"|(?:大厦|大楼|中心|广场|国际|SOHO).{0,30}?(?:\d(?:楼|层|F)|室|[0-9A-Z](?:座|塔))"
        ),
    ),
    # A village address, how a household register in the countryside reads: a 村 with
    # its 组/社/屯 (villagers' group) or a 乡 before the 村. 镇 ... 村 alone is not enough:
    # towns in the delta (东莞长安镇) have urban villages (城中村) where migrants rent.
    ("village", re.compile(r"村.{0,6}?(?:组|社|屯)|\d+组|乡.{0,8}?村")),
    (
        "residential",
        re.compile(
            r"小区|花园|家园|新村|新邨|邨|苑|山庄|公馆|华府|住宅|社区|村|弄|里\d"
            # A numbered building or unit that is not an office tower's.
            r"|栋|幢|座|号楼|单元"
        ),
    ),
)


_PROVINCE_NAME = re.compile(rf"^(?:{_alternation(_PROVINCES)})")
_PREFECTURE_NAME = re.compile(rf"^(?:{_alternation(_PREFECTURES)})")


def address_province(address: str) -> str | None:
    """The province an address says it is in, as a two-digit GB/T 2260 code.

    Parameters
    ----------
    address : str
        An address as written.

    Returns
    -------
    str or None
        The code of the province written at the start (``广西壮族自治区…``, ``湖南邵东县…``)
        or of the province of the prefecture-level city written there (``深圳市…``,
        ``邵阳隆回县…``); None when the address starts lower down (``天河区…``), because a
        district or county name alone is ambiguous without a gazetteer.
    """
    text = _clean(address).removeprefix("中国")
    if _PROVINCE.match(text):
        return _PROVINCE_CODES[_PROVINCE_NAME.match(text).group()]  # type: ignore[union-attr]
    if _PREFECTURE.match(text):
        return _PROVINCE_OF_PREFECTURE[_PREFECTURE_NAME.match(text).group()]  # type: ignore[union-attr]
    return None


def address_kind(address: str) -> str:
    """Kind of place an address is: one of :data:`duanka.data.events.ADDRESS_KINDS`.

    Parameters
    ----------
    address : str
        An address as written.

    Returns
    -------
    str
        ``dormitory`` (宿舍, 学生公寓, 员工公寓, 职工公寓), ``lodging`` (旅馆, 宾馆,
        酒店, 公寓, 招待所, 民宿, 旅社, 客栈 and the big budget-hotel chains),
        ``office`` (写字楼, 商务中心, 孵化器, 众创空间, 产业园, cluster registration,
        or a 大厦/中心/广场 with a floor or 室), ``residential`` (小区, 花园, 苑, 村,
        家园, 新村, 弄, a numbered 栋 ...), ``village`` (a countryside address: 村 with its
        组/社/屯, or 乡 … 村; checked before residential) or ``other``, first match in the
        order dormitory, lodging, office, village, residential.
    """
    text = _normalise(address)
    for kind, pattern in _KIND_RULES:
        if pattern.search(text):
            return kind
    return "other"


def _per_unique(values: pd.Series, rule: Callable[[str], str | None]) -> pd.Series:
    # Addresses repeat heavily (a hotel, an estate), so apply the rule once per
    # distinct value and spread the results back.
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    # The trailing None is what the missing values' code, -1, picks.
    mapped = np.array([rule(v) for v in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], index=values.index, dtype=object, name=values.name)


def building_keys(values: pd.Series) -> pd.Series:
    """:func:`building_key` of each value; missing values stay ``None`` (object dtype)."""
    return _per_unique(values, building_key)


def address_provinces(values: pd.Series) -> pd.Series:
    """:func:`address_province` of each value; missing and unknown values ``None`` (object dtype)."""
    return _per_unique(values, address_province)


def address_kinds(values: pd.Series) -> pd.Series:
    """:func:`address_kind` of each value; missing values stay ``None`` (object dtype)."""
    return _per_unique(values, address_kind)
