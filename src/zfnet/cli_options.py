"""The option helpers' old place, still imported by ``zfnet/viz/command.py`` and
``zfnet/viz/analysis_command.py``; they live in :mod:`zfnet.cli.options`. This module goes when
those two commands move into ``zfnet/cli/`` (the visualisation toolkit's issue, 15)."""

from zfnet.cli.options import (  # noqa: F401
    checkpoint_file,
    checkpoint_problem,
    device,
    max_pixels_option,
    mirror,
    model_note,
    number,
    output_dir,
)
