"""Every operation of the course and its backward, in one namespace (like torch.nn.functional).

Conventions (DESIGN section 3): NCHW layout, PyTorch argument names and semantics, and
``op_backward(grad_out, <the forward's arguments>)`` returning the gradients of the
differentiable array inputs in the forward's order.
"""

from cnn_course.ops.activations import *  # noqa: F403
from cnn_course.ops.attention import *  # noqa: F403
from cnn_course.ops.conv import *  # noqa: F403
from cnn_course.ops.linear import *  # noqa: F403
from cnn_course.ops.losses import *  # noqa: F403
from cnn_course.ops.normalization import *  # noqa: F403
from cnn_course.ops.pooling import *  # noqa: F403
from cnn_course.ops.regularization import *  # noqa: F403
from cnn_course.ops.sampling import *  # noqa: F403
