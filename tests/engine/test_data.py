from PIL import Image

from transferapp.engine.data import Sample, folder_samples, load_rgb, stratified_split


def _samples(counts):
    return [Sample(f"/x/{c}_{i}.png", c, f"{c}_{i}") for c, n in enumerate(counts) for i in range(n)]


def test_split_is_deterministic_and_keeps_every_class_in_val():
    samples = _samples([10, 2, 5, 1])
    a, b = stratified_split(samples, 0.2, seed=0), stratified_split(list(reversed(samples)), 0.2, seed=0)
    assert a == b
    train, val = a
    assert {s.label for s in val} == {0, 1, 2}  # the one-image class stays in train
    assert {s.label for s in train} == {0, 1, 2, 3}
    assert len(train) + len(val) == len(samples)
    assert stratified_split(samples, 0.2, seed=1) != a


def test_folder_samples_reads_class_folders_and_skips_junk(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / cls / "a.png")
    (tmp_path / "cat" / ".hidden.png").write_bytes(b"x")
    (tmp_path / "cat" / "notes.txt").write_text("x")
    classes, train, val = folder_samples(tmp_path)
    assert classes == ["cat", "dog"] and val is None
    assert [s.key for s in train] == ["cat/a.png", "dog/a.png"]


def test_folder_samples_uses_a_given_train_and_val_split(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(tmp_path / split / cls / "x.jpg")
    classes, train, val = folder_samples(tmp_path)
    assert classes == ["a", "b"] and len(train) == 2 and len(val) == 2
    assert all("/val/" in s.path for s in val)


def test_load_rgb_converts_any_mode_and_applies_exif_orientation(tmp_path):
    Image.new("RGBA", (10, 4), (255, 0, 0, 0)).save(tmp_path / "alpha.png")
    Image.new("L", (10, 4)).save(tmp_path / "grey.png")
    img = Image.new("RGB", (10, 4))
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90": the stored landscape pixels are shown as portrait
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(tmp_path / "alpha.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert load_rgb(tmp_path / "grey.png").mode == "RGB"
    assert load_rgb(tmp_path / "rotated.jpg").size == (4, 10)
