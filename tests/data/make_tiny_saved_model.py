"""How tests/data/tiny_saved_model was made (TensorFlow is no dependency of this project, so the folder is kept):

    python3 -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu
    /tmp/tf/bin/python tests/data/make_tiny_saved_model.py tests/data/tiny_saved_model

A TensorFlow SavedModel image classifier with a known answer: the picture's mean colour through a fixed 3x4
matrix, softmaxed, so a red picture is class 0, a green one class 1, a blue one class 2.
"""

import sys

import numpy as np
import tensorflow as tf


class Classifier(tf.Module):
    """A tiny image classifier: mean colour of the picture through a fixed 3x4 matrix, softmaxed."""

    def __init__(self):
        super().__init__()
        self.weights = tf.Variable(np.array([[4, 0, 0, 1], [0, 4, 0, 1], [0, 0, 4, 1]], np.float32) / 255.0)

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="images")])
    def __call__(self, images):
        means = tf.reduce_mean(images, axis=[1, 2])
        return {"probabilities": tf.nn.softmax(tf.matmul(means, self.weights))}


model = Classifier()
tf.saved_model.save(model, sys.argv[1], signatures={"serving_default": model.__call__})
