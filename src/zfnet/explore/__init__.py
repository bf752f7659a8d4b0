"""``zfnet explore``: browse every feature map of a run or of any model, on this machine.

- :mod:`zfnet.explore.source`: what is shown (a pipeline run's top-9 index, or one computed and
  cached for any checkpoint or ``--model`` on a folder of images);
- :mod:`zfnet.explore.pages`: the pages (Jinja2 templates, plain HTML and CSS, a little JavaScript,
  nothing fetched from elsewhere) and their pictures;
- :mod:`zfnet.explore.analyze`: an uploaded image analysed live (predictions, occlusion, projection);
- :mod:`zfnet.explore.app`: the FastAPI app and its limits; :mod:`zfnet.explore.export`: the same
  pages as static files.

The command is :mod:`zfnet.cli.explore`.
"""
