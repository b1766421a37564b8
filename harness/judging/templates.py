"""Judge prompt templates. Every stored score names its template by `version` (name@hash of the
text), so changing a word of a prompt can never mix old and new scores in one number."""
from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BenchError
from harness.judging.backend import AnswerFormat

SINGLE_FIELDS = ("prompt", "reference", "response")


@dataclass(frozen=True)
class Template:
    name: str
    text: str
    kind: str  # "single" (0-100 against the reference) or "pairwise" (A, B or tie)

    @property
    def version(self) -> str:
        return f"{self.name}@{hashlib.sha256(self.text.encode()).hexdigest()[:8]}"

    def render(self, **fields: str) -> str:
        return self.text.format(**fields)


# The seeds' single-answer grading (a 0-100 score against the reference), with a JSON answer so
# structured output and the strict parser agree on one shape.
SINGLE = Template("reference-0-100", """You are an impartial judge. Rate how well the response carries out the \
task below, using the reference answer as a guide to a good answer: correctness, relevance, helpfulness and \
completeness. 0 means useless or wrong, 100 means as good as the reference or better. Judge the content, \
not the length.

### Task
{prompt}

### Reference answer
{reference}

### Response to rate
{response}

Reply with JSON only, in the form {{"score": N}} where N is an integer from 0 to 100.""", "single")

PAIRWISE = Template("pairwise-ab-tie", """You are an impartial judge. Two responses to the task below follow. \
Decide which one carries out the task better (correct, relevant, helpful, complete), using the reference answer \
as a guide. The order of the responses says nothing about their quality, and neither does their length.

### Task
{prompt}

### Reference answer
{reference}

### Response A
{response_a}

### Response B
{response_b}

Reply with JSON only: {{"winner": "A"}}, {{"winner": "B"}} or {{"winner": "tie"}}.""", "pairwise")

SCORE_FORMAT = AnswerFormat(
    schema={"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100}},
            "required": ["score"], "additionalProperties": False},
    prefill='{"score": ', max_tokens=256)
VERDICT_FORMAT = AnswerFormat(
    schema={"type": "object", "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
            "required": ["winner"], "additionalProperties": False},
    prefill='{"winner": "', max_tokens=256)


def single_template(task_template: str | None = None, path: str | None = None) -> Template:
    """The single-answer template: a file given on the command line, else the task's own, else SINGLE."""
    if path:
        file = Path(path)
        if not file.is_file():
            raise BenchError(f"--judge-template {path}: no such file")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise BenchError(f"--judge-template {path}: not UTF-8 text") from None
        return checked(Template(file.stem, text, "single"), SINGLE_FIELDS)
    if task_template:
        return checked(Template("task", task_template, "single"), SINGLE_FIELDS)
    return SINGLE


def checked(template: Template, allowed: tuple[str, ...]) -> Template:
    """A template may use only the known fields, must show the response, and must parse."""
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template.text) if name is not None}
    except ValueError as exc:
        raise BenchError(f"judge template {template.name}: {exc} (write literal braces as {{{{ and }}}})") from None
    unknown = sorted(used - set(allowed))
    if unknown:
        raise BenchError(f"judge template {template.name}: unknown field(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join('{' + f + '}' for f in allowed)}")
    if "response" not in used:
        raise BenchError(f"judge template {template.name}: it never shows the response; add {{response}}")
    try:  # a trial render catches what the field scan cannot see, e.g. a field inside a format spec
        template.text.format(**{name: "text" for name in allowed})
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise BenchError(f"judge template {template.name}: cannot be filled in ({type(exc).__name__}: {exc}); use "
                         f"plain fields such as {{response}} and write literal braces as {{{{ and }}}}") from None
    return template
