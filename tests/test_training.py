"""Fine-tuning and evaluation end to end, on a synthetic shapes dataset the tests draw themselves."""

import csv
import json
import random

import pytest
from gradio_client import handle_file

from captioner import Captioner, CaptionSettings
from captioner.engine.random_models import build_image_processor, build_random_model, build_tokenizer
from captioner.train.data import load_dataset
from captioner.train.evaluation import evaluate
from captioner.train.training import TrainConfig, stage_for_epoch, train, trainable_parts
from helpers import RunningApp, run_cli, scores_without_java
from shapes import WORDS, draw, make_shapes, names_right_thing, write_metadata

@pytest.fixture(scope="module")
def shapes_base(tmp_path_factory):
    """A small untrained ViT-GPT2 whose tokenizer knows the grammar's words."""
    from transformers import GPT2Config, ViTConfig, VisionEncoderDecoderConfig, VisionEncoderDecoderModel

    directory = tmp_path_factory.mktemp("shapes-base")
    tokenizer = build_tokenizer("tiny", corpus=[WORDS])
    model = build_random_model(tokenizer, "tiny", seed=0, image_size=32)
    # Narrow initial weights train better than the tiny checkpoint's wide ones. The 64-pixel drawings
    # are read at 32 pixels (16 patches): shape and colour still show, at a quarter of the encoder's work.
    encoder = ViTConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128)
    decoder = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=64, n_layer=2, n_head=4,
                         add_cross_attention=True, bos_token_id=tokenizer.eos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    for key in ("decoder_start_token_id", "pad_token_id", "eos_token_id"):
        setattr(config, key, tokenizer.eos_token_id)
    model = VisionEncoderDecoderModel(config)
    model.generation_config = type(model.generation_config)(
        decoder_start_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id, max_length=16, num_beams=4,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    build_image_processor(32).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    train_rows = make_shapes(root / "train", 2400, seed=1)
    write_metadata(root / "train", train_rows)
    test_rows = make_shapes(root / "test", 24, seed=2)
    write_metadata(root / "test", test_rows, kind="csv")
    return root


@pytest.fixture(scope="module")
def fine_tuned(shapes_base, shapes_data, tmp_path_factory):
    """Trained as a person trains it: the command, in a process of its own. (In this test process,
    the OpenMP teams earlier tests left behind would put torch's threads to sleep between the
    training's thousands of small kernels, engine/model_thread.py says why, doubling its time.)
    A model this small trains faster on one thread, with a loader process decoding the images
    on the other core."""
    output = tmp_path_factory.mktemp("fine-tuned")
    done = run_cli("train", "--data", str(shapes_data / "train"), "--output", str(output), "--model", str(shapes_base),
                   "--epochs", "20", "--batch-size", "16", "--learning-rate", "2e-3", "--validation-share", "0.1",
                   "--seed", "0", "--workers", "1", env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return output, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_fine_tuning_learns_the_synthetic_captions(shapes_base, shapes_data, fine_tuned, monkeypatch):
    output, summary = fine_tuned
    scores_without_java(monkeypatch)  # BLEU is enough
    assert summary["validation"] and summary["validation"][-1]["loss"] < summary["validation"][0]["loss"]
    test = load_dataset(shapes_data / "test")
    greedy = CaptionSettings(strategy="greedy")
    before = evaluate(Captioner.from_pretrained(shapes_base), test, greedy)
    after = evaluate(Captioner.from_pretrained(output), test, greedy, csv_path=output / "eval.csv")
    references = {k: v[0] for k, v in test.references().items()}
    right_after = sum(names_right_thing(after["predictions"][str(k)], r) for k, r in references.items())
    right_before = sum(names_right_thing(before["predictions"][str(k)], r) for k, r in references.items())
    sample = list(after["predictions"].values())[:6]
    # Colour is learned first, shape later: the bound wants both for most held-out images, which the
    # fixture's 2,700 optimizer steps give on every training seed tried (fewer steps do not).
    assert right_after >= 0.8 * len(references) and right_before <= 0.2 * len(references), (right_after, sample)
    assert after["metrics"]["BLEU-4"] > 0.8 > before["metrics"]["BLEU-4"] + 0.5, (after["metrics"], before["metrics"])
    rows = list(csv.DictReader((output / "eval.csv").open()))
    assert len(rows) == len(references) and all(r["references"] for r in rows)


@pytest.mark.slow
def test_the_app_serves_the_fine_tuned_checkpoint(fine_tuned, shapes_data, tmp_path, monkeypatch):
    output, _ = fine_tuned
    monkeypatch.setenv("CAPTIONER_MODEL", str(output))  # what a fork's Space would set
    captioner = Captioner.from_pretrained(output)
    app = RunningApp(captioner)
    try:
        client = app.client()
        for colour, shape, background in [("blue", "square", "white"), ("yellow", "triangle", "black")]:
            image = tmp_path / f"held-out-{shape}.png"
            draw(colour, shape, background, random.Random(7)).save(image)  # not in the training draw
            caption = client.predict(handle_file(str(image)), api_name="/caption")
            assert caption == f"a {colour} {shape} on a {background} background"
            assert caption == captioner.caption([image])[0][0].text  # the same code as the core
    finally:
        app.close()


def test_staged_unfreezing_thaws_cross_attention_then_decoder_then_all(shapes_base):
    from transformers import VisionEncoderDecoderModel

    model = VisionEncoderDecoderModel.from_pretrained(shapes_base)
    assert [stage_for_epoch(e, 6) for e in range(6)] == ["cross-attention"] * 2 + ["decoder"] * 2 + ["all"] * 2
    trainable_parts(model, "cross-attention")
    thawed = {n for n, p in model.named_parameters() if p.requires_grad}
    assert thawed and all("crossattention" in n or "ln_cross_attn" in n for n in thawed)
    trainable_parts(model, "decoder")
    thawed = {n for n, p in model.named_parameters() if p.requires_grad}
    assert thawed == {n for n, _ in model.named_parameters() if n.startswith("decoder.")}
    trainable_parts(model, "all")
    assert all(p.requires_grad for p in model.parameters())


# --- the command line, two pretrained halves, accumulation, resume ---

@pytest.fixture(scope="module")
def small_shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("small-shapes")
    write_metadata(root / "train", make_shapes(root / "train", 40, seed=4))
    write_metadata(root / "test", make_shapes(root / "test", 6, seed=5))
    return root


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    """A pretrained-style ViT encoder (with its image processor) and GPT-2 LM (with its tokenizer)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel

    root = tmp_path_factory.mktemp("halves")
    tokenizer = build_tokenizer("tiny", corpus=[WORDS])
    torch.manual_seed(0)
    vit = ViTConfig(image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64)
    ViTModel(vit, add_pooling_layer=False).save_pretrained(root / "encoder")
    build_image_processor(64).save_pretrained(root / "encoder")
    gpt2 = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                      bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(gpt2).save_pretrained(root / "decoder")
    tokenizer.save_pretrained(root / "decoder")
    return root / "encoder", root / "decoder"


def last_trainer_state(output) -> dict:
    checkpoints = sorted((output / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return json.loads((checkpoints[-1] / "trainer_state.json").read_text())


@pytest.mark.slow
def test_cli_trains_two_pretrained_halves_with_accumulation_then_evaluates(halves, small_shapes, tmp_path):
    from transformers import VisionEncoderDecoderModel

    encoder, decoder = halves
    output = tmp_path / "model"
    result = run_cli("train", "--data", str(small_shapes / "train"), "--output", str(output),
                     "--encoder", str(encoder), "--decoder", str(decoder), "--epochs", "2", "--batch-size", "4",
                     "--gradient-accumulation", "3", "--validation-share", "0.2", "--learning-rate", "1e-3")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["train_examples"] + summary["validation_examples"] == 40
    assert [round(h["epoch"]) for h in summary["validation"]] == [1, 2]
    # 3 batches of 4 make one optimizer step (the last, short group counts as one too).
    steps_per_epoch = -(-(-(-summary["train_examples"] // 4)) // 3)
    assert last_trainer_state(output)["global_step"] == 2 * steps_per_epoch

    model = VisionEncoderDecoderModel.from_pretrained(output)
    assert model.config.encoder.model_type == "vit" and model.config.decoder.model_type == "gpt2"
    assert model.config.decoder.add_cross_attention and model.config.decoder.is_decoder
    assert model.generation_config.decoder_start_token_id == model.generation_config.eos_token_id

    table = tmp_path / "evaluation.csv"
    result = run_cli("evaluate", "--data", str(small_shapes / "test"), "--model", str(output),
                     "--output", str(table), "--strategy", "greedy", "--max-length", "12")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["images"] == 6 and set(report["metrics"]) >= {"BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr"}
    assert any(line.startswith("CIDEr") for line in lines[:-1])  # the table
    rows = list(csv.DictReader(table.open()))
    captioner = Captioner.from_pretrained(output)
    same = captioner.caption([rows[0]["image"]], CaptionSettings(strategy="greedy", max_length=12))[0][0].text
    assert len(rows) == 6 and rows[0]["caption"] == same  # the CSV holds the app's own captions


def test_resume_goes_on_from_the_last_checkpoint_as_if_never_stopped(shapes_base, small_shapes, tmp_path,
                                                                     monkeypatch, caplog):
    import shutil

    import torch
    from safetensors.torch import load_file

    from captioner.engine import transformers_changes

    dataset = load_dataset(small_shapes / "train")

    def run(output, epochs, resume=False):
        # A constant rate, so stopping after epoch 1 does not change the schedule of epoch 1.
        config = TrainConfig(output=str(output), model=str(shapes_base), epochs=epochs, batch_size=8,
                             learning_rate=1e-3, warmup_ratio=0, scheduler="constant", seed=0,
                             progress=False, resume=resume)
        return train(config, dataset)

    straight = run(tmp_path / "straight", 2)
    run(tmp_path / "stopped", 1)
    shutil.copytree(tmp_path / "stopped", tmp_path / "stopped-fallback")
    caplog.set_level("INFO", logger="captioner.engine")
    resumed = {"stopped": run(tmp_path / "stopped", 2, resume=True)}
    # The same, on a transformers whose private loader is unchecked: the weights are preloaded instead.
    monkeypatch.setattr(transformers_changes, "CHECKED_TRANSFORMERS", ("0.0.",))
    resumed["stopped-fallback"] = run(tmp_path / "stopped-fallback", 2, resume=True)
    paths = [r.getMessage() for r in caplog.records if "resuming:" in r.getMessage()]
    assert "by name" in paths[-2] and "preloaded" in paths[-1], paths
    for name, summary in resumed.items():
        assert [round(h["epoch"]) for h in summary["validation"]] == [2]  # epoch 1 was not trained again
        assert last_trainer_state(tmp_path / name)["global_step"] == last_trainer_state(tmp_path / "straight")["global_step"]
        assert summary["validation"][-1]["loss"] == pytest.approx(straight["validation"][-1]["loss"], rel=1e-4)
        ours, theirs = (load_file(tmp_path / folder / "model.safetensors") for folder in (name, "straight"))
        assert ours.keys() == theirs.keys()
        assert all(torch.allclose(ours[k], theirs[k], atol=1e-5) for k in ours), name


def test_resume_without_a_checkpoint_starts_from_the_beginning(shapes_base, small_shapes, tmp_path, capsys):
    config = TrainConfig(output=str(tmp_path / "fresh"), model=str(shapes_base), epochs=1, batch_size=8,
                         seed=0, progress=False, resume=True)
    summary = train(config, load_dataset(small_shapes / "train"))
    assert "no checkpoint" in capsys.readouterr().out
    assert (tmp_path / "fresh" / "model.safetensors").exists() and summary["validation"]
