"""API keys from the environment: checked before any use, and masked out of every text bench
prints, logs or stores.

A key travels in an HTTP header. A character a header cannot hold (a newline from a key file, a
typographic quote pasted along with the key) makes the HTTP library fail with the header, key and
all, in its message; so a key is checked where it is read, and the error names the variable and
what is wrong with it, never the value. Texts that may quote a key (a server's error body, an
exception from a transport library) are masked in every form they may quote it in.
"""
from __future__ import annotations

import json
import os
import re
from urllib.parse import quote

from harness.errors import BenchError

# Hosted keys are 40-200 characters and JWT bearer tokens a few hundred to ~2,000; far more is a
# whole file read into the variable (and most servers refuse a header over 8 KiB anyway).
MAX_KEY_LENGTH = 4096
TYPOGRAPHIC_QUOTES = frozenset("\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u00ab\u00bb\u2039\u203a")
# A fragment of a key this long is masked too: a service that echoes a key shortened
# ("sk-proj-ab12****wxyz") still gives away its first characters.
FRAGMENT = 8
# Variables that hold credentials whatever reads them (a judge, a logger, the Hugging Face hub):
# the CLI's last line of defence masks their values out of any error it prints.
# (Not *_CREDENTIALS: that is a path, like GOOGLE_APPLICATION_CREDENTIALS, and would mask paths.)
CREDENTIAL_NAME = re.compile(r"(API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD)$", re.IGNORECASE)


def key_problem(value: str) -> str | None:
    """What makes `value` unusable as an API key, said without quoting any of it; None when fine."""
    if not value:
        return "is empty"
    if len(value) > MAX_KEY_LENGTH:
        return (f"is {len(value)} characters long, more than any API key ({MAX_KEY_LENGTH} at most; "
                "was a whole file read into it?)")
    if "\n" in value or "\r" in value:
        return "contains a newline (was a file of several lines read into it?)"
    if any(char in TYPOGRAPHIC_QUOTES for char in value):
        return "contains a non-ASCII character (typographic quotes? pasted from a document or a chat app)"
    if not value.isascii():
        return "contains a non-ASCII character (pasted along with the key: a non-breaking space, a typographic dash?)"
    if "\t" in value:
        return "contains a tab"
    if " " in value:
        return "contains a space"
    if not value.isprintable():
        return "contains a control character"
    if any(char in "\"'`" for char in value):
        return "contains a quote character (quotes inside the quotes of the export?)"
    if "\\" in value:
        return "contains a backslash"
    return None


def check_key(name: str, value: str) -> str:
    """`value` of variable `name` if it can be an API key; else a BenchError naming the variable
    and the problem. The value is never part of the message: it is the secret, and a malformed
    one is often a real key with a stray character."""
    problem = key_problem(value)
    if problem is not None:
        raise BenchError(f"{name} {problem}; an API key is one line of printable ASCII without spaces or "
                         f"quotes: set {name} to the key alone")
    return value


def secret_from_env(*names: str) -> tuple[str, str] | None:
    """(variable name, checked key) of the first of `names` set and non-empty in the environment.
    A malformed key is an error, not skipped for the next variable: the user meant that one."""
    for name in names:
        # Surrounding whitespace is stripped, never part of a key: `export KEY=$(cat key.txt)` and
        # `read KEY` bring a trailing newline, a copied key a trailing space. Whitespace inside the
        # key is an error (check_key).
        value = os.environ.get(name, "").strip()
        if value:
            return name, check_key(name, value)
    return None


def environment_secrets() -> tuple[str, ...]:
    """Values of the environment's credential variables (by name: *_API_KEY, *_TOKEN, ...), for
    masking. Left out: values shorter than FRAGMENT ("1", "true"), no secret and they would mask
    words, and paths or URLs (a token *file*), which would mask the paths in error messages."""
    values = (value.strip() for name, value in os.environ.items() if CREDENTIAL_NAME.search(name))
    return tuple(value for value in values
                 if len(value) >= FRAGMENT and not value.startswith(("/", "~", ".")) and "://" not in value)


def quoted_forms(secret: str) -> set[str]:
    """`secret` as a text may quote it: as is, escaped by repr() of the text or of its bytes (an
    invalid-header error), escaped in JSON (a server echoing the request), URL-encoded."""
    forms = {secret, repr(secret)[1:-1], repr(secret.encode("utf-8", "backslashreplace"))[2:-1],
             json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1], quote(secret, safe="")}
    return {form for form in forms if form}


def mask(text: str, *secrets: str) -> str:
    """`text` with every secret, in each of its quoted forms, and every run of FRAGMENT or more
    characters of one, replaced by `***`."""
    forms = sorted({form for secret in secrets if secret for form in quoted_forms(secret)}, key=len, reverse=True)
    for form in forms:
        text = text.replace(form, "***")
    fragments = {form[i:i + FRAGMENT] for form in forms for i in range(len(form) - FRAGMENT + 1)}
    if not fragments or len(text) < FRAGMENT:
        return text
    hidden = [False] * len(text)
    for i in range(len(text) - FRAGMENT + 1):
        if text[i:i + FRAGMENT] in fragments:
            hidden[i:i + FRAGMENT] = [True] * FRAGMENT
    out: list[str] = []
    for i, char in enumerate(text):
        if not hidden[i]:
            out.append(char)
        elif i == 0 or not hidden[i - 1]:
            out.append("***")
    return "".join(out)


def redact(text: str, *secrets: str) -> str:
    """`text` with every secret masked, and anything shaped like a bearer token or key= query
    masked too: error bodies may echo a request back, and those end up in logs and the store."""
    return re.sub(r"(?i)(bearer\s+|key=|api[_-]?key\"?\s*[:=]\s*\"?)[A-Za-z0-9._\-]{6,}", r"\1***",
                  mask(text, *secrets))
