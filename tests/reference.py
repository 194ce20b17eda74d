"""The model card's example code, verbatim in substance: the reference our captions must equal."""

import torch
from transformers import AutoTokenizer, ViTImageProcessor, VisionEncoderDecoderModel


class ModelCardReference:
    def __init__(self, checkpoint):
        self.model = VisionEncoderDecoderModel.from_pretrained(checkpoint).eval()
        self.feature_extractor = ViTImageProcessor.from_pretrained(checkpoint)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)

    def predict(self, images, seed=None, **gen_kwargs):
        gen_kwargs = gen_kwargs or {"max_length": 16, "num_beams": 4}
        pixel_values = self.feature_extractor(images=images, return_tensors="pt").pixel_values
        if seed is not None:
            torch.manual_seed(seed)
        with torch.no_grad():
            output_ids = self.model.generate(pixel_values, **gen_kwargs)
        return [p.strip() for p in self.tokenizer.batch_decode(output_ids, skip_special_tokens=True)]
