"""Place names of the synthetic bank: its districts, where applicants come from, and
the streets, estates, hotels, dormitories and office blocks they write down.

Region codes are GB/T 2260 codes as printed on identity cards, including a few
retired ones (邵东县 430521, 大方县 522422 ...), because real cards still carry them.
Everything here is static data; :mod:`duanka.data.synthetic.addresses` spells it out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROVINCE = "广东省"


def _names(text: str) -> tuple[str, ...]:
    """Space-separated names as a tuple."""
    return tuple(text.split())


@dataclass(frozen=True, slots=True)
class District:
    """A county-level division where the bank has branches."""

    code: int  # GB/T 2260; every 东莞 town shares 441900 (东莞 has no districts)
    city: str
    name: str
    branches: int


DISTRICTS: tuple[District, ...] = (
    District(440103, "广州市", "荔湾区", 2),
    District(440104, "广州市", "越秀区", 3),
    District(440105, "广州市", "海珠区", 2),
    District(440106, "广州市", "天河区", 3),
    District(440111, "广州市", "白云区", 3),
    District(440112, "广州市", "黄埔区", 2),
    District(440113, "广州市", "番禺区", 3),
    District(440118, "广州市", "增城区", 2),
    District(440303, "深圳市", "罗湖区", 2),
    District(440304, "深圳市", "福田区", 3),
    District(440305, "深圳市", "南山区", 3),
    District(440306, "深圳市", "宝安区", 3),
    District(440307, "深圳市", "龙岗区", 3),
    District(440309, "深圳市", "龙华区", 2),
    District(440604, "佛山市", "禅城区", 2),
    District(440605, "佛山市", "南海区", 2),
    District(440606, "佛山市", "顺德区", 2),
    District(441900, "东莞市", "南城街道", 2),
    District(441900, "东莞市", "长安镇", 2),
    District(441900, "东莞市", "虎门镇", 2),
    District(441900, "东莞市", "松山湖", 1),
)
CITIES: tuple[str, ...] = tuple(dict.fromkeys(d.city for d in DISTRICTS))
DISTRICT_CITY = np.array([CITIES.index(d.city) for d in DISTRICTS], dtype=np.int64)
DISTRICT_CODE = np.array([d.code for d in DISTRICTS], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class Province:
    """Where migrants to the Pearl River Delta come from, with their home counties."""

    name: str
    weight: float  # share of migrants
    counties: tuple[tuple[int, str], ...]


PROVINCES: tuple[Province, ...] = (
    Province(
        "湖南省",
        0.21,
        (
            (430521, "邵东县"),
            (430524, "隆回县"),
            (430621, "岳阳县"),
            (431121, "祁阳县"),
            (430922, "桃江县"),
            (431021, "桂阳县"),
            (430381, "湘乡市"),
        ),
    ),
    Province(
        "广西壮族自治区",
        0.16,
        (
            (450821, "平南县"),
            (450881, "桂平市"),
            (450921, "容县"),
            (450521, "合浦县"),
            (450923, "博白县"),
            (450722, "浦北县"),
        ),
    ),
    Province(
        "江西省",
        0.10,
        ((360731, "于都县"), (360733, "会昌县"), (360735, "石城县"), (361128, "鄱阳县"), (360124, "进贤县")),
    ),
    Province(
        "四川省",
        0.09,
        ((511623, "邻水县"), (511025, "资中县"), (511321, "南部县"), (510722, "三台县"), (511922, "南江县")),
    ),
    Province(
        "湖北省", 0.09, ((421122, "红安县"), (421023, "监利县"), (420922, "大悟县"), (421127, "黄梅县"))
    ),
    Province(
        "河南省",
        0.08,
        ((411722, "上蔡县"), (411522, "光山县"), (411526, "潢川县"), (411627, "太康县"), (411628, "鹿邑县")),
    ),
    Province(
        "贵州省", 0.07, ((522422, "大方县"), (520221, "水城县"), (522731, "惠水县"), (520324, "正安县"))
    ),
    Province("重庆市", 0.04, ((500101, "万州区"), (500230, "丰都县"), (500243, "彭水县"))),
    Province("云南省", 0.03, ((532128, "镇雄县"), (530381, "宣威市"), (532527, "泸西县"))),
    Province("安徽省", 0.03, ((341221, "临泉县"), (341222, "太和县"), (340826, "宿松县"))),
    Province("福建省", 0.03, ((350524, "安溪县"), (350627, "南靖县"))),
    Province("海南省", 0.02, ((469023, "澄迈县"), (469027, "乐东黎族自治县"))),
    Province("陕西省", 0.02, ((610528, "富平县"), (610727, "略阳县"))),
    Province("黑龙江省", 0.03, ((230183, "尚志市"), (231224, "庆安县"))),
)

MIGRATION = np.array([p.weight for p in PROVINCES]) / sum(p.weight for p in PROVINCES)
"""Share of migrants from each of PROVINCES."""

# Locals: the delta itself (with two retired 广州 codes) and the rest of 广东.
LOCAL_COUNTIES: tuple[tuple[int, str], ...] = (
    *dict.fromkeys((d.code, d.city + d.name) for d in DISTRICTS if d.code != 441900),
    (441900, "东莞市"),
    (440102, "广州市东山区"),
    (440107, "广州市芳村区"),
    (441202, "肇庆市端州区"),
    (441781, "阳春市"),
    (445102, "潮州市湘桥区"),
    (440882, "雷州市"),
    (441622, "龙川县"),
    (441424, "五华县"),
    (445281, "普宁市"),
    (440232, "乳源瑶族自治县"),
)


@dataclass(frozen=True, slots=True)
class Homes:
    """Every home county as parallel arrays, locals first."""

    code: np.ndarray  # int64 GB/T 2260
    label: tuple[str, ...]  # province + county as written in a household-register address
    province: np.ndarray  # int64 index into PROVINCES, -1 for 广东
    local_count: int


def _homes() -> Homes:
    codes = [c for c, _ in LOCAL_COUNTIES]
    labels = [PROVINCE + name for _, name in LOCAL_COUNTIES]
    province = [-1] * len(LOCAL_COUNTIES)
    for i, p in enumerate(PROVINCES):
        for code, name in p.counties:
            codes.append(code)
            labels.append(p.name + name)
            province.append(i)
    return Homes(np.array(codes), tuple(labels), np.array(province), len(LOCAL_COUNTIES))


HOMES = _homes()

ROADS = _names(
    "中山路 解放路 人民路 建设路 工业大道 环城路 新港路 广园路 黄埔大道 "
    "深南大道 宝安大道 同和路 沙太路 华夏路 东风路 江南大道 长兴路 荔城大道 "
    "科学大道 季华路 南洲路 石牌东路 增江大道 大沙地东路 振安路 东莞大道 "
    "鸿福路 创业路 文明路 迎宾路 滨江路 育才路 兴业路 金沙路"
)
ESTATES = _names(
    "翠湖山庄 锦绣花园 碧桂园 保利花园 万科城 富力城 星河湾 丽江花园 南国花园 "
    "幸福家园 东湖小区 阳光小区 金碧华府 时代廊桥 祈福新邨 珠江新城 中海锦苑 "
    "恒大名都 雅居乐花园 城市花园 御景湾 华景新城 美林湖 天安花园 龙湖新村 "
    "海伦堡 荔园小区 长乐新村"
)
# Short stays: what ring recruits are lodged in. Two chains carry no keyword.
LODGINGS = _names(
    "盛世宾馆 城中村旅馆 平安旅馆 好运来旅馆 金源宾馆 如家快捷酒店 天天快捷酒店 "
    "银河招待所 粤海招待所 温馨民宿 悦居民宿 东方公寓 安居公寓 锦江之星 "
    "7天连锁"
)
# Long-term rentals where legitimate migrants live: also 公寓, also "lodging".
RENTALS = ("青年公寓", "人才公寓", "长租公寓", "蓝领公寓", "城中村出租屋", "安居公寓")
BUSINESS_CENTRES = _names(
    "时代商务中心 创业大厦 中信广场 汇金中心 金融城大厦 联合商务中心 科创园 "
    "天汇大厦 星河商务大厦 创富众创空间 云谷孵化器 万众商务秘书托管中心"
)
OFFICE_TOWERS = _names(
    "国际金融中心 环球贸易广场 发展中心大厦 太古汇 华润大厦 招商大厦 新城国际 "
    "粤海大厦 富力中心 保利中心 东方广场 世纪大厦 港汇大厦 华侨大厦"
)
FACTORY_BRANDS = _names("华兴 鸿运 立信 永盛 宏达 金源 兴发 德力 新科 富强 精诚 佳美 恒通 大成 伟业 联丰")
FACTORY_KINDS = ("电子厂", "制衣厂", "五金厂", "塑胶厂", "玩具厂", "家具厂", "印刷厂")
TOWNS = _names(
    "大坪镇 龙潭乡 石门镇 新田乡 长岭镇 白沙乡 金竹镇 青山乡 桃源镇 城关镇 高桥镇 黄田乡 马坪镇 双河乡"
)
VILLAGES = _names(
    "桃源村 上湾村 下坝村 中和村 陈屋村 杨家村 刘家村 李寨村 张岭村 新屋村 "
    "石桥村 柳树村 大塘村 坪上村 河口村 水口村"
)


@dataclass(frozen=True, slots=True)
class University:
    """A campus whose freshmen open accounts in batches each September."""

    name: str
    district: int  # index into DISTRICTS
    road: str
    number: int


def _district(name: str) -> int:
    return next(i for i, d in enumerate(DISTRICTS) if d.name == name)


UNIVERSITIES: tuple[University, ...] = (
    University("广东工业大学", _district("番禺区"), "外环西路", 100),
    University("广州大学", _district("番禺区"), "外环西路", 230),
    University("华南理工大学", _district("天河区"), "五山路", 381),
    University("广东财经大学", _district("海珠区"), "赤沙路", 21),
    University("深圳大学", _district("南山区"), "南海大道", 3688),
    University("南方科技大学", _district("南山区"), "学苑大道", 1088),
    University("深圳职业技术大学", _district("南山区"), "沙河西路", 7098),
    University("佛山科学技术学院", _district("禅城区"), "江湾一路", 18),
    University("广东东软学院", _district("南海区"), "南海软件科技园", 1),
    University("东莞理工学院", _district("松山湖"), "大学路", 1),
)
# Dormitory blocks of a campus: 东区, 西区 ...
CAMPUS_ZONES = ("东区", "西区", "南区", "北区", "")
