"""Fine-tuning and evaluation: `python -m captioner train|evaluate`. Caption datasets in five
layouts, the Trainer run, its curves, and the COCO metrics. Needs requirements-train.txt
(datasets, matplotlib) and pycocoevalcap."""
