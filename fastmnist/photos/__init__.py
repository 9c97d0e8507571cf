"""Reading your own handwriting: photos of digits and numbers, prepared the way MNIST was made.

- :mod:`.images` — any picture (path, Pillow image, array) to the 28x28 input the network expects
  (``prepare`` keeps every stage on the way), and the readings of one digit (``predict_images``)
  or a whole number (``read_numbers``);
- :mod:`.inkmask` — ink separated from paper and light: the pieces of writing in a photo;
- :mod:`.photosynth` — phone-photo-like pictures of MNIST digits to measure all of it against.
"""
from .images import ImageError, Preparation, as_grey, mnistify, predict_images, prepare, read_numbers
from .inkmask import NoInk, ink_map
from .photosynth import blank_photo, digit_photos, number_photos, render

__all__ = ["ImageError", "NoInk", "Preparation", "as_grey", "blank_photo", "digit_photos", "ink_map", "mnistify",
           "number_photos", "predict_images", "prepare", "read_numbers", "render"]
