"""The Gradio demo (installed as ``fastvision.demo``); the app itself is tracked in issue 6."""
