"""The model card's code, in a process of its own that does nothing else: bench/speed.py's baseline.

This is how a user who does not use this project captions photos: the example from
nlpconnect/vit-gpt2-image-captioning's model card, run with stock transformers in a fresh Python
process (its own threads, its own allocator; nothing else loaded). bench/speed.py starts two of
these, sends one image path a line on stdin and reads one JSON line a caption, and pauses them
(SIGSTOP) between their turns. bench/peers.py sends several paths a line (tab-separated): the
model card's `predict_step` takes a list, so that is stock transformers' batched generate.

    python bench/model_card.py CHECKPOINT DEVICE MAX_LENGTH
"""

import json
import sys

import torch
from PIL import Image
from transformers import AutoTokenizer, ViTImageProcessor, VisionEncoderDecoderModel


def main() -> None:
    checkpoint, device, max_length = sys.argv[1], torch.device(sys.argv[2]), int(sys.argv[3])
    # The model card's code, line for line, from here (its gen_kwargs: max_length, num_beams=4).
    model = VisionEncoderDecoderModel.from_pretrained(checkpoint)
    feature_extractor = ViTImageProcessor.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model.to(device)
    gen_kwargs = {"max_length": max_length, "num_beams": 4}

    def predict_step(image_paths):
        images = []
        for image_path in image_paths:
            i_image = Image.open(image_path)
            if i_image.mode != "RGB":
                i_image = i_image.convert(mode="RGB")
            images.append(i_image)
        pixel_values = feature_extractor(images=images, return_tensors="pt").pixel_values
        pixel_values = pixel_values.to(device)
        output_ids = model.generate(pixel_values, **gen_kwargs)
        preds = tokenizer.batch_decode(output_ids, skip_special_tokens=True)
        return [pred.strip() for pred in preds], output_ids.shape[1] - 1

    print("ready", flush=True)
    for line in sys.stdin:
        captions, new_tokens = predict_step(line.rstrip("\n").split("\t"))
        print(json.dumps({"caption": captions[0], "captions": captions, "new_tokens": new_tokens}), flush=True)


if __name__ == "__main__":
    main()
