"""Fine-tuning at dataset scale: Parquet and Hub-layout datasets read lazily, undecodable images
skipped during training and named, several processes under torchrun (gloo on loopback), curves."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from captioner import Captioner
from captioner.cli import main
from captioner.train.data import load_dataset
from helpers import SRC, encode, free_port, photo, scores_without_java

CAPTIONS = ["a red square", "a blue circle", "a green triangle", "a small red circle"]


def assert_trained_and_saved(output: Path, start: Path) -> None:
    """The saved model is the last checkpoint's weights, training changed them, and the app's loader
    captions with what was saved (its tokenizer and image processor too)."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(output / "model.safetensors")
    last = max((output / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    checkpointed, before = load_file(last / "model.safetensors"), load_file(Path(start) / "model.safetensors")
    assert saved.keys() == checkpointed.keys() and all(torch.equal(saved[k], checkpointed[k]) for k in saved)
    assert any(not torch.equal(saved[k], before[k]) for k in saved.keys() & before.keys())
    captions = Captioner.from_pretrained(output).caption([photo(1, size=(32, 32)), photo(2, size=(32, 32))])
    assert [len(c) for c in captions] == [1, 1] and all(isinstance(c[0].text, str) for c in captions)


def write_parquet(path, count=12, corrupt=(3, 8)):
    images, texts = [], []
    for i in range(count):
        data = b"\x89PNG but cut short" if i in corrupt else encode(photo(i, size=(32, 32)))
        images.append({"bytes": data, "path": f"img{i:02d}.png"})
        texts.append(CAPTIONS[i % len(CAPTIONS)])
    # A second caption for the first image: same path, another row.
    images.append(dict(images[0]))
    texts.append("another caption of the first image")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"image": images, "text": texts}), path, row_group_size=5)
    return path


def test_parquet_rows_are_read_lazily_grouped_by_image(tmp_path, monkeypatch):
    source = write_parquet(tmp_path / "data" / "train-00000-of-00001.parquet")
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("an image was decoded while loading"))
    dataset = load_dataset(source.parent)
    assert dataset.format == "parquet" and len(dataset.examples) == 13 and len(dataset.images) == 12
    assert len(dataset.references()[dataset.examples[0].image]) == 2
    with pytest.raises(Exception, match="no column 'caption'"):
        load_dataset(source, text_column="caption")


