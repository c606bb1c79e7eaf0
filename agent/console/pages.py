"""Server-rendered HTML of the console: one function per page, every value escaped, text from ``i18n``.

No template engine and no JavaScript build: each page is a string with a small script (``static/console.js``)
for live view, server-sent events and the language switch. Layout is one CSS grid that folds into a column on
a phone.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from .i18n import t

CSS = """
*{box-sizing:border-box}body{margin:0;font:15px/1.45 system-ui,"WenQuanYi Micro Hei",sans-serif;color:#1d2330;
background:#f3f5f8}header{display:flex;flex-wrap:wrap;align-items:center;gap:.3rem 1rem;padding:.6rem 1rem;
background:#14213d;color:#fff}header a{color:#dfe7ff;text-decoration:none}header a.on{color:#fff;font-weight:600;
border-bottom:2px solid #fca311}header .brand{font-weight:700;margin-right:1rem}header form{margin:0 0 0 auto}
button,input,select{font:inherit;padding:.35rem .6rem;border:1px solid #b8c0cc;border-radius:4px;background:#fff}
button{background:#14213d;color:#fff;border-color:#14213d;cursor:pointer}main{padding:1rem;max-width:1400px;
margin:auto}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1rem}
.card{background:#fff;border-radius:6px;padding:.8rem;box-shadow:0 1px 3px #0002}.card h3{margin:.2rem 0 .5rem}
.thumb{width:100%;aspect-ratio:4/3;object-fit:cover;background:#222;border-radius:4px}
.badge{display:inline-block;padding:.05rem .5rem;border-radius:9px;font-size:.85em;background:#ccc}
.badge.streaming,.badge.ok,.badge.registered,.badge.connected{background:#2a9d8f;color:#fff}
.badge.backoff,.badge.failed,.badge.offline{background:#e63946;color:#fff}
.badge.RUNNING{background:#2a9d8f;color:#fff}.badge.EXCEPTION{background:#e63946;color:#fff}
.badge.connecting,.badge.stopped{background:#adb5bd}table{border-collapse:collapse;width:100%}
td,th{padding:.3rem .5rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
.targets{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:.7rem}
.target{background:#fff;border-radius:6px;overflow:hidden;box-shadow:0 1px 3px #0002;color:inherit;
text-decoration:none}.target img{width:100%;aspect-ratio:3/4;object-fit:cover;background:#ddd;display:block}
.target div{padding:.3rem .45rem;font-size:.85em}.target.new{outline:3px solid #fca311}
video{width:100%;max-height:70vh;background:#000;border-radius:4px}.row{display:flex;flex-wrap:wrap;gap:1rem}
.row>*{flex:1 1 320px}.week{position:relative;display:grid;grid-template-columns:4rem 1fr;gap:2px}
.week .day{position:relative;height:1.4rem;background:#e9ecef;border-radius:3px}
.week .on{position:absolute;top:0;bottom:0;background:#2a9d8f;border-radius:3px;min-width:2px}
.hours{display:flex;justify-content:space-between;font-size:.75em;color:#666}
.frame{position:relative;display:inline-block;max-width:100%}.frame img{max-width:100%;display:block}
.frame .box{position:absolute;border:3px solid #fca311}pre{white-space:pre-wrap;background:#fff;padding:1rem;
border-radius:6px;overflow:auto}.error{color:#e63946}.muted{color:#6c757d}.login{max-width:22rem;margin:10vh auto}
.login input{width:100%;margin:.2rem 0 .8rem}@media(max-width:600px){header .brand{width:100%}main{padding:.5rem}}
"""

NAV = (
    ("overview", "/console/"),
    ("targets", "/console/targets"),
    ("search", "/console/search"),
    ("watch", "/console/watch"),
    ("instances", "/console/instances"),
    ("config", "/console/config"),
)


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def layout(lang: str, active: str, body: str, *, csrf: str = "", user: str = "", title: str = "") -> str:
    nav = "".join(
        f'<a href="{href}" class="{"on" if key == active else ""}" data-nav="{key}">{e(t(lang, key))}</a>'
        for key, href in NAV
    )
    other = "en" if lang == "zh" else "zh"
    head = ""
    if user:
        head = (
            f'<header><span class="brand">{e(t(lang, "title"))}</span>{nav}'
            f'<a href="#" id="lang" data-lang="{other}">{e(t(lang, "lang_switch"))}</a>'
            f'<form method="post" action="/console/logout"><input type="hidden" name="csrf" value="{e(csrf)}">'
            f'<span class="muted">{e(user)}</span> <button id="logout">{e(t(lang, "logout"))}</button></form>'
            "</header>"
        )
    page_title = f"{title} · " if title else ""
    return (
        f'<!doctype html><html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<meta name="csrf" content="{e(csrf)}"><title>{e(page_title)}{e(t(lang, "title"))}</title>'
        f"<style>{CSS}</style></head><body>{head}<main>{body}</main>"
        + ('<script src="/console/static/console.js"></script>' if user else "")
        + "</body></html>"
    )


def login(lang: str, csrf: str, error: str = "") -> str:
    err = f'<p class="error" id="error">{e(error)}</p>' if error else ""
    other = "en" if lang == "zh" else "zh"
    body = (
        f'<div class="login card"><h2>{e(t(lang, "title"))}</h2>{err}'
        f'<form method="post" action="/console/login"><input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<label>{e(t(lang, "user"))}<input name="user" autocomplete="username" required></label>'
        f'<label>{e(t(lang, "password"))}<input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        f'<button type="submit">{e(t(lang, "login"))}</button></form>'
        f'<p><a href="/console/login?lang={other}">{e(t(lang, "lang_switch"))}</a></p></div>'
    )
    return layout(lang, "", body)


def _badge(status: str) -> str:
    return f'<span class="badge {e(status)}" data-status>{e(status)}</span>'


def overview(lang: str, cameras: Sequence[dict[str, Any]], links: dict[str, Any], storage: dict[str, Any],
             proc: dict[str, Any]) -> str:  # fmt: skip
    cards = "".join(
        f'<div class="card camera" data-camera="{e(c["id"])}"><a href="/console/camera/{e(c["id"])}">'
        f'<img class="thumb" loading="lazy" alt="" data-thumb src="/console/thumb/{e(c["id"])}.jpg"></a>'
        f'<h3><a href="/console/camera/{e(c["id"])}">{e(c["name"])}</a></h3>'
        f'<div class="muted">{e(c["id"])}</div>{_badge(c["status"])}</div>'
        for c in cameras
    )
    link_rows = "".join(
        f"<tr><th>{e(t(lang, name))}</th><td>{_badge(v['state']) if v else e(t(lang, 'not_configured'))}"
        f"{' <span class=muted>' + e(v.get('detail', '')) + '</span>' if v else ''}</td></tr>"
        for name, v in links.items()
    )
    free_gb = storage["free_bytes"] / 1e9
    body = (
        f'<h2>{e(t(lang, "cameras"))}</h2><div class="grid" id="cameras">{cards}</div>'
        f'<div class="grid" style="margin-top:1rem"><div class="card"><h3>{e(t(lang, "links"))}</h3>'
        f'<table id="links">{link_rows}</table></div>'
        f'<div class="card"><h3>{e(t(lang, "storage"))}</h3><p id="storage">{storage["targets"]} '
        f"{e(t(lang, 'targets_stored'))}, {storage['used_bytes'] / 1e6:.1f} MB; {free_gb:.1f} GB "
        f'{e(t(lang, "free"))}</p></div><div class="card"><h3>{e(t(lang, "process"))}</h3>'
        f'<p id="proc">{e(t(lang, "cpu"))} {proc["cpu_pct"]:.1f}% · {e(t(lang, "rss"))} '
        f"{proc['rss_bytes'] / 1e6:.0f} MB</p></div></div>"
    )
    return body


def target_card(r: dict[str, Any]) -> str:
    return (
        f'<a class="target" href="/console/targets/{e(r["id"])}" data-target="{e(r["id"])}">'
        f'<img alt="" loading="lazy" src="{e(r["crop"])}"><div><b>{e(r["type"])}</b> '
        f'<span class="muted">{e(r["time"])}</span><br>{e(r["camera"])}<br>'
        f'<span class="muted">{e(r["attrs"])}</span></div></a>'
    )


def camera(lang: str, cam: dict[str, Any], instances: Iterable[dict[str, Any]],
           targets: Sequence[dict[str, Any]]) -> str:  # fmt: skip
    rows = "".join(
        f"<tr><td>{e(i['id'])}</td><td>{e(i['name'])}</td><td>{e(i['algorithm'])}</td>"
        f"<td>{_badge(i['status'])}</td></tr>"
        for i in instances
    )
    cards = "".join(target_card(r) for r in targets)
    return (
        f'<h2>{e(cam["name"])} <span class="muted">{e(cam["id"])}</span> {_badge(cam["status"])}</h2>'
        f'<div class="row"><div><video id="live" autoplay muted playsinline controls '
        f'data-camera="{e(cam["id"])}" data-hls="{e(cam["hls"])}"></video>'
        f'<p id="live-state" class="muted"></p></div>'
        f'<div class="card"><h3>{e(t(lang, "instances"))}</h3><table id="instances">{rows}</table></div></div>'
        f'<h3>{e(t(lang, "recent_targets"))}</h3><div class="targets" id="gallery" '
        f'data-camera="{e(cam["id"])}">{cards}</div>'
    )


def targets(lang: str, cards: Sequence[dict[str, Any]], *, types: Sequence[str], cameras: Sequence[str],
            chosen_type: str, chosen_camera: str, page: int, pages: int, total: int) -> str:  # fmt: skip
    def opts(values: Sequence[str], chosen: str) -> str:
        all_opt = f'<option value="">{e(t(lang, "all"))}</option>'
        return all_opt + "".join(
            f'<option value="{e(v)}"{" selected" if v == chosen else ""}>{e(v)}</option>' for v in values
        )

    query = f"type={e(chosen_type)}&amp;camera={e(chosen_camera)}"
    prev = (
        f'<a id="prev" href="/console/targets?{query}&amp;page={page - 1}">{e(t(lang, "prev"))}</a>'
        if page > 1
        else ""
    )
    nxt = (
        f'<a id="next" href="/console/targets?{query}&amp;page={page + 1}">{e(t(lang, "next"))}</a>'
        if page < pages
        else ""
    )
    live = "1" if page == 1 else "0"
    return (
        f'<h2>{e(t(lang, "targets"))} <span class="muted" id="total">{total}</span></h2>'
        f'<form method="get" action="/console/targets" id="filters" class="row" style="flex-wrap:nowrap">'
        f'<label>{e(t(lang, "type"))} <select name="type" id="f-type">{opts(types, chosen_type)}</select></label>'
        f'<label>{e(t(lang, "camera"))} <select name="camera" id="f-camera">{opts(cameras, chosen_camera)}'
        f'</select></label><button type="submit" id="f-go">{e(t(lang, "filter"))}</button></form>'
        f'<div class="targets" id="gallery" data-live="{live}" data-type="{e(chosen_type)}" '
        f'data-camera="{e(chosen_camera)}" style="margin-top:1rem">'
        + "".join(target_card(r) for r in cards)
        + f'</div><p>{prev} {e(t(lang, "page"))} <span id="page">{page}</span>/{pages} {nxt}</p>'
    )


def target_detail(lang: str, r: dict[str, Any]) -> str:
    attrs = "".join(
        f"<tr><th>{e(a['Key'])}</th><td>{e(a['Value'])}</td><td>{e(a.get('Score', ''))}</td></tr>"
        for a in r["attributes"]
    )
    frame = ""
    if r["frame"]:
        x1, y1, x2, y2 = r["box"]
        w, h = r["frame_size"] or (0, 0)
        style = (
            f"left:{100 * x1 / w:.3f}%;top:{100 * y1 / h:.3f}%;width:{100 * (x2 - x1) / w:.3f}%;"
            f"height:{100 * (y2 - y1) / h:.3f}%"
            if w and h
            else "display:none"
        )
        frame = (
            f'<h3>{e(t(lang, "source_frame"))}</h3><div class="frame"><img id="frame" alt="" src="{e(r["frame"])}">'
            f'<div class="box" id="box" style="{style}"></div></div>'
        )
    return (
        f'<h2>{e(r["type"])} <span class="muted">{e(r["id"])}</span></h2><div class="row">'
        f'<div><img alt="" src="{e(r["crop"])}" style="max-width:240px"></div><div class="card"><table>'
        f"<tr><th>{e(t(lang, 'time'))}</th><td>{e(r['time'])}</td></tr>"
        f'<tr><th>{e(t(lang, "camera"))}</th><td><a href="/console/camera/{e(r["camera"])}">{e(r["camera"])}</a>'
        f"</td></tr><tr><th>{e(t(lang, 'score'))}</th><td>{r['score']:.2f}</td></tr>"
        f"<tr><th>Box</th><td>{e(r['box'])}</td></tr></table><h3>{e(t(lang, 'attributes'))}</h3>"
        f'<table id="attributes">{attrs or "<tr><td>" + e(t(lang, "none")) + "</td></tr>"}</table></div></div>'
        f"{frame}"
    )


def search(lang: str, csrf: str, *, available: bool, results: Sequence[dict[str, Any]] | None = None,
           error: str = "", chosen_type: str = "Face") -> str:  # fmt: skip
    if not available:
        return (
            f'<h2>{e(t(lang, "search"))}</h2><p class="card" id="unavailable">{e(t(lang, "no_embedder"))}</p>'
        )
    opts = "".join(
        f'<option value="{v}"{" selected" if v == chosen_type else ""}>{v}</option>'
        for v in ("Face",)  # the box embeds faces only
    )
    err = f'<p class="error" id="error">{e(error)}</p>' if error else ""
    cards = ""
    if results is not None:
        cards = (
            f'<p id="found">{len(results)}</p><div class="targets" id="results">'
            + "".join(target_card(r) for r in results)
            + "</div>"
        )
    return (
        f'<h2>{e(t(lang, "search"))}</h2>{err}<form method="post" action="/console/search" '
        f'enctype="multipart/form-data" id="drop" class="card"><input type="hidden" name="csrf" value="{e(csrf)}">'
        f'<p>{e(t(lang, "drop_here"))}</p><input type="file" name="picture" accept="image/*" required id="picture"> '
        f'<select name="type">{opts}</select> <button type="submit" id="search-go">{e(t(lang, "search"))}</button>'
        f"</form>{cards}"
    )


def watch(lang: str, tasks: Sequence[Any], policies: dict[str, Any], items: dict[str, list[Any]]) -> str:
    """The watch lists, read-only (they are made and changed through the API: CreateWatchPolicy, ...)."""
    rows = []
    for pid, pol in policies.items():
        n = len(items.get(pid, []))
        rows.append(
            f'<tr data-policy="{e(pid)}"><td>{e(pol.name)}</td><td>{e(pol.mode)}</td><td>{e(pol.target_type)}</td>'
            f"<td>{e(pol.match_type)}</td><td>{n}</td></tr>"
        )
    task_rows = [
        f'<tr data-task="{e(tk.task_id)}"><td>{e(tk.name)}</td><td>{e(", ".join(tk.devices))}</td>'
        f"<td>{e(tk.schedule_type)}</td><td>{e(', '.join(policies[p].name for p in tk.policy_ids if p in policies))}</td></tr>"
        for tk in tasks
    ]
    empty = '<p class="muted">-</p>'
    return (
        f"<h2>{e(t(lang, 'watch'))}</h2>"
        f'<div class="card"><table id="policies"><tr><th>Policy</th><th>Mode</th><th>TargetType</th>'
        f"<th>ItemMatchType</th><th>Items</th></tr>{''.join(rows)}</table>{'' if rows else empty}</div>"
        f'<div class="card"><table id="tasks"><tr><th>Task</th><th>Devices</th><th>Schedule</th>'
        f"<th>Policies</th></tr>{''.join(task_rows)}</table>{'' if task_rows else empty}</div>"
    )


def unavailable(lang: str, key: str, issue: int) -> str:
    return f'<h2>{e(t(lang, key))}</h2><p class="card" id="unavailable">{e(t(lang, "not_available", n=issue, what=t(lang, key)))}</p>'


def instances(lang: str, rows: Sequence[dict[str, Any]], week_start: datetime) -> str:
    days = t(lang, "days").split(",")
    span = 7 * 86400.0
    blocks = []
    for inst in rows:
        bars = []
        for d in range(7):
            segs = "".join(
                f'<span class="on" style="left:{100 * a:.3f}%;width:{100 * (b - a):.3f}%"></span>'
                for a, b in inst["windows"].get(d, [])
            )
            bars.append(f'<span class="muted">{e(days[d])}</span><div class="day">{segs}</div>')
        blocks.append(
            f'<div class="card instance" data-instance="{e(inst["id"])}"><h3>{e(inst["name"])} '
            f'<span class="muted">{e(inst["id"])}</span> {_badge(inst["status"])}</h3>'
            f"<p>{e(t(lang, 'algorithm'))}: {e(inst['algorithm'])} · {e(t(lang, 'cameras'))}: "
            f"{e(', '.join(inst['cameras']))} · {e(t(lang, 'schedule'))}: {e(inst['schedule'])}</p>"
            f'<div class="week"><span></span><div class="hours"><span>0</span><span>6</span><span>12</span>'
            f"<span>18</span><span>24</span></div>{''.join(bars)}</div></div>"
        )
    del span
    return (
        f'<h2>{e(t(lang, "instances"))} <span class="muted">{e(t(lang, "week"))} '
        f'{e(week_start.date().isoformat())}</span></h2><div class="grid" style="grid-template-columns:1fr">'
        + "".join(blocks)
        + "</div>"
    )


def config(lang: str, redacted: dict[str, Any]) -> str:
    return (
        f'<h2>{e(t(lang, "config"))}</h2><p class="muted">{e(t(lang, "redacted"))}</p>'
        f'<pre id="config">{e(json.dumps(redacted, indent=2, ensure_ascii=False))}</pre>'
    )
