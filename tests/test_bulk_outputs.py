"""Collections' other outputs: caption files beside the images, the imagefolder metadata files,
and Parquet datasets in and out."""

import pyarrow as pa
import pyarrow.parquet as pq

from captioner.cli import main
from captioner.quality import caption_flags
from helpers import caption_rows, dataset_file, expected_captions, photo


def test_sidecars_keep_a_persons_caption_and_join_prefix_exactly(captioner, tiny_checkpoint, folder, tmp_path):
    human = folder / "p1.txt"
    human.write_text("my own words\n", encoding="utf-8")
    args = ["caption", "--model", str(tiny_checkpoint), "--sidecar", ".txt", "--prefix", "sks, ", "--suffix", "!"]
    assert main([*args, str(folder / "p0.jpg"), str(folder / "p1.jpg"), str(folder / "p2.jpg")]) == 0
    expected = expected_captions(captioner, [folder / "p0.jpg", folder / "p2.jpg"])
    assert (folder / "p0.txt").read_text(encoding="utf-8") == f"sks, {expected[0]}!\n"
    assert (folder / "p2.txt").read_text(encoding="utf-8") == f"sks, {expected[1]}!\n"
    assert human.read_text(encoding="utf-8") == "my own words\n"  # skip is the default
    (folder / "p2.txt").write_text("edited by hand\n", encoding="utf-8")
    assert main([*args, "--existing", "append", str(folder / "p1.jpg")]) == 0
    caption_p1 = expected_captions(captioner, [folder / "p1.jpg"])[0]
    assert human.read_text(encoding="utf-8") == f"my own words sks, {caption_p1}!\n"
    assert main([*args, "--existing", "prepend", str(folder / "p2.jpg")]) == 0
    assert (folder / "p2.txt").read_text(encoding="utf-8") == f"sks, {expected[1]}! edited by hand\n"
    assert main([*args, "--existing", "overwrite", str(folder / "p2.jpg")]) == 0
    assert (folder / "p2.txt").read_text(encoding="utf-8") == f"sks, {expected[1]}!\n"
    assert not list(folder.rglob(".*.partial"))


def test_sidecars_under_output_dir_mirror_the_tree(tiny_checkpoint, folder, tmp_path):
    target = tmp_path / "captions"
    assert main(["caption", "--model", str(tiny_checkpoint), "--sidecar", "caption", "--output-dir", str(target),
                 str(folder)]) == 1
    written = sorted(p.relative_to(target).as_posix() for p in target.rglob("*.caption"))
    assert written == ["nested/q.caption", "p0.caption", "p1.caption", "p2.caption", "p3.caption", "p4.caption"]
    assert not list(folder.rglob("*.caption"))


def test_sidecar_collisions_and_image_extensions_are_refused(tiny_checkpoint, folder, capsys):
    photo(1).save(folder / "p0.png")  # p0.jpg and p0.png would share p0.txt
    assert main(["caption", "--model", str(tiny_checkpoint), "--sidecar", ".txt", str(folder)]) == 2
    assert "would both write" in capsys.readouterr().err and not (folder / "p0.txt").exists()
    assert main(["caption", "--model", str(tiny_checkpoint), "--sidecar", ".jpg", str(folder)]) == 2
    assert "would overwrite images" in capsys.readouterr().err


