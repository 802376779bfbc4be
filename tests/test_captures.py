"""Capture readers on files written in each real on-disk format, and bad inputs."""
from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from calibration.cameras import get_camera
from runtime_py.captures import (CaptureError, DPDDDataset, decode_depth_item, detect_format, open_capture,
                                 parse_xmp, read_bundle, read_garg, read_pixel_pgm, read_pixel_png)
from synth import writers
from synth.dp_sample import make_dp_sample
from synth.scenes import random_scene


@pytest.fixture(scope="module")
def dp_sample():
    cam = get_camera("pixel4_dp")
    scene = random_scene("dead_leaves", 96, 256, seed=3, near_m=0.3, far_m=5)  # w/h = 8/3 like 2016x756
    return make_dp_sample(scene, cam, rng=np.random.default_rng(0), scale=0.125, device="cpu")


def _png16(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), values.astype(np.uint16))


# --- Pixel capture app PGM -----------------------------------------------------------------


def test_pixel_pgm_roundtrip_detects_10bit_scaled_and_black(tmp_path, dp_sample):
    cam = get_camera("pixel4_dp")
    paths = writers.write_pixel_sample(tmp_path, 0, dp_sample, cam)
    cap = open_capture(paths[1])  # the right file finds its pair too
    assert cap.kind == "pixel_pgm"
    assert cap.record["bit_depth"] == 10 and cap.record["black_level_code"] == 64.0
    assert cap.record["white_level"] == pytest.approx(65535.0)
    # 10-bit quantisation of (x - 64) / 959: half a code
    assert np.abs(cap.left - dp_sample.left[..., 0]).max() <= 0.55 / 959
    assert np.abs(cap.right - dp_sample.right[..., 0]).max() <= 0.55 / 959
    assert cap.record["pixel_aspect_y_over_x"] == 2.0


def test_pgm_overrides_are_used_and_recorded(tmp_path, dp_sample):
    paths = writers.write_pixel_sample(tmp_path, 0, dp_sample, get_camera("pixel4_dp"))
    cap = read_pixel_pgm(paths[0], black_level=0)
    assert cap.record["black_level"] == 0
    assert cap.record["level_sources"]["black_level"] == "given by caller"
    assert not any(g.startswith("black_level") for g in cap.record["guesses"])  # the black level was given
    # with black 0 the normalised values rise by 64/1023 at x = 0
    assert cap.left.min() == pytest.approx(64 / 1023, abs=1e-3)


