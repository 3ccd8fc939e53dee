"""The private engine behind convolution and pooling (not part of the public API).

- :mod:`.plan`: :func:`~.plan.plan` returns the :class:`~.plan.Plan` of a call (backend,
  algorithm, layout, chunking, threads); it alone decides the path.
- :mod:`.windows`: the one window geometry (:class:`~.windows.Window`) of convolution and
  pooling; padding, window views, their adjoint, and copies on every core.
- :mod:`.threads`: the small thread pool that runs NumPy's copies and elementwise passes on
  every core (NumPy releases the GIL inside them).
- :mod:`.conv`: im2col + GEMM in chunks and tiles, depthwise taps.
- :mod:`.pool`: window reductions, arg-max positions and their scatter.
- :mod:`.gpu`: the CUDA elementwise kernels of both (CuPy).
- :mod:`.compiled`: the optional numba kernels of depthwise layers (imported lazily; the
  plan chooses them, ``"direct-numba"``, where numba is installed), and the register-blocked
  forward of dense layers (``"blocked-numba"``; its kernels are generated into
  :mod:`._numba_blocked` by ``tools/gen_blocked_kernels.py``).

The public modules (:mod:`cnn_course.ops.conv`, :mod:`cnn_course.ops.pooling`) validate the
arguments, build the window and the plan, and call in here; nothing here imports them.
"""
