"""LLM judging of stored generations: the machinery shared by every judge backend.

    outputs in the store --grading--> Query (rendered template, sample index)
        --engine (cache, retries, parse)--> backend.complete --> Reply --parse--> score / verdict
        --grading--> per-run summary (mean with CI, spread, win rate, flip rate) --command--> store + table

Backends (Gemini, OpenAI-compatible HTTP, local Hugging Face) are plugins in `judges/`, found
through the registry by the scheme of a judge spec (`gemini:MODEL`, `openai:URL#MODEL`, `hf:MODEL`).
"""
