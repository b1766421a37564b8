"""Judge backends, one module each, registered with `@judge(scheme)`: gemini (Google's SDK),
openai (any OpenAI-compatible chat-completions server), hf (a local Hugging Face model). The
engine that caches, retries, parses and swaps positions is harness/judging/."""