def test_hub_id_loads_through_datasets_with_a_local_stand_in(tmp_path):
    import datasets

    repo = tmp_path / "user--captions"
    (repo / "data").mkdir(parents=True)
    table = datasets.Dataset.from_dict(
        {"image": [{"bytes": encode(photo(i, size=(32, 32))), "path": f"{i}.png"} for i in range(4)],
         "caption": CAPTIONS}, features=datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string")}))
    table.to_parquet(str(repo / "data" / "train-00000-of-00001.parquet"))
    # load_dataset("hf://datasets/NAME") hands NAME to datasets.load_dataset, which reads a Hub id or,
    # as here (no network), a folder laid out like a Hub dataset repository.
    dataset = load_dataset(f"hf://datasets/{repo}", text_column="caption", split="train")
    assert dataset.format == "hub" and [e.caption for e in dataset.examples] == CAPTIONS
    assert dataset.examples[2].image.load() == encode(photo(2, size=(32, 32)))


def test_training_on_parquet_skips_undecodable_images_and_draws_curves(tiny_checkpoint, tmp_path, capsys):
    source = write_parquet(tmp_path / "train.parquet")
    output = tmp_path / "tuned"
    code = main(["train", "--data", str(source), "--output", str(output), "--model", str(tiny_checkpoint),
                 "--epochs", "2", "--batch-size", "2", "--validation-share", "0.2", "--workers", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["skipped_images"] == 2 and "images that could not be decoded" in err
    assert sorted(line.split(":")[0] for line in summary["first_skipped"]) == ["img03.png", "img08.png"]
    # The curves: the plotted series are the Trainer's own log history.
    png = output / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(png).size[0] > 500
    plotted = json.loads((output / "training_curves.json").read_text())
    checkpoint = max((output / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    assert len(plotted["train"]) == sum("loss" in h for h in history) >= 2
    assert len(plotted["validation"]) == sum("eval_loss" in h for h in history) == 2
    assert [round(v[1], 6) for v in plotted["validation"]] == [round(v["loss"], 6) for v in summary["validation"]]
    assert_trained_and_saved(output, tiny_checkpoint)


def test_evaluate_takes_the_same_parquet_and_leaves_out_undecodable_images(tiny_checkpoint, tmp_path, capsys,
                                                                           monkeypatch):
    scores_without_java(monkeypatch)  # what is tested is the data
    source = write_parquet(tmp_path / "test.parquet", corrupt=(3,))
    code = main(["evaluate", "--data", str(source), "--model", str(tiny_checkpoint), "--json",
                 "--output", str(tmp_path / "eval.csv")])
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["images"] == 11 and set(result["metrics"]) >= {"BLEU-4", "CIDEr"}
    assert result["skipped_images"] == 1 and result["first_skipped"][0].startswith("img03.png: ")
    assert "left out 1 images that could not be decoded" in err
    with (tmp_path / "eval.csv").open(newline="") as handle:
        assert len(list(csv.reader(handle))) == 12  # a header and one row per image


def test_vizwiz_rejected_and_precanned_captions_are_left_out(tmp_path):
    photo(1).save(tmp_path / "VizWiz_val_0001.jpg")
    document = {"images": [{"id": 1, "file_name": "VizWiz_val_0001.jpg"}], "annotations": [
        {"id": 1, "image_id": 1, "caption": "a can of soup on a table", "is_rejected": False, "is_precanned": False},
        {"id": 2, "image_id": 1, "caption": "Quality issues are too severe", "is_rejected": False, "is_precanned": True},
        {"id": 3, "image_id": 1, "caption": "blurry", "is_rejected": True, "is_precanned": False}]}
    (tmp_path / "captions_val.json").write_text(json.dumps(document))
    assert [e.caption for e in load_dataset(tmp_path).examples] == ["a can of soup on a table"]


def test_textcaps_json_gives_one_example_per_caption(tmp_path):
    (tmp_path / "train_images").mkdir()
    photo(1).save(tmp_path / "train_images" / "011e7e629fb9ae7b.jpg")
    entries = [{"image_id": "011e7e629fb9ae7b", "image_name": "011e7e629fb9ae7b",
                "image_path": "train/011e7e629fb9ae7b.jpg", "caption_str": caption}
               for caption in ("a sign that says open", "a red sign reading open")]
    entries.append({"image_name": "not_downloaded", "image_path": "train/not_downloaded.jpg", "caption_str": "x"})
    (tmp_path / "TextCaps_0.1_train.json").write_text(json.dumps({"dataset_name": "textcaps", "data": entries}))
    dataset = load_dataset(tmp_path)
    assert [e.caption for e in dataset.examples] == ["a sign that says open", "a red sign reading open"]
    assert dataset.examples[0].image == tmp_path / "train_images" / "011e7e629fb9ae7b.jpg"
    assert dataset.skipped["missing image file"] == 1


LAUNCHERS = {
    "torchrun": ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                 "--master_port", "{port}"],
    # --multi_gpu is accelerate's torch.distributed launcher; without GPUs its processes use gloo.
    "accelerate": ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                   "--main_process_ip", "127.0.0.1", "--main_process_port", "{port}"],
}


@pytest.fixture(scope="module")
def numeric_names(tmp_path_factory):
    """A preload that keeps torch's peer naming off the DNS server (numeric_names.c says why)."""
    library = tmp_path_factory.mktemp("preload") / "numeric_names.so"
    source = Path(__file__).with_name("numeric_names.c")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"], check=True)
    return str(library)


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_two_processes_train_one_model_with_one_summary(launcher, tiny_checkpoint, numeric_names, tmp_path):
    source = write_parquet(tmp_path / "train.parquet", count=16, corrupt=(5,))
    output = tmp_path / "tuned"
    # gloo on CPU; every address on loopback (GLOO_SOCKET_IFNAME, the rendezvous on 127.0.0.1).
    env = {**os.environ, "PYTHONPATH": SRC, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
           "LD_PRELOAD": numeric_names}
    port = str(free_port())
    command = [sys.executable, *(a.format(port=port) for a in LAUNCHERS[launcher]), "-m", "captioner", "train",
               "--data", str(source), "--output", str(output), "--model", str(tiny_checkpoint), "--epochs", "2",
               "--batch-size", "2", "--workers", "0"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    summaries = done.stdout.splitlines()  # the Trainer's log lines go to stderr: stdout is the summary
    assert len(summaries) == 1, done.stdout
    summary = json.loads(summaries[0])
    assert done.stderr.count("epoch 1: validation loss") == 1 and done.stderr.count("epoch 2: validation loss") == 1
    assert summary["processes"] == 2 and summary["skipped_images"] == 1
    assert done.stderr.count("saved to") == 1 and done.stderr.count("curves in") == 1
    assert (output / "training_curves.png").is_file()
    assert summary["train_examples"] + summary["validation_examples"] == 17  # 16 rows + a second caption
    assert_trained_and_saved(output, tiny_checkpoint)


def test_report_to_without_its_package_is_one_line_with_exit_2(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not installed, whatever this machine has
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    source = write_parquet(tmp_path / "train.parquet")
    code = main(["train", "--data", str(source), "--output", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
                 "--epochs", "1", "--report-to", "tensorboard", "--workers", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == "error: --report-to tensorboard needs its package: pip install tensorboard"


def test_a_parquet_image_given_by_path_only_is_found_beside_the_parquet_file(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    photo(1).save(data / "img.png")
    pq.write_table(pa.table({"image": [{"bytes": None, "path": "img.png"}], "text": ["a photo"]}),
                   data / "train.parquet")
    monkeypatch.chdir(tmp_path)  # not the Parquet file's folder
    image = load_dataset(data).examples[0].image
    assert image.load() == str(data / "img.png")