def test_to_square_pixels_keeps_columns_and_horizontal_disparity(tmp_path):
    h, w, shift = 96, 256, 3
    x = np.arange(w, dtype=np.float64)
    rows = 0.5 + 0.4 * np.sin(x / 5.0)
    left = np.repeat(rows[None], h, 0)
    right = np.roll(left, shift, axis=1)
    cam = get_camera("pixel4_dp")
    for name, img in (("left", left), ("right", right)):
        writers.write_pgm16(tmp_path / f"20260101_000000_000_{name}.pgm", writers.pixel_dn16(img, cam))
    cap = open_capture(tmp_path)
    sq = cap.to_square_pixels()
    assert sq.left.shape == (2 * h, w)
    assert sq.record["pixel_aspect_y_over_x"] == 1.0 and "vertical x2" in sq.record["square_pixels_resampled"]
    row_l, row_r = sq.left[h], sq.right[h]
    assert np.abs(row_l - cap.left[h // 2]).max() < 1e-6  # columns untouched
    errs = [np.abs(np.roll(row_l, s)[10:-10] - row_r[10:-10]).mean() for s in range(-6, 7)]
    assert int(np.argmin(errs)) - 6 == shift


# --- Xin et al. 14-bit PNG and Garg layout ---------------------------------------------------


def test_pixel_png_14bit_black_1024_and_vignetting(tmp_path, dp_sample):
    lv = np.round(1024 + dp_sample.left[..., 0] * 16383)
    rv = np.round(1024 + dp_sample.right[..., 0] * 0.5 * 16383)  # right view darker (vignetting)
    _png16(tmp_path / "001_left.png", lv)
    _png16(tmp_path / "001_right.png", rv)
    shape = lv.shape
    _png16(tmp_path / "calibration" / "white_sheet_left.png", np.full(shape, 1024 + 0.8 * 16383))
    _png16(tmp_path / "calibration" / "white_sheet_right.png", np.full(shape, 1024 + 0.4 * 16383))
    cap = open_capture(tmp_path / "001_left.png")
    assert cap.kind == "pixel_png"
    assert cap.record["bit_depth"] == 14 and cap.record["black_level"] == 1024
    assert np.abs(cap.left - dp_sample.left[..., 0]).max() <= 0.5 / 16383 + 1e-6
    assert "white_left / white_right" in cap.record["vignetting_correction"]
    assert np.abs(cap.right - np.clip(dp_sample.right[..., 0], 0, 1)).max() < 2e-3  # gain 2 applied
    raw = read_pixel_png(tmp_path / "001_left.png", vignetting=False)
    assert np.abs(raw.right - 0.5 * dp_sample.right[..., 0]).max() < 1e-3


def test_garg_layout(tmp_path, dp_sample):
    for side, img in (("left", dp_sample.left), ("right", dp_sample.right)):
        _png16(tmp_path / f"raw_{side}_pd" / "cap01" / f"result_pd_{side}_center.png", np.round(img[..., 0] * 1023) * 16)
    assert detect_format(tmp_path) == "garg"
    cap = open_capture(tmp_path)
    assert cap.kind == "garg" and cap.record["view"] == "center"
    assert cap.record["bit_depth"] == 10 and cap.record["code_scale"] == 16.0 and cap.record["white_level"] == 16368
    assert np.abs(cap.left - dp_sample.left[..., 0]).max() <= 0.5 / 1023 + 1e-6
    assert read_garg(tmp_path / "raw_left_pd" / "cap01").left.shape == dp_sample.left.shape[:2]


# --- DPDD ------------------------------------------------------------------------------------


def test_dpdd_reader_pairs_sorted_and_rotates_portrait(tmp_path):
    rng = np.random.default_rng(1)
    imgs = []
    for name, (h, w) in (("a", (32, 48)), ("b", (48, 32))):  # b is portrait
        s = SimpleNamespace(**{k: rng.random((h, w, 3)).astype(np.float32) for k in ("left", "right", "combined", "sharp")})
        writers.write_dpdd_sample(tmp_path, "test", name, s)
        imgs.append(s)
    ds = DPDDDataset(tmp_path)
    assert len(ds) == 2
    left, right, comb, target = ds[0]
    assert left.dtype == np.float32 and left.shape == (32, 48, 3)
    assert np.abs(left - writers.linear_to_srgb(imgs[0].left)).max() <= 0.5 / 65535 + 1e-6  # sRGB as stored
    left_b = ds[1][0]
    assert left_b.shape == (32, 48, 3)
    expect = cv2.rotate(writers.linear_to_srgb(imgs[1].left).astype(np.float32), cv2.ROTATE_90_CLOCKWISE)
    assert np.abs(left_b - expect).max() < 1e-4
    cap = open_capture(tmp_path / "test_l" / "source" / "b_L.png")
    assert cap.kind == "dpdd" and cap.record["index"] == 1


# --- bundles and HEIC ----------------------------------------------------------------------------


def _bundle(tmp_path, *, disp_shape=(60, 80), meta_extra=None, wide=True):
    rng = np.random.default_rng(2)
    if wide:
        cv2.imwrite(str(tmp_path / "wide.png"), (rng.random((120, 160, 3)) * 65535).astype(np.uint16))
    cv2.imwrite(str(tmp_path / "ultrawide.jpg"), (rng.random((120, 160, 3)) * 255).astype(np.uint8))
    codes = (np.linspace(0, 1, disp_shape[0] * disp_shape[1]).reshape(disp_shape) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "disparity.png"), codes)
    meta = {"wide": {"fov_deg": 70.0}, "ultrawide": {"focal_length_35mm": 13}, "baseline_mm": 12,
            "disparity": {"range": [0.2, 3.0], "units": "1/m"}, "white_balance": {"wide": [2.0, 1.0, 1.6]},
            "focus_distance_m": 0.8, "f_number": 1.78}
    meta.update(meta_extra or {})
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    return codes


def test_bundle_reads_16bit_disparity_and_focal_lengths(tmp_path):
    codes = _bundle(tmp_path)
    cap = open_capture(tmp_path)
    assert cap.kind == "bundle"
    assert cap.wide.shape == (120, 160, 3) and cap.ultrawide.shape == (120, 160, 3)
    assert cap.disparity.shape == (120, 160)  # resampled to the wide grid, recorded
    assert "80x60 -> 160x120" in cap.record["disparity"]["resampled"]
    assert cap.record["disparity_range"][0] == pytest.approx(0.2, abs=1e-3)
    assert cap.record["disparity_range"][1] == pytest.approx(3.0, abs=2e-3)
    assert cap.record["wide_focal_px"] == pytest.approx(80 / np.tan(np.radians(35)), rel=1e-4)
    assert cap.record["ultrawide_focal_px"] == pytest.approx(160 * 13 / 36, rel=1e-4)
    assert cap.record["warnings"] == []
    assert codes.max() == 65535


def test_bundle_missing_wide_and_meta_lists_everything(tmp_path):
    _bundle(tmp_path, wide=False)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(CaptureError, match=r"missing: wide image .*meta\.json"):
        read_bundle(tmp_path)


def test_bundle_disparity_of_other_aspect_and_nan(tmp_path):
    _bundle(tmp_path, disp_shape=(50, 90))
    with pytest.raises(CaptureError, match="disparity.png.*aspect ratio"):
        read_bundle(tmp_path)
    (tmp_path / "disparity.png").unlink()
    d = np.ones((120, 160), np.float32)
    d[3, 4] = np.nan
    np.save(tmp_path / "disparity.npy", d)
    with pytest.raises(CaptureError, match=r"disparity.npy: disparity holds 1 NaN"):
        read_bundle(tmp_path)


def test_bundle_disparity_png_without_range_is_reported(tmp_path):
    _bundle(tmp_path, meta_extra={"disparity": {"units": "1/m"}})
    with pytest.raises(CaptureError, match="disparity.range or disparity.scale"):
        read_bundle(tmp_path)


APPLE_XMP = b"""<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:apdi="http://ns.apple.com/pixeldatainfo/1.0/" apdi:NativeFormat="1751411059"
 apdi:FloatMinValue="0.25" apdi:FloatMaxValue="2.5" apdi:IntrinsicMatrixReferenceWidth="4032"
 apdi:IntrinsicMatrixReferenceHeight="3024"><apdi:IntrinsicMatrix><rdf:Seq><rdf:li>2800.5</rdf:li><rdf:li>0</rdf:li>
<rdf:li>0</rdf:li><rdf:li>0</rdf:li><rdf:li>2800.5</rdf:li><rdf:li>0</rdf:li><rdf:li>2010.0</rdf:li>
<rdf:li>1500.0</rdf:li><rdf:li>1</rdf:li></rdf:Seq></apdi:IntrinsicMatrix></rdf:Description></rdf:RDF></x:xmpmeta>"""


def test_depth_item_decoding_from_xmp_and_representation_info():
    codes = np.array([[0, 51, 255]], np.uint8)
    xmp = parse_xmp(APPLE_XMP)
    disp, rec = decode_depth_item(codes, None, xmp)
    assert np.allclose(disp, [[0.25, 0.25 + 0.2 * 2.25, 2.5]], atol=1e-6)
    assert "XMP" in rec["range_source"]
    disp2, rec2 = decode_depth_item(codes, {"d_min": 1.0, "d_max": 3.0, "representation_type": 1}, xmp)
    assert np.allclose(disp2, [[1.0, 1.4, 3.0]], atol=1e-6) and "HEVC" in rec2["range_source"]
    with pytest.raises(CaptureError, match="no float range"):
        decode_depth_item(codes, None, {})
    with pytest.raises(CaptureError, match="uniform_Z"):
        decode_depth_item(codes, {"d_min": 1.0, "d_max": 3.0, "representation_type": 2}, xmp)


def test_heic_primary_with_xmp_intrinsics(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, :48] = (200, 40, 40)
    img[:, 48:] = (30, 160, 220)
    pillow_heif.from_bytes("RGB", (96, 64), img.tobytes()).save(tmp_path / "p.heic", quality=95, xmp=APPLE_XMP)
    cap = open_capture(tmp_path / "p.heic")
    assert cap.kind == "iphone_heic" and cap.wide.shape == (64, 96, 3)
    assert np.abs(cap.wide[10:-10, 5:40].mean((0, 1)) - np.array([200, 40, 40]) / 255).max() < 0.05
    assert cap.record["disparity"] == "no depth image in this HEIC"  # pillow-heif cannot write depth items
    k = cap.record["intrinsics"]["matrix"]
    assert k["fx"] == 2800.5 and k["cx"] == 2010.0 and k["source"] == "primary image XMP (apdi:IntrinsicMatrix)"
    assert cap.record["intrinsics"]["focal_px"]["value"] == pytest.approx(2800.5 * 96 / 4032, abs=0.01)
    assert "EXIF FNumber" in cap.record["intrinsics_missing"]


def test_heic_exif_focal_length_and_f_number_with_sources(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    from PIL import Image
    from PIL.ExifTags import IFD

    exif = Image.Exif()
    exif[0x010F] = "Apple"
    sub = exif.get_ifd(IFD.Exif)
    sub[0x920A], sub[0xA405], sub[0x829D] = 5.7, 26, 1.5  # iPhone 13 Pro wide: 5.7 mm, 26 mm equivalent, f/1.5
    pillow_heif.from_bytes("RGB", (72, 54), np.full((54, 72, 3), 90, np.uint8).tobytes()).save(
        tmp_path / "e.heic", exif=exif.tobytes())
    cap = open_capture(tmp_path / "e.heic")
    intr = cap.record["intrinsics"]
    assert intr["focal_length_mm"] == {"value": 5.7, "source": "EXIF FocalLength"}
    assert intr["focal_length_35mm"] == {"value": 26.0, "source": "EXIF FocalLengthIn35mmFilm"}
    assert intr["f_number"] == {"value": 1.5, "source": "EXIF FNumber"}
    assert intr["focal_px"]["value"] == pytest.approx(72 * 26 / 36, abs=0.01) and "35 mm" in intr["focal_px"]["source"]
    assert cap.record["intrinsics_missing"] == ["intrinsic matrix (no apdi:IntrinsicMatrix in the depth item's or "
                                                "primary's XMP, no HEIF cmin)"]
    assert cap.record["disparity"] == "no depth image in this HEIC" and cap.record["depth_items"] == []


# --- bad files -------------------------------------------------------------------------------


def test_truncated_pgm_names_file_and_sizes(tmp_path, dp_sample):
    paths = writers.write_pixel_sample(tmp_path, 0, dp_sample, get_camera("pixel4_dp"))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(CaptureError, match=r"_right\.pgm: truncated PGM: 256x96 at 16 bits needs 49152 bytes"):
        open_capture(paths[0])


def test_corrupt_and_truncated_png(tmp_path, dp_sample, capfd):
    lv = np.round(1024 + dp_sample.left[..., 0] * 16383)
    _png16(tmp_path / "001_left.png", lv)
    (tmp_path / "001_right.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    with pytest.raises(CaptureError, match=r"001_right\.png: right DP view is corrupt"):
        read_pixel_png(tmp_path / "001_left.png")
    data = (tmp_path / "001_left.png").read_bytes()
    for cut in (40, len(data) // 2):  # IEND lost; IDAT cut short
        (tmp_path / "001_right.png").write_bytes(data[: len(data) - cut])
        with pytest.raises(CaptureError, match=r"001_right\.png: right DP view is truncated \(.*the file ends at byte"):
            read_pixel_png(tmp_path / "001_left.png")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF  # inside IDAT: the chunk's CRC no longer matches
    (tmp_path / "001_right.png").write_bytes(bytes(flipped))
    with pytest.raises(CaptureError, match=r"001_right\.png: right DP view is corrupt \(CRC mismatch in the IDAT"):
        read_pixel_png(tmp_path / "001_left.png")
    assert "libpng" not in capfd.readouterr().err  # libpng never got to print its own line


def test_wrong_bit_depth(tmp_path, dp_sample):
    _png16(tmp_path / "001_left.png", np.round(1024 + dp_sample.left[..., 0] * 16383))
    _png16(tmp_path / "001_right.png", np.round(1024 + dp_sample.right[..., 0] * 16383))
    with pytest.raises(CaptureError, match=r"001_left\.png: .* % of the values \(up to \d+\) are above the white "
                       r"level 2047 \(from bit depth 10"):
        read_pixel_png(tmp_path / "001_left.png", bit_depth=10)  # 1024 + 2^10 - 1
    cv2.imwrite(str(tmp_path / "002_left.png"), (dp_sample.left[..., 0] * 255).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "002_right.png"), (dp_sample.right[..., 0] * 255).astype(np.uint8))
    with pytest.raises(CaptureError, match=r"002_left\.png: left DP view is 8-bit"):
        read_pixel_png(tmp_path / "002_left.png")


def test_left_right_size_mismatch(tmp_path, dp_sample):
    cam = get_camera("pixel4_dp")
    writers.write_pgm16(tmp_path / "x_left.pgm", writers.pixel_dn16(dp_sample.left, cam))
    writers.write_pgm16(tmp_path / "x_right.pgm", writers.pixel_dn16(dp_sample.right[:, :200], cam))
    with pytest.raises(CaptureError, match=r"x_right\.pgm: right view is 200x96 but left view x_left\.pgm is 256x96"):
        read_pixel_pgm(tmp_path / "x_left.pgm")


def test_unknown_inputs_raise_value_errors(tmp_path):
    with pytest.raises(CaptureError, match="no such file"):
        open_capture(tmp_path / "nope.pgm")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CaptureError, match="unrecognised capture file"):
        open_capture(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="folder holds no known capture"):
        open_capture(tmp_path)


def test_cli_inspect_prints_and_fails_cleanly(tmp_path):
    from typer.testing import CliRunner

    import cli

    _bundle(tmp_path)
    runner = CliRunner()
    res = runner.invoke(cli.app, ["inspect", str(tmp_path), "--preview", str(tmp_path / "prev.png")])
    assert res.exit_code == 0, res.output
    assert "disparity_range" in res.output and "wide_focal_px" in res.output
    assert cv2.imread(str(tmp_path / "prev.png")).shape[0] == 384
    (tmp_path / "wide.png").unlink()
    res = runner.invoke(cli.app, ["inspect", str(tmp_path)])
    assert res.exit_code == 2 and "missing: wide image" in res.output and "Traceback" not in res.output


# --- levels: fixed by the layout, overridable, guesses named (issue 13, part 0) ----------------


def _scene(peak_codes: float, shape=(48, 64), seed=0) -> np.ndarray:
    """Codes above black in [0, peak_codes] (a dark capture: a few hundred; a bright one: near full)."""
    rng = np.random.default_rng(seed)
    return np.round(rng.random(shape) * peak_codes)


def _write_layout(tmp_path, layout: str, codes: np.ndarray, name: str):
    """One DP pair in ``layout`` holding ``codes`` (sensor codes above black); returns the left file."""
    folder = tmp_path / name
    folder.mkdir()
    if layout == "png":  # Xin et al.: 14-bit codes on black 1024
        for side in ("left", "right"):
            _png16(folder / f"001_{side}.png", 1024 + codes)
        return folder / "001_left.png"
    if layout == "pgm":  # capture app: 10-bit codes on black 64, scaled to 65535
        for side in ("left", "right"):
            writers.write_pgm16(folder / f"{name}_{side}.pgm", np.round((64 + codes) * 65535 / 1023).astype(np.uint16))
        return folder / f"{name}_left.pgm"
    for side in ("left", "right"):  # Garg: 10-bit codes x 16
        _png16(folder / f"raw_{side}_pd" / "c" / f"result_pd_{side}_center.png", codes * 16)
    return folder / "raw_left_pd" / "c" / "result_pd_left_center.png"


@pytest.mark.parametrize("layout,full,dark", [("png", 16383, 300), ("pgm", 959, 200), ("garg", 1023, 200)])
def test_dark_and_bright_capture_read_with_the_same_scale(tmp_path, layout, full, dark):
    caps = {}
    for name, peak in (("dark", dark), ("bright", full)):
        codes = _scene(peak)
        caps[name] = (open_capture(_write_layout(tmp_path, layout, codes, name)), codes)
    (d, _), (b, _) = caps["dark"], caps["bright"]
    for key in ("bit_depth", "black_level", "white_level", "level_sources"):
        assert d.record[key] == b.record[key], key
    for cap, codes in caps.values():  # the analytic normalisation: codes / full scale above black
        assert np.abs(cap.left - codes / full).max() < 1e-4
    assert d.left.max() == pytest.approx(dark / full, abs=1e-4)  # a dark capture stays dark


def test_pixel4_png_dark_window_from_the_issue_is_14bit_not_12bit(tmp_path):
    """A 512x512-like window of a dark scene (maximum 3176) and one reaching 4592: both 14-bit."""
    for name, top in (("a", 3176), ("b", 4592)):
        codes = _scene(top - 1024, (40, 40), seed=1)
        codes.flat[0] = top - 1024
        cap = open_capture(_write_layout(tmp_path, "png", codes, name))
        assert cap.record["bit_depth"] == 14 and cap.record["white_level"] == 17407
        assert cap.record["black_level"] == 1024
        assert cap.left.max() == pytest.approx((top - 1024) / 16383, abs=1e-6)
        assert cap.record["warnings"] == []
        assert [g.split(" ")[0] for g in cap.record["guesses"]] == ["pixel_aspect_y_over_x"]  # a 40x40 window


def test_only_the_pgm_black_level_is_a_guess_and_inspect_shows_it(tmp_path):
    from typer.testing import CliRunner

    import cli

    left = _write_layout(tmp_path, "pgm", _scene(500, (48, 64)), "cap")
    cap = open_capture(left)
    assert [g.split(" ")[0] for g in cap.record["guesses"]] == ["black_level", "pixel_aspect_y_over_x"]
    assert "SENSOR_DYNAMIC_BLACK_LEVEL" in cap.record["guesses"][0]
    assert cap.record["level_sources"]["white_level"] == "PGM header maxval 65535"
    runner = CliRunner()
    res = runner.invoke(cli.app, ["inspect", str(left)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "GUESS" in res.output and "black_level 4099.94" in res.output and "SENSOR_DYNAMIC" in res.output
    res = runner.invoke(cli.app, ["inspect", str(left), "--black-level", "4100"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "black_level 4" not in res.output
    assert "given by caller" in res.output
    # a sidecar <stem>.json gives the exact black level: no longer a guess, its source named
    (left.parent / "cap.json").write_text(json.dumps({"black_level": 4000}))
    cap = open_capture(left)
    assert cap.record["black_level"] == 4000 and cap.record["level_sources"]["black_level"] == "sidecar cap.json"
    assert not any(g.startswith("black_level") for g in cap.record["guesses"])


def test_level_overrides_validated_and_applied(tmp_path):
    from typer.testing import CliRunner

    import cli

    codes = _scene(1000, (32, 40))
    left = _write_layout(tmp_path, "png", codes, "x")
    cap = read_pixel_png(left, black_level=0, white_level=2 ** 16 - 1)
    assert np.abs(cap.left - (1024 + codes) / 65535).max() < 1e-6
    assert cap.record["level_sources"] == {"bit_depth": "Pixel 4 PNG layout: 14-bit", "black_level": "given by caller",
                                           "white_level": "given by caller"}
    cap = read_pixel_png(left, bit_depth=12)  # white = black + 2^12 - 1
    assert cap.record["white_level"] == 1024 + 4095 and "from bit depth 12" in cap.record["level_sources"]["white_level"]
    for kwargs, msg in (({"black_level": 5000, "white_level": 4000}, "must be below --white-level"),
                        ({"bit_depth": 17}, "--bit-depth must be an integer from 1 to 16"),
                        ({"white_level": 70000}, r"within \[0, 65535\]")):
        with pytest.raises(CaptureError, match=msg):
            open_capture(left, **kwargs)
    res = CliRunner().invoke(cli.app, ["inspect", str(left), "--black-level", "9", "--white-level", "8"])
    assert res.exit_code == 2 and "must be below --white-level" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli.app, ["inspect", str(tmp_path / "x"), "--bit-depth", "12"])
    assert res.exit_code == 0 and "from bit depth 12" in res.output
    _bundle(tmp_path / "b" if (tmp_path / "b").mkdir() is None else None)
    with pytest.raises(CaptureError, match="--black-level apply to Pixel and Garg"):
        open_capture(tmp_path / "b", black_level=3)


def test_a_few_values_above_white_are_clipped_with_a_warning(tmp_path):
    codes = _scene(16000, (40, 50))
    codes.flat[:5] = 16383 + 200  # 5 of 2000 values (0.25 %) above the white level
    cap = open_capture(_write_layout(tmp_path, "png", codes, "w"))
    assert cap.left.max() == 1.0
    assert len(cap.record["warnings"]) == 1 and "10 values (0.250 %, up to 17607) above the white level 17407" in \
        cap.record["warnings"][0]  # 5 per view


def test_png_with_valid_chunks_but_bad_data_keeps_libpng_quiet(tmp_path, capfd):
    import zlib

    _png16(tmp_path / "a.png", _scene(60000, (32, 40)))
    d = bytearray((tmp_path / "a.png").read_bytes())
    i = d.index(b"IDAT")
    n = int.from_bytes(d[i - 4:i], "big")
    for k in range(i + 6, i + 4 + n):
        d[k] ^= 0x5A
    d[i + 4 + n:i + 8 + n] = zlib.crc32(bytes(d[i:i + 4 + n])).to_bytes(4, "big")  # chunks stay valid
    (tmp_path / "001_left.png").write_bytes(bytes(d))
    (tmp_path / "001_right.png").write_bytes(bytes(d))
    with pytest.raises(CaptureError, match=r"001_left\.png: left DP view could not be decoded .*: libpng error: IDAT"):
        read_pixel_png(tmp_path / "001_left.png")
    assert "libpng" not in capfd.readouterr().err


# --- HEIC with a depth item (container assembled around pillow-heif's HEVC: tests/heif_fixture.py) ---

DEPTH_XMP = b"""<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:apdi="http://ns.apple.com/pixeldatainfo/1.0/" apdi:NativeFormat="1751411059"
 apdi:FloatMinValue="0.5" apdi:FloatMaxValue="3.0" apdi:IntrinsicMatrixReferenceWidth="96"
 apdi:IntrinsicMatrixReferenceHeight="64"><apdi:IntrinsicMatrix><rdf:Seq><rdf:li>80.0</rdf:li><rdf:li>0</rdf:li>
<rdf:li>0</rdf:li><rdf:li>0</rdf:li><rdf:li>80.0</rdf:li><rdf:li>0</rdf:li><rdf:li>47.5</rdf:li>
<rdf:li>31.5</rdf:li><rdf:li>1</rdf:li></rdf:Seq></apdi:IntrinsicMatrix></rdf:Description></rdf:RDF></x:xmpmeta>"""


def _rgb64():
    return (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)


def test_heic_depth_item_decoded_with_range_and_intrinsics_from_its_xmp(tmp_path):
    pytest.importorskip("pillow_heif")
    from heif_fixture import heic_with_depth

    codes = np.repeat(np.round(np.linspace(0, 255, 48))[None], 32, 0).astype(np.uint8)  # a left-right ramp
    (tmp_path / "d.heic").write_bytes(heic_with_depth(_rgb64(), codes, xmp=DEPTH_XMP))
    cap = open_capture(tmp_path / "d.heic")
    assert cap.record["depth_items"] == ["item 2 (hvc1, urn:mpeg:hevc:2015:auxid:2)"]
    assert cap.disparity.shape == (32, 48)
    assert cap.record["disparity"]["range_source"] == "XMP apdi:FloatMin/MaxValue"
    expect = 0.5 + codes / 255 * 2.5
    assert np.abs(cap.disparity - expect)[:, 2:-2].max() < 4 / 255 * 2.5  # HEVC at quality 95: a few codes
    k = cap.record["intrinsics"]["matrix"]
    assert k["source"] == "depth item calibration data (XMP apdi:IntrinsicMatrix)" and k["fx"] == 80.0
    assert cap.record["intrinsics"]["focal_px"] == {"value": 80.0, "source": k["source"]}
    assert any(s.startswith("disparity: d_min + code/255") for s in cap.processing)


@pytest.mark.parametrize("kind", [b"unci", b"hvc1"])  # uncompressed (unsupported here); HEVC without its hvcC
def test_heic_depth_item_present_but_undecodable(tmp_path, kind):
    pytest.importorskip("pillow_heif")
    from typer.testing import CliRunner

    import cli
    from heif_fixture import heic_with_depth

    (tmp_path / "u.heic").write_bytes(heic_with_depth(_rgb64(), None, depth_type=kind))
    cap = open_capture(tmp_path / "u.heic")
    assert "disparity" not in cap.arrays
    assert cap.record["disparity"].startswith(f"depth item present but cannot be decoded: item 2 of type "
                                              f"'{kind.decode()}' (urn:mpeg:hevc:2015:auxid:2)")
    res = CliRunner().invoke(cli.app, ["inspect", str(tmp_path / "u.heic")], env={"COLUMNS": "250"})
    assert res.exit_code == 0 and "depth item present but cannot be decoded" in res.output  # inspect reports, exit 0
    # in a UW+W bundle the run cannot make DC2's inputs: a clear error, exit 2
    b = tmp_path / "bundle"
    b.mkdir()
    (b / "wide.heic").write_bytes((tmp_path / "u.heic").read_bytes())
    cv2.imwrite(str(b / "ultrawide.png"), np.zeros((64, 96, 3), np.uint8))
    (b / "meta.json").write_text(json.dumps({"wide": {"fov_deg": 70}, "ultrawide": {"fov_deg": 110}}))
    bundle = read_bundle(b)
    assert any("wide.heic: depth item present but cannot be decoded" in w for w in bundle.record["warnings"])
    import torch

    from models.checkpoint import save_checkpoint
    from models.registry import get

    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "dc2-tiny.safetensors", get("dc2").build("tiny"), name="dc2", variant="tiny")
    res = CliRunner().invoke(cli.app, ["run", "--model", "dc2", "--capture", str(b), "--checkpoint", str(ck),
                                       "--out", str(tmp_path / "out")], env={"COLUMNS": "250"})
    assert res.exit_code == 2 and "needs a disparity map" in res.output
    assert "depth item present but cannot be decoded" in res.output and "Traceback" not in res.output


def test_heic_depth_item_without_a_float_range_is_reported_not_fatal(tmp_path):
    pytest.importorskip("pillow_heif")
    from heif_fixture import heic_with_depth

    codes = np.full((32, 48), 128, np.uint8)
    (tmp_path / "n.heic").write_bytes(heic_with_depth(_rgb64(), codes))  # no XMP, no representation info
    cap = open_capture(tmp_path / "n.heic")
    assert "disparity" not in cap.arrays and cap.wide.shape == (64, 96, 3)
    assert cap.record["disparity"].startswith("depth item present but cannot be decoded: depth image has no float "
                                              "range")
