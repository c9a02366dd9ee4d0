"""Package definition for the EfficientNetV2 TF2/Keras 3 port.

TensorFlow comes through an extra, because its CPU and GPU wheels are
different packages that must not be installed together:
  pip install -e '.[cpu]'   # tensorflow-cpu, for machines without a GPU
  pip install -e '.[gpu]'   # tensorflow[and-cuda], for NVIDIA GPUs
  pip install -e '.[tf]'    # plain tensorflow (TPU VMs bring their own)
tensorflow-addons is deliberately absent: 0.23.0 fails to import on TF 2.21.
"""
import setuptools

TF_MIN = '2.16'

setuptools.setup(
    name='automl_effnetv2',
    version='0.1.0',
    description=('EfficientNetV2 training code (google/automl efficientnetv2) '
                 'ported to TensorFlow 2 / Keras 3, with Fashion-MNIST and '
                 'progressive-learning ablations'),
    packages=setuptools.find_packages(include=['automl_effnetv2',
                                               'automl_effnetv2.*']),
    # The training recipes are data files that the package reads at import.
    package_data={'automl_effnetv2.recipes': ['*.yaml']},
    python_requires='>=3.10',
    install_requires=[
        'absl-py>=1.0',
        'numpy>=1.23',
        'pyyaml>=6.0',
        'tensorflow-datasets>=4.9',
        # tfds imports etils.epath, which on Python < 3.12 with etils 1.15
        # needs importlib_resources without declaring it.
        'importlib_resources>=5.0',
        'matplotlib>=3.7',
        # tensorflow-cpu 2.21 no longer pulls TensorBoard, which tf.summary
        # needs.
        'tensorboard>=2.16',
    ],
    extras_require={
        'cpu': [f'tensorflow-cpu>={TF_MIN}'],
        'gpu': [f'tensorflow[and-cuda]>={TF_MIN}'],
        'tf': [f'tensorflow>={TF_MIN}'],
        # pytest-xdist runs the suite on every core (--dist worksteal: 3.2+).
        'test': ['pytest>=7', 'pytest-xdist>=3.2', 'pillow>=9',
                 'portpicker>=1.5'],
    },
)
