"""The model: the Captioner (loaded once, the only `generate` call), the thread it runs on, dynamic
batching, memory handed back to the OS, and the exact CPU speed-ups with their native kernel.
Needs torch and transformers; nothing from the app, bulk or training layers."""
