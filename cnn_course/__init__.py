"""cnn-course: CNN interview questions answered with tested NumPy/CuPy code.

Modules, in curriculum order: ``backend`` (the NumPy/CuPy switch), ``functional`` (every
operation and its backward, NCHW, PyTorch names), ``nn`` and ``init`` (layers with explicit
backward), ``optim``, ``data``, ``analysis`` (output sizes, parameters, MACs, receptive
fields), ``zoo`` (classic architectures), ``detection``, ``classic`` (k-means, kNN),
``gradcheck``, ``animate`` (animations of convolution arithmetic, recorded from the operations).
"""

__version__ = "0.1.0"
