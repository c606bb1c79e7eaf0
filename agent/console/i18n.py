"""The console's text in English and Chinese. The language is the ``lang`` cookie (the switch in the header), else
the browser's ``Accept-Language`` (``zh*`` gives Chinese), else English."""

from __future__ import annotations

LANGS = ("en", "zh")

TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "vcs-edge console",
        "login": "Log in",
        "logout": "Log out",
        "user": "User",
        "password": "Password",
        "bad_login": "Wrong user name or password.",
        "too_many": "Too many failed logins; wait a minute.",
        "overview": "Overview",
        "cameras": "Cameras",
        "camera": "Camera",
        "targets": "Targets",
        "search": "Search by picture",
        "watch": "Watch lists",
        "instances": "Instances",
        "config": "Site configuration",
        "status": "Status",
        "links": "Links",
        "storage": "Storage",
        "process": "Process",
        "targets_stored": "targets stored",
        "free": "free",
        "cpu": "CPU",
        "rss": "memory (RSS)",
        "live": "Live",
        "recent_targets": "Recent targets",
        "type": "Type",
        "time": "Time",
        "all": "all",
        "filter": "Filter",
        "prev": "Previous",
        "next": "Next",
        "page": "Page",
        "attributes": "Attributes",
        "score": "Score",
        "source_frame": "Source frame",
        "not_available": "Needs issue {n} ({what}); not available yet on this box.",
        "none": "none",
        "schedule": "Schedule",
        "week": "This week",
        "algorithm": "Algorithm",
        "gb28181": "GB/T 28181",
        "mqtt": "MQTT",
        "not_configured": "not configured",
        "redacted": "Secrets are shown as ***.",
        "playing": "playing",
        "fallback_hls": "WebRTC failed; playing HLS",
        "days": "Mon,Tue,Wed,Thu,Fri,Sat,Sun",
        "new_target": "new target",
        "lang_switch": "中文",
        "no_embedder": "Search by picture needs an embedding model (a face_body or face instance loads one); "
        "this box has none loaded.",
        "drop_here": "Choose or drop a picture of a face.",
        "bad_picture": "Not a picture this box reads (JPEG, PNG, BMP, WebP; at most 1 MB and 4096×4096).",
        "nothing_found": "No face found in the picture.",
    },
    "zh": {
        "title": "vcs-edge 控制台",
        "login": "登录",
        "logout": "退出",
        "user": "用户名",
        "password": "密码",
        "bad_login": "用户名或密码错误。",
        "too_many": "登录失败次数过多，请一分钟后再试。",
        "overview": "概览",
        "cameras": "摄像机",
        "camera": "摄像机",
        "targets": "目标",
        "search": "以图搜图",
        "watch": "布控名单",
        "instances": "计算实例",
        "config": "站点配置",
        "status": "状态",
        "links": "上级链路",
        "storage": "存储",
        "process": "进程",
        "targets_stored": "已存目标",
        "free": "可用",
        "cpu": "CPU",
        "rss": "内存 (RSS)",
        "live": "实时画面",
        "recent_targets": "最近目标",
        "type": "类型",
        "time": "时间",
        "all": "全部",
        "filter": "筛选",
        "prev": "上一页",
        "next": "下一页",
        "page": "页",
        "attributes": "属性",
        "score": "置信度",
        "source_frame": "原图",
        "not_available": "需要第 {n} 号需求（{what}），本设备暂不可用。",
        "none": "无",
        "schedule": "计划",
        "week": "本周",
        "algorithm": "算法",
        "gb28181": "GB/T 28181",
        "mqtt": "MQTT",
        "not_configured": "未配置",
        "redacted": "密钥显示为 ***。",
        "playing": "播放中",
        "fallback_hls": "WebRTC 失败，改用 HLS 播放",
        "days": "周一,周二,周三,周四,周五,周六,周日",
        "new_target": "新目标",
        "lang_switch": "English",
        "no_embedder": "以图搜图需要特征模型（人脸或人脸人体实例会加载），本设备尚未加载。",
        "drop_here": "选择或拖入一张人脸图片。",
        "bad_picture": "无法读取该图片（JPEG、PNG、BMP、WebP；不超过 1 MB 和 4096×4096）。",
        "nothing_found": "图片中没有找到人脸。",
    },
}


def pick(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGS:
        return str(cookie)
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return "en"


def t(lang: str, key: str, **kw: object) -> str:
    text = TEXT.get(lang, TEXT["en"]).get(key) or TEXT["en"].get(key, key)
    return text.format(**kw) if kw else text
