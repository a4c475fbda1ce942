"""``fmmodel export``: a thin click wrapper over :func:`fmmodel.model.export.export_model`."""
from __future__ import annotations

import json
import os

import click

from fmmodel.model.checkpoint import CHECKPOINT_FORMATS
from fmmodel.model.export import EXPORT_FORMATS, SUFFIXES, export_model

from .errors import user_errors
from .model_options import FORMAT_HELP, checkpoint_option, trusted_option, variant_option
from .options import json_option, overwrite_option


def default_out(checkpoint: str, fmt: str) -> str:
    """The export's path when --out is not given: beside the checkpoint, its suffix the format's
    (an AOTInductor package ``NAME-aoti.pt2``, apart from the plain torch.export ``NAME.pt2``)."""
    stem = os.path.splitext(checkpoint)[0]
    return f"{stem}-aoti{SUFFIXES[fmt]}" if fmt == "aoti" else stem + SUFFIXES[fmt]


@click.command("export")
@checkpoint_option
@click.option("--format", "format", type=click.Choice(EXPORT_FORMATS), required=True,
              help="torchscript (torch.jit), onnx (onnxruntime, CPU), pt2 (torch.export) or aoti (torch.export "
                   "compiled by AOTInductor for this CPU: a shared library, loaded only when named with --model).")
@click.option("--out", type=click.Path(), default=None,
              help="The exported file (default: beside the checkpoint, NAME.ts, NAME.onnx, NAME.pt2, NAME-aoti.pt2).")
@click.option("--checkpoint-format", "fmt", type=click.Choice(CHECKPOINT_FORMATS), default="auto", show_default=True,
              help=FORMAT_HELP)
@variant_option
@trusted_option
@overwrite_option
@json_option
@user_errors
def export_cmd(checkpoint: str, format: str, out: str | None, fmt: str, variant: str | None,
               trusted: tuple[str, ...], overwrite: bool, as_json: bool) -> None:
    """Export CHECKPOINT's model as a self-contained program for its windows' shapes (any batch),
    with the checkpoint's record inside (windows, orientation, preprocessing): fmmodel predict,
    evaluate and watch take it as --checkpoint. It is loaded back and checked against the
    checkpoint's model before it is put in place."""
    report = export_model(checkpoint, out or default_out(checkpoint, format), format=format, fmt=fmt,
                          variant=variant, trusted=trusted, overwrite=overwrite)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
