"""artlens — recognise artworks in visitors' photos.

Stage packages (top-level folders of the repository, installed as ``artlens.<stage>``):
``export`` → ``indexing`` → ``recognition`` → ``server`` → ``eval``; ``verification`` holds pure array
functions every stage may use; this package holds what both the offline and the online path share
(errors, image decoding, the ONNX embedder) and the CLI that ties the stages together.
"""

__version__ = "0.1.0"
