import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _engine(*args) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "transferapp.engine", "--threads", "2", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def test_cli_trains_then_predicts_json_lines(shapes_dir, tmp_path):
    (trained,) = _engine("train", str(shapes_dir), "--out", str(tmp_path / "art"), "--preset", "fast",
                         "--image-size", "64")
    assert {"accuracy", "n_train", "n_val", "classes", "seconds"} <= set(trained)
    assert trained["n_train"] + trained["n_val"] == 18
    images = sorted(str(p) for p in shapes_dir.rglob("*.png"))[:2]
    predictions = _engine("predict", str(tmp_path / "art"), *images)
    assert len(predictions) == 2
    for p in predictions:
        assert p["top"] in trained["classes"] and set(p["probabilities"]) == set(trained["classes"])
        assert abs(sum(p["probabilities"].values()) - 1) < 1e-4
        assert p["seen_in_training"] is True  # every image trained the model (the retrain on all of them)
    from .conftest import draw_shape
    draw_shape("red_circle", seed=99_999).save(tmp_path / "new.png")
    (new,) = _engine("predict", str(tmp_path / "art"), str(tmp_path / "new.png"))
    assert new["seen_in_training"] is False


def test_cli_reports_grade_figures_for_ordered_classes_only(shapes_dir, tmp_path):
    order = "red_circle,blue_triangle,green_square"
    (graded,) = _engine("train", str(shapes_dir), "--out", str(tmp_path / "g"), "--preset", "fast",
                        "--image-size", "64", "--class-order", order)
    assert graded["classes"] == order.split(",")
    assert graded["mean_abs_grade_error"]["n"] == graded["n_scored"]
    assert {"value", "k", "n", "ci"} <= set(graded["within_one_grade"])
    assert [p["phase"] for p in graded["phases"]] == ["features", "head", "final"]
    (plain,) = _engine("train", str(shapes_dir), "--out", str(tmp_path / "p"), "--preset", "fast",
                       "--image-size", "64", "--cache-dir", str(tmp_path / "cache"))
    assert "within_one_grade" not in plain and "mean_abs_grade_error" not in plain


def test_cli_reports_an_unknown_base_without_a_traceback(shapes_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "transferapp.engine", "train", str(shapes_dir), "--out",
                           str(tmp_path), "--base", "vgg99"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 2 and "Valid names" in done.stderr and "Traceback" not in done.stderr


def test_cli_trains_on_and_predicts_dicom_files_with_or_without_an_extension(tmp_path):
    from pydicom.data import get_testdata_file

    sources = {"ct": "CT_small.dcm", "mr": "MR_small.dcm"}
    for label, name in sources.items():
        (tmp_path / "data" / label).mkdir(parents=True)
        data = Path(get_testdata_file(name, download=False)).read_bytes()
        for i in range(4):
            (tmp_path / "data" / label / (f"IM{i:06d}" if i % 2 else f"slice{i}.dcm")).write_bytes(data)
    (trained,) = _engine("train", str(tmp_path / "data"), "--out", str(tmp_path / "art"), "--preset", "fast",
                         "--image-size", "64")
    assert trained["n_train"] + trained["n_val"] == 8
    (prediction,) = _engine("predict", str(tmp_path / "art"), str(tmp_path / "data" / "mr" / "IM000001"))
    assert prediction["top"] == "mr"


def _run(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "transferapp.engine", "--threads", "2", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_predict_accepts_the_downloaded_zip_its_outer_folder_and_a_folder_of_images(shapes_dir, tmp_path):
    import shutil
    import zipfile

    _engine("train", str(shapes_dir), "--out", str(tmp_path / "art"), "--preset", "fast", "--image-size", "64")
    outer = tmp_path / "unzipped"  # what unzipping the app's download gives: one model folder inside
    shutil.copytree(tmp_path / "art", outer / "shapes-run-1")
    archive = tmp_path / "shapes-run-1.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in (outer / "shapes-run-1").iterdir():
            out.write(path, arcname=f"shapes-run-1/{path.name}")
    folder = shapes_dir / "red_circle"
    n_images = len(list(folder.glob("*.png")))
    for model in (archive, outer, outer / "shapes-run-1"):
        results = _engine("predict", str(model), str(folder))
        assert len(results) == n_images and all(r["path"].endswith(".png") for r in results)


def test_predict_answers_a_wrong_path_with_one_plain_line(shapes_dir, tmp_path):
    image = str(next(shapes_dir.rglob("*.png")))
    for args in (("predict", str(tmp_path / "missing"), image), ("predict", image, image),
                 ("predict", str(shapes_dir), image)):
        done = _run(*args)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error:")


def test_help_describes_every_argument():
    import argparse

    from transferapp.engine.cli import _parser

    parser = _parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in {"": parser, **commands.choices}.items():
        undocumented = [a.dest for a in sub._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
        assert not undocumented, f"{name or 'engine'}: no help for {undocumented}"
    assert _run("predict", "--help").stdout.count("zip") >= 1


def test_predict_expands_a_folder_to_its_dicom_files_too(tmp_path):
    from pydicom.data import get_testdata_file

    from transferapp.engine.cli import _image_paths

    folder = tmp_path / "scans"
    folder.mkdir()
    data = Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes()
    (folder / "IM000001").write_bytes(data)  # a DICOM export without an extension
    (folder / "slice.dcm").write_bytes(data)
    (folder / "notes.txt").write_text("not an image")
    assert sorted(p.name for p in _image_paths([str(folder)])) == ["IM000001", "slice.dcm"]


def test_a_group_pattern_that_is_not_a_regular_expression_gets_one_line(shapes_dir, tmp_path):
    done = subprocess.run([sys.executable, "-m", "transferapp.engine", "train", str(shapes_dir), "--out",
                           str(tmp_path / "art"), "--group-pattern", "(["], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is not a regular expression" in done.stderr


def test_predict_answers_an_unreadable_image_in_a_folder_with_its_reason_and_predicts_the_rest(shapes_dir, tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    _engine("train", str(shapes_dir), "--out", str(tmp_path / "art"), "--preset", "fast", "--image-size", "64")
    folder = tmp_path / "to-predict"
    folder.mkdir()
    good = next(shapes_dir.rglob("*.png"))
    (folder / "good.png").write_bytes(good.read_bytes())
    (folder / "broken.png").write_bytes(good.read_bytes()[:60])  # truncated
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm", download=False))
    ds.NumberOfFrames, ds.PixelData = 2, ds.PixelData * 2  # a cine loop: refused, with why
    ds.save_as(folder / "series.dcm", enforce_file_format=True)
    done = _run("predict", str(tmp_path / "art"), str(folder))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    lines = {Path(r["path"]).name: r for r in map(json.loads, done.stdout.splitlines())}
    assert set(lines) == {"good.png", "broken.png", "series.dcm"}
    assert "top" in lines["good.png"] and "error" not in lines["good.png"]
    assert "2 frames" in lines["series.dcm"]["error"] and "corrupt" in lines["broken.png"]["error"]
