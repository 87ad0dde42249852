"""Deterministic generated stand-ins for every dataset kind, written in the real on-disk formats.

One module per kind (``imagenet``, ``voc``, ``coco``, ``cityscapes``, ``celeba``, ``miniimagenet``); the
readers, checks and format constants stay in ``goodtransfer.data.<kind>``. The image-like kinds draw from one
shared catalogue of object *kinds* (``kinds``: a shape filled with a kind-specific pattern) and render
scenes with ``common``: ImageNet-style class ``i`` and the ``i``-th configured VOC class are both drawn as
kind ``i``, so the datasets share visual concepts and transfer from one to the other is measurable. Colour,
size, position, rotation and aspect are randomised per instance so that colour alone never gives the class
away.

Every file is a pure function of the seed (one independent random stream per image), so the same seed
gives byte-identical trees. Each tree is built in a hidden sibling directory and renamed onto ``root``
only when complete (``goodtransfer.io.building_directory``), so an interrupted run never leaves a folder
that looks finished. ``goodtransfer.data.registry.generate`` dispatches to these modules by kind.
"""
