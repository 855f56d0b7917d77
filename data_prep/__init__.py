"""Dataset-building scripts (``python -m data_prep.<name> --help``): ``ffhq``, ``lsdir``,
``celeba_test``; the machinery they share is in ``common``. See ``data_prep/README.md``."""
