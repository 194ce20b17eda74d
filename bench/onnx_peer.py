"""bench/peers.py's ONNX Runtime peer: the checkpoint exported with optimum-onnx and run with
ONNX Runtime's CPU provider. optimum-onnx requires transformers 4.x, so this runs under the Python
of a venv made with bench/requirements-peers.txt. Same protocol as bench/model_card.py: one line of
tab-separated image paths in, one JSON line out.

    python bench/onnx_peer.py CHECKPOINT EXPORT_DIR MAX_LENGTH
"""

import json
import sys

from optimum.onnxruntime import ORTModelForVision2Seq
from PIL import Image
from transformers import AutoTokenizer, ViTImageProcessor


def main() -> None:
    checkpoint, export_dir, max_length = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = ORTModelForVision2Seq.from_pretrained(checkpoint, export=True)
    model.save_pretrained(export_dir)
    processor = ViTImageProcessor.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    print("ready", flush=True)
    for line in sys.stdin:
        images = [Image.open(path).convert("RGB") for path in line.rstrip("\n").split("\t")]
        pixel_values = processor(images=images, return_tensors="pt").pixel_values
        output_ids = model.generate(pixel_values, max_length=max_length, num_beams=4)
        captions = [text.strip() for text in tokenizer.batch_decode(output_ids, skip_special_tokens=True)]
        print(json.dumps({"caption": captions[0], "captions": captions, "new_tokens": output_ids.shape[1] - 1}),
              flush=True)


if __name__ == "__main__":
    main()
