"""One check for text from outside (a JSON body, the command line): it must encode as UTF-8, or no tokenizer takes it.

JSON can carry a lone UTF-16 surrogate ("\\ud800") and Python turns command-line bytes that are not UTF-8 into
surrogate escapes ("caf\\udce9"); either way the result is a Python str that the tokenizer refuses with a TypeError
deep inside it. Checked here first, it is the caller's error with a message naming the field instead: a 422 from the
prompt server (`softprompt.serving.app`) and the model endpoint (`softprompt.remote.server`), exit 2 from the CLI.
No imports, so every layer (and both servers, which install FastAPI only as an extra) can use it.
"""

from __future__ import annotations


def check_utf8(text: str, what: str, hint: str = "") -> None:
    """Raise ValueError naming `what` ("text 0") if `text` cannot be encoded as UTF-8; `hint` ends the message."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{what} is not valid Unicode: {err.reason} at position {err.start}{hint}") from None
