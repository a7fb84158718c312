"""rbqe_tf: resource-efficient blind quality enhancement of compressed images."""
from setuptools import find_packages, setup

setup(
    name="rbqe_tf",
    version="0.1.0",
    description="RBQE (ECCV 2020) in TensorFlow/Keras: multi-exit blind enhancement "
    "of JPEG/HEVC-compressed images with early exit and TFLite export.",
    python_requires=">=3.10",
    # Not datasets/ or export/ (repository commands, like benchmarks/ and tools/): those
    # top-level names belong to Hugging Face's datasets and PyPI's export, whose files an
    # installed one would replace (tests/test_setup.py). Their engines are in rbqe_tf
    # (build_pairs; conversion, litert, harness).
    packages=find_packages(include=["rbqe_tf*"]),
    package_data={"rbqe_tf": ["weights/*", "samples/*"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.12,<4",
        "tf-keras>=2.21,<2.22",
        "tensorflow-model-optimization>=0.8.1",
        "ai-edge-litert>=2.3",
        "numpy>=1.26",
        "opencv-python-headless>=5.0",  # image metadata (ICC, EXIF, XMP) read and written
        "pillow>=10",  # image headers: the pixel budget is checked before decoding
        "pillow-heif>=0.18",  # HEIC/HEIF photos (libde265 decoder, x265 encoder)
        "h5py>=3.10",  # rbqe_tf.model_file sizes the weights before Keras reads them
        "absl-py>=1.2",
        "tqdm>=4.66",
        "flatbuffers>=23.5",  # rbqe_tf.litert.flatbuffer reads .tflite files directly
        "av>=14",  # PyAV (bundles FFmpeg): rbqe_tf.video reads and writes video
    ],
    extras_require={
        # Everything the test suite imports, directly or through the code it tests
        # (tests/test_setup.py checks this list against the imports).
        "test": ["pytest>=8", "hypothesis>=6.100", "matplotlib>=3.8", "import-linter>=2.12"],
        "plots": ["matplotlib>=3.8"],
        # python -m rbqe_tf.pipeline (resolves beside tensorflow 2.21 with protobuf 6 and
        # Pillow 12: Beam 2.77 caps both below the versions tensorflow alone would pick).
        "pipeline": ["apache-beam>=2.60"],
    },
)
