"""EfficientNetV2 training code ported to TensorFlow 2 / Keras 3.

Module names follow upstream google/automl `efficientnetv2/`.
"""
