"""The Space: the page (`build_demo`), its handlers, the API and MCP tools, the components that let
our own checks speak, accessibility, and every change made to gradio's private parts (in
gradio_changes.py). Needs gradio (requirements.txt)."""
