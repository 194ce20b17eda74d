import csv
import json
from pathlib import Path

import pytest

from captioner.cli import main
from captioner.quality import caption_flags
from helpers import photo, run_cli
from reference import ModelCardReference


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "nested").mkdir()
    photo(1).save(tmp_path / "a.jpg")
    photo(2).save(tmp_path / "nested" / "b.png")
    (tmp_path / "nested" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    return tmp_path


def test_json_caption_equals_model_card_code(tiny_checkpoint, tmp_path):
    image = photo(7)
    image.save(tmp_path / "img.png")
    result = run_cli("caption", "--json", str(tmp_path / "img.png"), env={"CAPTIONER_MODEL": str(tiny_checkpoint)})
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.strip())
    expected = ModelCardReference(tiny_checkpoint).predict([image])[0]
    assert row == {"path": str(tmp_path / "img.png"), "caption": expected, "flags": caption_flags(expected)}


def test_default_model_offline_fails_with_one_line(tmp_path):
    photo(1).save(tmp_path / "img.jpg")
    result = run_cli("caption", str(tmp_path / "img.jpg"), env={"CAPTIONER_MODEL": ""})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nlpconnect/vit-gpt2-image-captioning" in lines[0] and "CAPTIONER_MODEL" in lines[0]


def test_folder_with_a_broken_file(tiny_checkpoint, folder, capsys):
    code = main(["caption", "--json", "--model", str(tiny_checkpoint), str(folder)])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [Path(r["path"]).name for r in rows] == ["a.jpg", "b.png", "broken.jpg"]
    assert "caption" in rows[0] and "caption" in rows[1]
    assert "not a supported image" in rows[2]["error"]


def test_output_files_and_several_captions(tiny_checkpoint, folder, tmp_path, capsys):
    jsonl, table = tmp_path / "out.jsonl", tmp_path / "out.csv"
    args = ["caption", "--model", str(tiny_checkpoint), "--num-captions", "2", str(folder / "a.jpg")]
    assert main([*args, "--output", str(jsonl)]) == 0
    row = json.loads(jsonl.read_text())
    assert len(row["captions"]) == 2 and len(row["scores"]) == 2
    assert main([*args, "--output", str(table)]) == 0
    assert list(csv.DictReader(table.open()))[0]["path"].endswith("a.jpg")


def test_settings_flags_are_validated(tiny_checkpoint, folder, capsys):
    assert main(["caption", "--model", str(tiny_checkpoint), "--num-beams", "1000", str(folder / "a.jpg")]) == 2
    assert capsys.readouterr().err == ("python -m captioner caption: error: argument --num-beams: must be an integer "
                                       "from 1 to 8; got 1000 (see --help)\n")
    # Settings that are each in range but not together are refused before the model loads, too.
    assert main(["caption", "--model", str(tiny_checkpoint), "--num-beams", "2", "--num-captions", "3",
                 str(folder / "a.jpg")]) == 2
    assert capsys.readouterr().err == "error: num_captions (3) cannot exceed num_beams (2) with beam search\n"


def test_flags_change_the_caption(tiny_checkpoint, folder, capsys):
    main(["caption", "--json", "--model", str(tiny_checkpoint), "--strategy", "greedy", "--max-length", "5", str(folder / "a.jpg")])
    greedy = json.loads(capsys.readouterr().out)["caption"]
    main(["caption", "--json", "--model", str(tiny_checkpoint), str(folder / "a.jpg")])
    beam = json.loads(capsys.readouterr().out)["caption"]
    assert greedy != beam and len(greedy) < len(beam)
