"""Collections: `python -m captioner caption`. Sources (files, folders, lists, links, Parquet) run
through the Captioner or Ray Data into writers (JSON lines, CSV, Parquet, imagefolder metadata,
caption files) that resume where a run stopped. Parquet needs pyarrow; Ray needs
requirements-ray.txt."""
