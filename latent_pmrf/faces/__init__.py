"""Faces in whole photos (``restore --faces detect``): ``detection`` (the detector table and
interface; ``mtcnn``, ``retinaface``), ``alignment`` (5 landmarks -> the FFHQ 512² template) and
``paste`` (restored crops back into the photo). Importing the package imports no torch."""
