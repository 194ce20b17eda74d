"""The training data readers: imagefolder (JSON lines and CSV), COCO, Flickr, bad rows, splits."""

import json

import pytest

from captioner.train.data import DatasetError, load_dataset
from shapes import make_shapes, write_metadata


@pytest.fixture
def little_set(tmp_path):
    rows = make_shapes(tmp_path / "images", 4, seed=3)
    (tmp_path / "images" / "broken.png").write_bytes(b"not an image")
    return tmp_path, rows


def test_imagefolder_jsonl_and_csv_with_several_captions_per_image(little_set):
    root, rows = little_set
    folder = root / "images"
    extra = [(rows[0][0], "another caption of the first image")]
    for kind in ("jsonl", "csv"):
        for name in ("metadata.jsonl", "metadata.csv"):
            (folder / name).unlink(missing_ok=True)
        write_metadata(folder, rows + extra, kind)
        dataset = load_dataset(folder)
        assert dataset.format == "imagefolder" and len(dataset.examples) == 5 and len(dataset.images) == 4
        assert len(dataset.references()[folder / rows[0][0]]) == 2


def test_coco_captions_json(little_set):
    root, rows = little_set
    annotations = root / "annotations"
    annotations.mkdir()
    document = {
        "images": [{"id": i, "file_name": name} for i, (name, _) in enumerate(rows)],
        "annotations": [{"id": 10 + i, "image_id": i, "caption": text} for i, (_, text) in enumerate(rows)]
        + [{"id": 99, "image_id": 0, "caption": "a second caption"}],
    }
    (annotations / "captions_val2017.json").write_text(json.dumps(document))
    dataset = load_dataset(root)
    assert dataset.format == "coco" and len(dataset.examples) == 5 and len(dataset.images) == 4


def test_flickr_token_file(little_set):
    root, rows = little_set
    lines = [f"{name}#{n}\t{text}" for name, text in rows for n in range(2)]
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    dataset = load_dataset(root)
    assert dataset.format == "flickr" and len(dataset.examples) == 8 and len(dataset.images) == 4


def test_bad_rows_are_reported_and_skipped_without_decoding_any_image(little_set, monkeypatch):
    from PIL import Image as PILImage

    root, rows = little_set
    folder = root / "images"
    bad = [("missing.png", "a caption of nothing"), ("broken.png", "a caption of garbage"), (rows[1][0], "  ")]
    write_metadata(folder, rows + bad)
    monkeypatch.setattr(PILImage, "open", lambda *a, **k: pytest.fail("an image was opened while loading"))
    dataset = load_dataset(folder)
    # The broken image is found when training reaches it (test_training_scale.py), not here.
    assert len(dataset.examples) == 5
    assert dict(dataset.skipped) == {"missing image file": 1, "empty caption": 1}
    assert "skipped 2 bad rows" in dataset.report() and len(dataset.skipped_rows) == 2


def test_unknown_layout_is_refused_clearly(tmp_path):
    with pytest.raises(DatasetError, match="metadata.jsonl"):
        load_dataset(tmp_path)


def test_split_keeps_each_images_captions_together(little_set):
    root, rows = little_set
    write_metadata(root / "images", rows + [(rows[0][0], "x y z"), (rows[2][0], "z y x")])
    train_part, validation = load_dataset(root / "images").split(0.25, seed=0)
    assert validation.examples and not set(train_part.images) & set(validation.images)