def test_metadata_jsonl_loads_as_an_imagefolder_and_trains(tiny_checkpoint, folder, tmp_path, capsys):
    import datasets

    (folder / "nested" / "broken.jpg").unlink()
    (folder / "empty.png").unlink()
    (folder / "cut.jpg").unlink()
    metadata = folder / "metadata.jsonl"
    assert main(["caption", "--model", str(tiny_checkpoint), "--output", str(metadata), str(folder)]) == 0
    rows = caption_rows(metadata)
    assert sorted(r["file_name"] for r in rows) == ["nested/q.png", "p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "p4.jpg"]
    loaded = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    assert len(loaded) == 6 and set(loaded["text"]) == {r["text"] for r in rows}
    assert loaded[0]["image"].size == (64, 48)
    output = tmp_path / "tuned"
    capsys.readouterr()
    code = main(["train", "--data", str(folder), "--output", str(output), "--model", str(tiny_checkpoint),
                 "--epochs", "1", "--batch-size", "2", "--workers", "0"])
    err = capsys.readouterr().err
    assert code == 0, err[-3000:]
    assert "6 captions of 6 images (imagefolder)" in err and (output / "config.json").is_file()


def test_metadata_file_must_sit_above_every_image(tiny_checkpoint, folder, capsys):
    metadata = folder / "nested" / "metadata.jsonl"
    assert main(["caption", "--model", str(tiny_checkpoint), "--output", str(metadata), str(folder)]) == 2
    assert "must sit in a folder that holds every image" in capsys.readouterr().err and not metadata.exists()


def test_parquet_dataset_in_parquet_out_with_a_caption_column(captioner, tiny_checkpoint, tmp_path):
    source = dataset_file(tmp_path / "train-00000.parquet")
    out = tmp_path / "captioned.parquet"
    code = main(["caption", "--model", str(tiny_checkpoint), "--dataset", str(source), "--output", str(out),
                 "--batch-size", "2"])
    assert code == 1
    table = pq.read_table(out)
    assert table.column_names == ["id", "image", "caption", "caption_error", "caption_flags"]
    assert table.column("id").to_pylist() == list(range(100, 107))
    assert table.column("image").to_pylist() == pq.read_table(source).column("image").to_pylist()
    good = [i for i in range(7) if i != 3]
    expected = [c[0].text for c in captioner.caption([photo(i) for i in good])]
    captions = table.column("caption").to_pylist()
    assert [captions[i] for i in good] == expected and captions[3] is None
    assert "not a supported image" in table.column("caption_error").to_pylist()[3]
    flags = table.column("caption_flags").to_pylist()
    assert flags[3] == ["error"] and [flags[i] for i in good] == [caption_flags(c) for c in expected]


def test_parquet_dataset_of_paths_and_a_missing_image_column(tiny_checkpoint, tmp_path, capsys):
    for i in range(2):
        photo(i).save(tmp_path / f"{i}.png")
    source = tmp_path / "data.parquet"
    pq.write_table(pa.table({"file": ["0.png", "1.png"]}), source)
    args = ["caption", "--model", str(tiny_checkpoint), "--dataset", str(source), "--output", str(tmp_path / "o.parquet")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no column 'image'" in err and "--image-column" in err
    assert main([*args, "--image-column", "file"]) == 0
    assert len(pq.read_table(tmp_path / "o.parquet").column("caption").drop_null()) == 2


def test_parquet_output_for_files_resumes_to_add_new_images(tiny_checkpoint, folder, tmp_path):
    out = tmp_path / "captions.parquet"
    args = ["caption", "--model", str(tiny_checkpoint), "--output", str(out), str(folder)]
    assert main(args) == 1
    first = pq.read_table(out).column("path").to_pylist()
    photo(40).save(folder / "z_new.jpg")
    assert main([*args, "--resume"]) == 0  # only the new image was captioned, and it is fine
    paths = pq.read_table(out).column("path").to_pylist()
    assert paths == first + [str(folder / "z_new.jpg")]


def test_csv_rows_carry_the_flags_and_an_older_csv_is_not_resumed_under_them(tiny_checkpoint, folder, tmp_path, capsys):
    import csv

    out = tmp_path / "rows.csv"
    assert main(["caption", "--model", str(tiny_checkpoint), "--output", str(out), str(folder)]) == 1
    with out.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "caption", "error", "flags"]
    for row in rows:
        expected = ["error"] if row["error"] else caption_flags(row["caption"])
        assert row["flags"] == " | ".join(expected), row
    older = tmp_path / "older.csv"
    older.write_text("path,caption,error\nx.jpg,a cat,\n", encoding="utf-8")
    assert main(["caption", "--model", str(tiny_checkpoint), "--output", str(older), "--resume", str(folder)]) == 2
    assert "has the columns 'path,caption,error'" in capsys.readouterr().err
    assert older.read_text(encoding="utf-8") == "path,caption,error\nx.jpg,a cat,\n"  # untouched
