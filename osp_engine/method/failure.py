"""One line for an error raised inside a model's forward: which layer, which line of its code, what failed.

Preparing a network runs the model many times (traced, probed with a unit removed, pruned copies);
whatever breaks there must reach the user as a sentence, never as a traceback.
"""
from __future__ import annotations

import os
import traceback

from torch import nn


def first_line(e: BaseException) -> str:
    """'TypeName: first line of the message'."""
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}".rstrip(": ")


def describe(e: BaseException, model: nn.Module | None = None) -> str:
    """'<layer> (<Type>): `<source line>` fails [in <inner layer> (<Type>)] with <Error>: <message>'.

    <layer> is the innermost of `model`'s modules whose own code (not PyTorch's) raised, the line is
    that code's; the inner layer, where there is one, is the built-in layer it called that raised.
    Just the error where no frame belongs to the model (a failure outside it)."""
    names = {id(m): n for n, m in model.named_modules()} if model is not None else {}
    own, inner = None, None
    for frame, _ in traceback.walk_tb(e.__traceback__):
        layer = frame.f_locals.get("self")
        if not isinstance(layer, nn.Module) or id(layer) not in names:
            continue
        where = f"{names[id(layer)] or 'the model'} ({type(layer).__name__})"
        if _is_torch(frame.f_code.co_filename):
            inner = where
        else:
            own, inner = (where, traceback.extract_stack(frame, limit=1)[-1].line), None
    if own is None and inner is None:
        return first_line(e)
    if own is None:
        return f"{inner} fails with {first_line(e)}"
    head = f"{own[0]}: `{own[1]}` fails" if own[1] else f"{own[0]} fails"
    return f"{head} in {inner} with {first_line(e)}" if inner else f"{head} with {first_line(e)}"


def _is_torch(filename: str) -> bool:
    """True for PyTorch's own source files (torch/nn/modules/conv.py, ...)."""
    return f"{os.sep}torch{os.sep}" in filename
