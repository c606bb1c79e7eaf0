"""Target attributes: gender and age of real faces, the colour palette, and faces found in the head regions of
bodies. Real models (AgeGenderNet rebuilt from face-api, RetinaFace, SSDLite) on real pictures from registry
packages; the palette also on synthetic crops whose colour is known exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.detect import BodyDetector, Detection, FaceDetector
from pipelines.detect.attributes import (
    FEMALE,
    MALE,
    PALETTE,
    AgeGenderNet,
    AttributeClassifier,
    body_colours,
    dominant_colour,
    face_input,
    vehicle_colour,
)
from pipelines.detect.face import HeadRegionFaces, head_region, merge_faces
from pipelines.detect.pipeline import DetectionPipeline

from .conftest import make_frame

#: The group photo's six faces from left to right, as anyone can see them: Rachel, Monica, Ross, Chandler, Joey,
#: Phoebe.
GROUP_GENDERS = [FEMALE, FEMALE, MALE, MALE, MALE, FEMALE]

#: One BGR value per palette colour, well inside its range.
SWATCHES = {
    "black": (20, 20, 20),
    "white": (235, 235, 235),
    "gray": (128, 128, 128),
    "red": (30, 30, 210),
    "orange": (20, 130, 240),
    "yellow": (30, 220, 230),
    "green": (40, 180, 40),
    "cyan": (210, 200, 30),
    "blue": (200, 60, 20),
    "purple": (170, 40, 130),
    "pink": (180, 120, 250),
    "brown": (30, 70, 120),
}


@pytest.fixture(scope="module")
def age_gender() -> AgeGenderNet:
    return AgeGenderNet()


def _attrs(found: tuple[object, ...]) -> dict[str, tuple[str, float | None]]:
    return {a.key: (a.value, a.score) for a in found}  # type: ignore[attr-defined]


def test_gender_of_the_six_faces_in_the_group_photo(
    face_detector: FaceDetector, age_gender: AgeGenderNet, group_photo: np.ndarray
) -> None:
    faces = sorted(face_detector.detect(group_photo), key=lambda f: f.x1)
    assert len(faces) == 6
    found = AttributeClassifier(age_gender).describe([(group_photo, f) for f in faces])
    genders = [_attrs(a)["GenderCode"][0] for a in found]
    assert genders == GROUP_GENDERS
    for attrs in found:
        d = _attrs(attrs)
        score = d["GenderCode"][1]
        assert score is not None and 0.5 <= score <= 1.0
        assert 1 <= int(d["Age"][0]) <= 80  # adults; the network is rough on age


def test_gender_of_a_man_in_an_opencv_photo(
    face_detector: FaceDetector, age_gender: AgeGenderNet, opencv_messi: np.ndarray
) -> None:
    face = max(face_detector.detect(opencv_messi), key=lambda f: f.score)
    (attrs,) = AttributeClassifier(age_gender).describe([(opencv_messi, face)])
    assert _attrs(attrs)["GenderCode"][0] == MALE


def test_face_input_is_padded_to_a_square_and_normalised() -> None:
    image = np.full((200, 200, 3), 255, dtype=np.uint8)
    x = face_input(image, Detection(50, 20, 100, 120, 0.9, "Face"))  # 50 wide, 100 high
    assert x.shape == (3, 112, 112) and x.dtype == np.float32
    # RGB order, mean subtracted, /255: white inside, zero padding at the left and right
    assert x[:, 56, 56] == pytest.approx((255 - np.array([122.782, 117.001, 104.298])) / 255, abs=1e-4)
    assert x[0, 56, 2] == pytest.approx(-122.782 / 255, abs=1e-4)


def test_small_faces_get_no_age_or_gender(age_gender: AgeGenderNet) -> None:
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    tiny = Detection(10, 10, 20, 22, 0.9, "Face")
    assert AttributeClassifier(age_gender).describe([(image, tiny)]) == [()]


@pytest.mark.parametrize("name", PALETTE)
def test_palette_on_synthetic_bodies(name: str) -> None:
    # a body box on a grass-green background: jacket in the colour under test, trousers in another
    image = np.full((300, 200, 3), (40, 120, 60), dtype=np.uint8)
    other = "blue" if name != "blue" else "yellow"
    image[50:160, 60:140] = SWATCHES[name]
    image[160:250, 60:140] = SWATCHES[other]
    body = Detection(60, 50, 140, 250, 0.9, "Body")
    d = _attrs(body_colours(image, body))
    assert d["UpperColor"][0] == name
    assert d["LowerColor"][0] == other
    score = d["UpperColor"][1]
    assert score is not None and score > 0.9
    car = Detection(60, 50, 140, 160, 0.9, "Motor")
    assert _attrs(vehicle_colour(image, car))["VehicleColor"][0] == name


def test_background_is_left_out_unless_the_target_wears_it() -> None:
    grey, red = SWATCHES["gray"], SWATCHES["red"]
    region = np.full((40, 40, 3), grey, dtype=np.uint8)
    region[:, 14:] = red  # a third grey (background showing at the side), two thirds red
    background = np.full((20, 3), grey, dtype=np.uint8)
    assert dominant_colour(region, background) == ("red", 1.0)
    all_grey = np.full((40, 40, 3), grey, dtype=np.uint8)
    assert dominant_colour(all_grey, background) == ("gray", 1.0)  # a grey coat in front of a grey wall
    assert dominant_colour(np.zeros((0, 0, 3), dtype=np.uint8)) is None


def test_colour_of_a_real_vehicle(street_frame: np.ndarray) -> None:
    # the white van parked at the back of vtest.avi (box read off the frame by hand)
    van = Detection(655, 45, 722, 98, 0.9, "Motor")
    assert _attrs(vehicle_colour(street_frame, van))["VehicleColor"][0] == "white"


def test_colour_of_a_real_walker(body_detector: BodyDetector, vtest_frames: list[np.ndarray]) -> None:
    # t=14 s: the walker in the white/light-blue hooded jacket crossing the middle of the scene (x ~ 540)
    image = vtest_frames[14]
    walker = min(body_detector.detect(image), key=lambda d: abs(d.center[0] - 540) + abs(d.center[1] - 236))
    assert abs(walker.center[0] - 540) < 30
    d = _attrs(body_colours(image, walker))
    assert d["UpperColor"][0] in {"white", "gray", "cyan"}
    assert d["UpperColor"][0] != "black"


def test_head_region_finds_far_faces_the_whole_frame_pass_misses(
    body_detector: BodyDetector, vtest_frames: list[np.ndarray]
) -> None:
    whole = FaceDetector(input_size=(480, 360))  # the agent's default whole-frame pass
    heads = HeadRegionFaces()
    whole_count = 0
    linked = 0
    # from t=10 s on: walkers near enough to the camera (bodies of 90-130 px) for faces of 8 px and more
    for image in vtest_frames[10:]:
        size = (image.shape[1], image.shape[0])
        bodies = body_detector.detect(image)
        faces = whole.detect(image)
        whole_count += len(faces)
        merged = merge_faces(bodies + faces, heads.find(image, bodies), size)
        for f in (d for d in merged if d.kind == "Face"):
            assert 0 <= f.parent < len(bodies)
            x1, y1, x2, y2 = head_region(merged[f.parent], size)
            assert merged[f.parent].kind == "Body"
            assert x1 <= f.center[0] <= x2 and y1 <= f.center[1] <= y2
            assert f.width >= heads.min_face_px
            linked += 1
    assert whole_count == 0  # faces of 8-12 px: too small for the whole-frame pass
    assert linked >= 5


def test_head_regions_skip_bodies_too_short_for_a_face_worth_reporting(
    body_detector: BodyDetector, vtest_frames: list[np.ndarray]
) -> None:
    # the first 10 s of vtest: walkers far up the square (bodies under 90 px); their "faces" came out 4-6 px wide
    permissive = HeadRegionFaces(min_face_px=4.0)
    permissive.min_body_height = 40.0  # what it searched before
    heads = HeadRegionFaces()
    assert heads.min_body_height == 8.0 * 11
    blobs = 0
    for image in vtest_frames[:10]:
        bodies = body_detector.detect(image)
        blobs += len(permissive.find(image, bodies))
        assert heads.find(image, bodies) == []
    assert blobs >= 5


def test_a_face_seen_by_both_passes_is_one_face_linked_to_the_body_under_it(
    face_detector: FaceDetector, body_detector: BodyDetector, group_photo: np.ndarray
) -> None:
    size = (group_photo.shape[1], group_photo.shape[0])
    bodies = body_detector.detect(group_photo)
    whole = face_detector.detect(group_photo)
    merged = merge_faces(bodies + whole, HeadRegionFaces().find(group_photo, bodies), size)
    faces = [d for d in merged if d.kind == "Face"]
    assert len(faces) == 6  # no duplicates from overlapping body crops
    ross = min(faces, key=lambda f: abs(f.center[0] - 520))  # the face in the middle, his body right under it
    assert ross.parent >= 0
    body = merged[ross.parent]
    assert body.x1 < ross.center[0] < body.x2 and body.y1 < ross.y2


def test_pipeline_links_faces_to_body_tracks_and_gives_attributes(
    face_detector: FaceDetector,
    body_detector: BodyDetector,
    age_gender: AgeGenderNet,
    group_photo: np.ndarray,
) -> None:
    pipeline = DetectionPipeline(
        [face_detector, body_detector],
        head_faces=HeadRegionFaces(),
        attributes=AttributeClassifier(age_gender),
    )
    for s in range(3):
        pipeline.process([make_frame(group_photo, t=float(s), seq=s)])
    reports = pipeline.flush()
    faces = [u for u in reports if u.kind == "Face"]
    bodies = {u.track_id: u for u in reports if u.kind == "Body"}
    assert len(faces) == 6 and bodies
    for u in faces:
        assert {a.key for a in u.attributes} == {"GenderCode", "Age"}
    for u in bodies.values():
        assert {a.key for a in u.attributes} == {"UpperColor", "LowerColor"}
    links = [u.linked for u in faces if u.linked is not None]
    assert len(links) >= 4
    for link in links:
        assert link.kind == "Body" and link.track_id in bodies
        assert link.first_seen == bodies[link.track_id].first_seen
