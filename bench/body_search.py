"""Body search by picture: how often a crop of one sighting of a person re-finds that person on the labelled clip.

The clip is the one of ``bench/quality_tracks.py`` (the first 30 s of vtest.avi at Spf=1, 10 people counted by
hand). ``bench/data/body_search_vtest.json`` holds every Body box the shipped NanoDet finds on it, the track the
shipped tracker put it in, and the person it is (given by hand; null where a box holds two people or the person
cannot be told). Each labelled box is a query: its crop, cut and encoded as the agent cuts a target's crop (20%
margin, JPEG 90), goes through the agent's own search-by-picture path (``Models.embed_picture``: the body
detector on the picture, the largest body, its appearance vector). A query whose crop yields no body counts as a
miss. Two galleries:

* ``targets``: what the box stores, one Body target per track with its vector: of the mean histogram of the
  track's sightings (``mean``, :class:`pipelines.track.AppearanceMean`, what the agent stores) or, for
  comparison, of its best shot alone (``best``). A target is the person most of its sightings are (``mean``) or
  the person of its best shot (``best``). The best shots themselves are left out of the queries (a picture
  would find its own copy). ``top1``: the most similar target is the query's person; ``top5``: one of the 5
  most similar (of 12) is.
* ``sightings``: every other labelled box at least ``GAP_S`` seconds away from the query (another moment, another
  pose), as if every sighting were stored; ``top1``/``top5`` as above. This is the harder figure: no help from
  the query being part of a track.

``per_person_top1`` is the mean over the 10 people of each person's top-1 rate (people seen less weigh as much).
``same_person_at_0.75`` / ``other_person_at_0.75``: the share of (query, box ``GAP_S`` apart) pairs of one person,
and of two people, scoring at least the picture search jobs' default BodyThreshold.

    python -m bench.body_search        # last line: {"targets_best_top1": ..., "sightings_top1": ..., ...}
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality_tracks import clip_frames
from pipelines.crops import crop_jpeg
from pipelines.detect import Detection
from pipelines.frames import Frame
from pipelines.track import (
    AppearanceMean,
    TrackerConfig,
    appearance_vector,
    colour_histogram,
    shot_quality,
)

LABELS = Path(__file__).resolve().parent / "data" / "body_search_vtest.json"
GAP_S = 5
#: the picture search jobs' default BodyThreshold (agent/api/actions/picture_jobs.py), whose pair shares are shown
BODY_THRESHOLD = 0.75
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TOP = 5


def load_sightings(path: Path = LABELS) -> list[tuple[int, Detection, int, str | None]]:
    """(t, box as a Body detection, track, person or None) of every labelled box."""
    data: dict[str, Any] = json.loads(path.read_text())
    out = []
    for t, (x1, y1, x2, y2), track, person in data["sightings"]:
        out.append((int(t), Detection(x1, y1, x2, y2, 1.0, "Body"), int(track), person))
    return out


def _rates(ranked: list[list[str | None]], wanted: list[str]) -> dict[str, float]:
    """top-1 and top-5 hit rates of queries (``ranked``: the gallery's persons, most similar first)."""
    n = len(wanted)
    top1 = sum(1 for r, p in zip(ranked, wanted, strict=True) if r[:1] == [p])
    top5 = sum(1 for r, p in zip(ranked, wanted, strict=True) if p in r[:TOP])
    by: dict[str, list[int]] = defaultdict(list)
    for r, p in zip(ranked, wanted, strict=True):
        by[p].append(1 if r[:1] == [p] else 0)
    per_person = float(np.mean([np.mean(v) for v in by.values()])) if by else 0.0
    return {
        "top1": round(top1 / n, 3) if n else 0.0,
        "top5": round(top5 / n, 3) if n else 0.0,
        "per_person_top1": round(per_person, 3),
        "queries": n,
    }


def body_search(path: Path = LABELS) -> dict[str, Any]:
    from agent.analytics.pipeline import Models
    from agent.config import DetectionConfig

    cfg = DetectionConfig.model_validate({"face": {"enabled": False}, "attributes": False})
    models = Models(cfg)
    frames = clip_frames()
    sightings = load_sightings(path)
    tracker = TrackerConfig()

    # the gallery vectors, from the boxes (what the pipeline computes on a best shot)
    hists = [colour_histogram(frames[t], d) for t, d, _, _ in sightings]
    by_track: dict[int, list[int]] = defaultdict(list)
    for i, (_, _, track, _) in enumerate(sightings):
        by_track[track].append(i)
    best_of: dict[int, int] = {}
    mean_of: dict[int, AppearanceMean] = {}
    for track, members in by_track.items():
        members.sort(key=lambda i: sightings[i][0])
        best, best_q = members[0], -1.0
        mean = AppearanceMean()  # what the tracker keeps
        for i in members:
            t, det, _, _ = sightings[i]
            q = shot_quality(Frame("bench", frames[t], float(t), T0), det, tracker).quality
            if q > best_q:  # the tracker keeps the first of equal shots
                best, best_q = i, q
            h = hists[i]
            if h is not None:
                mean.add(h)
        best_of[track] = best
        mean_of[track] = mean
    tracks = sorted(by_track)
    best_vecs = np.stack([appearance_vector(hists[best_of[k]]) for k in tracks])  # type: ignore[arg-type]
    mean_vecs = np.stack([mean_of[k].vector() for k in tracks])  # type: ignore[misc]
    best_person = [sightings[best_of[k]][3] for k in tracks]
    majority = []
    for k in tracks:
        counts = Counter(sightings[i][3] for i in by_track[k] if sightings[i][3] is not None)
        majority.append(counts.most_common(1)[0][0] if counts else None)

    # the queries, through the agent's search-by-picture path
    queries: list[tuple[int, np.ndarray | None]] = []
    no_body = 0
    for i, (t, det, _, person) in enumerate(sightings):
        if person is None:
            continue
        picture = crop_jpeg(frames[t], (det.x1, det.y1, det.x2, det.y2), margin=0.2, quality=90)
        found = models.embed_picture(picture, "Body")
        if found is None:
            no_body += 1
        queries.append((i, None if found is None else np.asarray(found.vector, dtype=np.float32)))

    def ranked(vec: np.ndarray | None, gallery: np.ndarray, persons: list[str | None]) -> list[str | None]:
        if vec is None:
            return []  # no body found in the picture: nothing comes back
        order = np.argsort(-(gallery @ vec), kind="stable")
        return [persons[j] for j in order]

    best_shots = set(best_of.values())
    target_q = [(i, v) for i, v in queries if i not in best_shots]
    wanted_t = [str(sightings[i][3]) for i, _ in target_q]
    out: dict[str, Any] = {}
    for name, gallery, persons in (("best", best_vecs, best_person), ("mean", mean_vecs, majority)):
        r = _rates([ranked(v, gallery, persons) for _, v in target_q], wanted_t)
        out.update({f"targets_{name}_{k}": v for k, v in r.items()})

    all_vecs = np.stack([appearance_vector(h) if h is not None else np.zeros(72, np.float32) for h in hists])
    sight_ranked, sight_wanted = [], []
    for i, v in queries:
        t = sightings[i][0]
        others = [j for j in range(len(sightings)) if abs(sightings[j][0] - t) >= GAP_S]
        if not any(sightings[j][3] == sightings[i][3] for j in others):
            continue  # no other moment of this person to find
        sight_ranked.append(ranked(v, all_vecs[others], [sightings[j][3] for j in others]))
        sight_wanted.append(str(sightings[i][3]))
    r = _rates(sight_ranked, sight_wanted)
    out.update({f"sightings_{k}": v for k, v in r.items()})
    same, other = _similarities(queries, all_vecs, sightings)
    at = BODY_THRESHOLD
    out.update(
        {
            "people": len({p for _, _, _, p in sightings if p is not None}),
            "targets": len(tracks),
            "labelled_boxes": len(queries),
            "queries_no_body": no_body,
            "similarity_same_person_p50": round(float(np.median(same)), 3),
            "similarity_other_person_p50": round(float(np.median(other)), 3),
            f"same_person_at_{at}": round(float(np.mean(same >= at)), 3),
            f"other_person_at_{at}": round(float(np.mean(other >= at)), 3),
            "gap_s": GAP_S,
        }
    )
    return out


def _similarities(
    queries: list[tuple[int, np.ndarray | None]],
    vecs: np.ndarray,
    sightings: list[tuple[int, Detection, int, str | None]],
) -> tuple[np.ndarray, np.ndarray]:
    """Similarities of the queries to the same person's boxes and to other people's, ``GAP_S`` or more apart."""
    same: list[float] = []
    other: list[float] = []
    for i, v in queries:
        if v is None:
            continue
        for j, (t, _, _, p) in enumerate(sightings):
            if p is None or abs(t - sightings[i][0]) < GAP_S:
                continue
            (same if p == sightings[i][3] else other).append(float(vecs[j] @ v))
    return np.array(same), np.array(other)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="(the output is always one JSON line)")
    parser.parse_args(argv)
    print(json.dumps(body_search()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
